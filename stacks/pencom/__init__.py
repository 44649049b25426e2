"""Pencom / eHub: four on-prem VPS nodes reached over SSH.

| node    | tier | runs                                                           | accepts            |
|---------|------|----------------------------------------------------------------|--------------------|
| edge    | edge | nginx (TLS), api-gateway, external-gateway, the egress proxy   | internet on 80/443 |
| app     | app  | core, payments, compliance, notifications, external-integrations, audit | edge, app |
| data    | data | Postgres, MongoDB, Redis, all over TLS from an internal CA     | app (+ one waiver) |
| storage | data | MinIO over TLS, one bucket, one IAM user per consuming service | app                |

Fixes what the seed describes: database connections without TLS (now TLS everywhere with
``sslmode=verify-full`` against the internal CA), an internal API key some services do not get
(every service gets it), external-gateway reading the compliance database through an
undocumented hole (now a named waiver with a read-only role), and egress nobody restricts (the
internal nodes reach only the internal network, their resolvers and Oracle ECRS; HTTPS leaves
through a proxy on the edge node that allows each service only its own providers). SSH to the
internal nodes goes only through the edge node, from the admin CIDRs.
The product in four modules: ``config`` (the settings, the boundary), ``rules`` (what the
models alone cannot check), ``plan`` (everything the stack holds, as plain values) and
``provision`` (the resources, from the plan).
"""

from __future__ import annotations

from stacks.definition import ProductDefinition
from stacks.pencom import rules  # noqa: F401 (registers the config rules)
from stacks.pencom.config import PORTS, PencomConfig
from stacks.pencom.plan import claims, plan, required_secrets
from stacks.pencom.provision import build

__all__ = ["PORTS", "PRODUCT", "PencomConfig", "build", "plan"]

PRODUCT = ProductDefinition(name="pencom", config_model=PencomConfig, build=build, secrets=required_secrets,
                            claims=claims)
