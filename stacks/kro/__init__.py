"""KRO: one droplet (nginx, backend, frontend, admin-frontend) and a managed Postgres cluster.

Deploys are idempotent remote commands run as a deploy user, with root login closed; each
environment is its own stack with its own VPC, database and credentials; certificates are
renewed by certbot's timer, nginx reloaded by a deploy hook.
The product in three parts: ``config`` (the settings, the boundary), ``rules`` (what the
models alone cannot check) and ``plan`` (everything the stack holds, as plain values and the
steps ``stacks.provision`` creates, the same for every product).
"""

from __future__ import annotations

from stacks import secret_keys
from stacks.definition import ProductDefinition, SecretKey
from stacks.kro.config import SSH_KEY_SECRET, KroConfig
from stacks.kro.plan import plan
from stacks.kro.rules import claims
from stacks.secret_keys import monitoring_secrets
from stacks.wiring import service_secret_keys

__all__ = ["PRODUCT", "KroConfig", "plan"]


def required_secrets(cfg: KroConfig) -> list[SecretKey]:
    needed = [SecretKey(key=SSH_KEY_SECRET,
                        description="private SSH key of the droplet's deploy user (OpenSSH PEM)")]
    needed += service_secret_keys(cfg.services, lambda env, service: f"{env} of the {service} service")
    return (needed + monitoring_secrets(cfg.monitoring)
            + secret_keys.registry_secrets("kro", [s.image for s in cfg.services]))


PRODUCT = ProductDefinition(name="kro", config_model=KroConfig, plan=plan, secrets=required_secrets,
                            claims=claims)
