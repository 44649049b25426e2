"""V-EdFinance: one VPS (2 vCPU / 4 GB) running api and web for dev and staging, Postgres 17 with
pgvector and Redis, behind nginx with Let's Encrypt.

Every container has resource limits, and their sum must fit the host with headroom, or the
config is rejected; every password is generated and secret; every container has a
healthcheck, none is privileged; the sshd baseline closes root and password login; backups
go encrypted off-site to R2 daily and are restore-tested weekly (the 2025-12-23 audit's
findings). Dev and staging keep separate databases on the shared Postgres, each role confined
to its own.
The product in three modules: ``config`` (the settings and their rules), ``plan`` (everything
the stack holds, as plain values) and ``provision`` (the resources, from the plan).
"""

from __future__ import annotations

from stacks.definition import ProductDefinition
from stacks.vedfinance.config import VedfinanceConfig, claims
from stacks.vedfinance.plan import plan, required_secrets
from stacks.vedfinance.provision import build

__all__ = ["PRODUCT", "VedfinanceConfig", "build", "plan"]

PRODUCT = ProductDefinition(name="vedfinance", config_model=VedfinanceConfig, build=build,
                            secrets=required_secrets, claims=claims)
