"""V-EdFinance: one VPS (2 vCPU / 4 GB) running api and web for dev and staging, Postgres 17 with
pgvector and Redis, behind nginx with Let's Encrypt.

Every container has resource limits, and their sum must fit the host with headroom, or the
config is rejected; every password is generated and secret; every container has a
healthcheck, none is privileged; the sshd baseline closes root and password login; backups
go encrypted off-site to R2 daily and are restore-tested weekly (the 2025-12-23 audit's
findings). Dev and staging keep separate databases on the shared Postgres, each role confined
to its own.
The product in three parts: ``config`` (the settings, the boundary), ``rules`` (what the
models alone cannot check) and ``plan`` (everything the stack holds, as plain values and the
steps ``stacks.provision`` creates, the same for every product).
"""

from __future__ import annotations

from stacks import secret_keys
from stacks.definition import ProductDefinition, SecretKey
from stacks.secret_keys import monitoring_secrets
from stacks.vedfinance.config import SSH_KEY_SECRET, VedfinanceConfig
from stacks.vedfinance.plan import plan
from stacks.vedfinance.rules import claims
from stacks.wiring import service_secret_keys

__all__ = ["PRODUCT", "VedfinanceConfig", "plan"]

def required_secrets(cfg: VedfinanceConfig) -> list[SecretKey]:
    # With a bootstrap user the deploy user is created from this key's public half
    # (tls.get_public_key, which reads the OpenSSH format): checked at the boundary.
    needed = [SecretKey(key=SSH_KEY_SECRET, description="private SSH key of the VPS's deploy user",
                        format="openssh_private_key" if cfg.host.bootstrap_user else None)]
    needed += monitoring_secrets(cfg.monitoring)
    needed += service_secret_keys(cfg.services)
    return needed + secret_keys.registry_secrets("vedfinance", [s.image for s in cfg.services])


PRODUCT = ProductDefinition(name="vedfinance", config_model=VedfinanceConfig, plan=plan,
                            secrets=required_secrets, claims=claims)
