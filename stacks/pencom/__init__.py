"""Pencom / eHub: four on-prem VPS nodes reached over SSH.

| node    | tier | runs                                                           | accepts            |
|---------|------|----------------------------------------------------------------|--------------------|
| edge    | edge | nginx (TLS), api-gateway, external-gateway, the egress proxy, mTLS sidecars | internet on 80/443 |
| app     | app  | core, payments, compliance, notifications, external-integrations, audit, behind an mTLS terminator | edge, app (mTLS only) |
| data    | data | Postgres, MongoDB, Redis, all over TLS from an internal CA     | app (+ one waiver) |
| storage | data | MinIO over TLS, one bucket, one IAM user per consuming service | app                |

Fixes what the seed describes: database connections without TLS (now TLS everywhere with
``sslmode=verify-full`` against the internal CA), an internal API key some services do not get
(every service gets it), external-gateway reading the compliance database through an
undocumented hole (now a named waiver with a read-only role), and egress nobody restricts (the
internal nodes reach only the internal network, their resolvers and Oracle ECRS; HTTPS leaves
through a proxy on the edge node that allows each service only its own providers), and service
calls between the hosts in plain HTTP behind a shared header (now mutual TLS with a client
certificate per caller and an allow-list per service, ``stacks.pencom.mtls``). SSH to the
internal nodes goes only through the edge node, from the admin CIDRs.
The product in three parts: ``config`` (the settings, the boundary), ``rules`` (what the
models alone cannot check) and ``plan`` (everything the stack holds, as plain values and the
steps ``stacks.provision`` creates, the same for every product).
"""

from __future__ import annotations

from stacks import secret_keys
from stacks.collisions import readable
from stacks.definition import ProductDefinition, SecretKey
from stacks.pencom import rules  # noqa: F401 (registers the config rules)
from stacks.pencom import port_rules  # noqa: F401 (registers the port rules)
from stacks.pencom import egress_rules  # noqa: F401 (registers the egress rules, after those)
from stacks.pencom.config import NODES, PORTS, SSH_KEY_SECRET, PencomConfig
from stacks.pencom.plan import backup_labels, images
from stacks.pencom.steps import plan
from stacks.secret_keys import monitoring_secrets
from stacks.shared_config import derived_buckets
from stacks.wiring import WAL_LABEL, service_secret_keys
from validation.rules import each

__all__ = ["PORTS", "PRODUCT", "PencomConfig", "plan"]

def claims(cfg: PencomConfig) -> dict:
    return {"hostnames": [(("routes", i, "host"), r.host) for i, r in each(cfg.routes)],
            "buckets": derived_buckets(cfg.backup, [*backup_labels(cfg), WAL_LABEL]),
            "ingress_addresses": [(("nodes", "edge", "public_address"), cfg.nodes.edge.public_address)],
            "host_addresses": readable([(("nodes", node, "private_address"),
                                         lambda node=node: str(getattr(cfg.nodes, node).private_address))
                                        for node in NODES]),
            "networks": readable([(("internal_cidr",), lambda: cfg.internal_cidr),
                                  (("egress", "edge_subnet"), lambda: cfg.egress.edge_subnet),
                                  *((("egress", "node_subnets", n), lambda n=n: getattr(cfg.egress.node_subnets, n))
                                    for n in ("app", "data", "storage"))])}


def required_secrets(cfg: PencomConfig) -> list[SecretKey]:
    # A node with a bootstrap user gets the deploy user created from this key's public half
    # (tls.get_public_key, which reads the OpenSSH format): checked at the boundary.
    bootstrap = any(getattr(cfg.nodes, n).bootstrap_user for n in NODES)
    needed = [SecretKey(key=SSH_KEY_SECRET, description="private SSH key of the deploy user on all four nodes",
                        format="openssh_private_key" if bootstrap else None)]
    needed += monitoring_secrets(cfg.monitoring)
    needed += service_secret_keys([*cfg.edge_services, *cfg.app_services])
    return needed + secret_keys.registry_secrets("pencom", images(cfg))


PRODUCT = ProductDefinition(name="pencom", config_model=PencomConfig, plan=plan, secrets=required_secrets,
                            claims=claims)
