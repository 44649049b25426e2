"""GIV (KROGiving): App Platform (backend service, two static sites), managed MongoDB, Postgres
and Valkey (DigitalOcean replaced managed Redis with Valkey), a Spaces media bucket, and a small
ops droplet in the VPC that runs the off-site backups.

The app is code (CI on a git tag runs `pulumi up` or `doctl apps create-deployment`); the
Spaces key is limited to the one bucket and wired as SECRET; each database has its own
firewall, admitting the app and the ops droplet only.
The product in three parts: ``config`` (the settings, the boundary), ``rules`` (what the
models alone cannot check) and ``plan`` (everything the stack holds, as plain values and the
steps ``stacks.provision`` creates, the same for every product).
"""

from __future__ import annotations

from stacks.definition import ProductDefinition, SecretKey
from stacks.giv.config import SSH_KEY_SECRET, GivConfig
from stacks.giv.plan import plan
from stacks.giv.rules import claims
from stacks.secret_keys import monitoring_secrets
from stacks.wiring import service_secret_keys

__all__ = ["PRODUCT", "GivConfig", "plan"]


def required_secrets(cfg: GivConfig) -> list[SecretKey]:
    needed = [SecretKey(key=SSH_KEY_SECRET, description="private SSH key of the ops droplet's deploy user")]
    return needed + service_secret_keys(cfg.components) + monitoring_secrets(cfg.monitoring)


PRODUCT = ProductDefinition(name="giv", config_model=GivConfig, plan=plan, secrets=required_secrets,
                            claims=claims)
