"""Secret config keys several products share: the rule for a service's ``secret_env`` keys,
monitoring's SMTP password, and the optional Docker registry login (``<product>_registry_auth``)."""

from __future__ import annotations

import re
from typing import Any, Iterator, Sequence

import pulumi

from components import dockerhost, monitoring
from stacks.definition import SecretKey
from validation.rules import Finding, Skip, each


SECRET_KEY_PATTERN = r"^[a-z][a-z0-9_]{2,62}$"

SSH_CA_SECRET = "ssh_ca_private_key"
"""The stack's SSH certificate authority (an unencrypted OpenSSH private key, one per stack):
every host's sshd trusts its public half, and ``scripts/ssh_cert.py`` signs engineers' keys
with it."""


def ssh_ca_secret() -> SecretKey:
    return SecretKey(key=SSH_CA_SECRET, format="ssh_ca_private_key",
                     description="private key of the stack's SSH certificate authority "
                     "(`ssh-keygen -t ed25519 -N '' -f ca`; scripts/ssh_cert.py signs with it)")


NEVER_IN_A_CONTAINER = re.compile(r"^(?:[a-z0-9_]*_ssh_private_key|ssh_ca_private_key|[a-z0-9_]*_registry_auth)$")
"""Secret keys no service's environment may carry: the deploy SSH keys (``<product>_ssh_private_key``)
and the stack's SSH CA give root on every host; the registry login (``<product>_registry_auth``)
pushes images (``doctl registry docker-config`` is read-write unless told otherwise). A container
that is compromised must not hold them (least privilege, CIS Docker 5 / OWASP ASVS V14.1)."""


def secret_key_findings(product: str, field: str, services: Sequence[Any]) -> Iterator[Finding]:
    """Secret keys a product's services name: lower_snake_case, prefixed with the product, and
    none of the keys that must never reach a container (``NEVER_IN_A_CONTAINER``). A value that
    is not a valid key name is never quoted back: it may be a password pasted in by mistake."""
    for index, spec in each(services):
        try:
            secret_env = spec.secret_env
        except Skip:
            continue
        for env_name, key in secret_env.items():
            where = (field, index, "secret_env", env_name)
            if not re.match(SECRET_KEY_PATTERN, key):
                yield Finding(where, f"the value is not a secret key name ({len(key)} characters, not shown: "
                              f"it may be a secret itself); name a key that is lower_snake_case "
                              f"(3-63 characters) and starts with {product}_, and set the secret with "
                              f"`pulumi config set --secret platform:<key>`")
            elif NEVER_IN_A_CONTAINER.match(key):
                yield Finding(where, f"secret key {key!r} is a deploy SSH key, the SSH CA or a registry "
                              "login, which must never reach a container; give the service its own "
                              f"{product}_<name> secret")
            elif not key.startswith(f"{product}_"):
                yield Finding(where, f"secret key {key!r} must be lower_snake_case (3-63 characters) and "
                              f"start with {product}_")


def monitoring_secrets(cfg: monitoring.MonitoringConfig | None) -> list:
    if cfg is None or not cfg.smtp_password_secret:
        return []
    return [SecretKey(key=cfg.smtp_password_secret, description="SMTP password Alertmanager sends alert emails with")]


def registry_secret_key(product: str) -> str:
    """``<product>_registry_auth``: a Docker ``config.json`` with the product's registry logins."""
    return f"{product}_registry_auth"


def registry_secrets(product: str, images: Sequence[str]) -> list:
    """The registry secret is required when an image comes from DigitalOcean's registry, which is
    always private; for GHCR it is optional (public packages pull without it)."""
    if any(dockerhost.image_registry(i) == "registry.digitalocean.com" for i in images):
        return [SecretKey(key=registry_secret_key(product),
                          description="Docker config.json with the registry logins "
                          "(`doctl registry docker-config --read-write=false`)")]
    return []


def registry_auth(product: str, images: Sequence[str]) -> list:
    """The Docker provider's ``registry_auth`` for ``images``, from the product's optional secret."""
    config = pulumi.Config("platform").get_secret(registry_secret_key(product))
    return dockerhost.registry_auth(images, config)
