"""V-EdFinance's resources from its plan: the VPS, the internal CA and Postgres's certificate,
the containers with their files and monitoring, the database init and the off-site backups."""

from __future__ import annotations

import pulumi

from components import monitoring, tiers
from components.backupscripts import replication_role_sql
from components.dns import a_records
from components.host_containers import datastore_init
from components.ingress import Ingress, IngressRoute
from components.internal_ca import InternalCa, ServerRequest
from components.dockerhost import Workload
from components.onprem import OnPremVps, OnPremVpsArgs
from components.postgres_init import HBA_PATH, render_init_sql, render_pg_hba
from components.service_files import HostFile, host_path_for
from stacks import management, secret_keys
from stacks.backups import provision_backup
from stacks.product import Product, SecretResolver, host_monitoring, merge_env
from stacks.shared_config import container_egress_lock
from stacks.vedfinance.config import CA_PATH, PG_TLS_DIR, SSH_KEY_SECRET, VedfinanceConfig
from stacks.vedfinance.plan import plan
from stacks.wiring import Generated, host_file

# Over TCP: the postgres image's entrypoint runs initdb's temporary server on the Unix socket
# only and stops it before the real one starts, so a socket check can pass in between and the
# init then finds no server (seen on the rehearsal: "connection to server on socket ... failed").
PG_READY = "pg_isready -h 127.0.0.1 -U postgres -q"


def build(ctx, cfg: VedfinanceConfig) -> dict:
    p = plan(cfg, ctx.environment)
    name = p.name
    product = Product("vedfinance")
    child = pulumi.ResourceOptions(parent=product)
    secrets = SecretResolver(product, ctx.secret)
    by_name = {s.name: s for s in cfg.services}
    mgmt = ctx.environment.management

    # The backup runner reaches Postgres on loopback, also with verify-full: 127.0.0.1 is a SAN.
    ca = InternalCa(f"{name}-ca", common_name=f"{name} internal CA", opts=child,
                    servers=[ServerRequest("postgres", (cfg.postgres_service,), ("127.0.0.1",))])
    pg_cert = ca.certificates["postgres"]
    files = {cfg.postgres_service: [
        HostFile(container_path=f"{PG_TLS_DIR}/server.crt", content=pg_cert.cert_pem, mode="0444"),
        # The postgres image's user (uid 999) must own its key, readable by nobody else.
        HostFile(container_path=f"{PG_TLS_DIR}/server.key", content=pg_cert.key_pem, mode="0600", owner="999:999"),
        HostFile(container_path=HBA_PATH, content=render_pg_hba()),
    ]}
    ca_file = HostFile(container_path=CA_PATH, content=ca.cert_pem)
    for db in cfg.databases:
        files.setdefault(db.service, []).append(ca_file)

    records = a_records(name, provider=cfg.dns.provider, zone=cfg.dns.zone, hosts=[r.host for r in cfg.routes],
                        address=cfg.host.address, ttl=cfg.dns.ttl, parent=product,
                        cloudflare_zone_id=cfg.dns.cloudflare_zone_id)
    ingress = Ingress(routes=[IngressRoute(host=r.host, service=r.service, port=by_name[r.service].port,
                                           websocket=r.websocket) for r in cfg.routes],
                      acme_email=cfg.acme_email, memory_mb=cfg.ingress_memory_mb, cpus=cfg.ingress_cpus,
                      depends_on=records)
    grafana_password = secrets.password(Generated(f"{name}-grafana-admin"))
    watch = host_monitoring(ctx, cfg.monitoring, data_dir=p.data_dir, grafana_password=grafana_password,
                            service_ports={s: by_name[s].port for s in cfg.monitoring.metrics_services},
                            probes=[f"https://{r.host}" for r in cfg.routes], backup_jobs=list(p.backup_job_names))
    service_env = {s: env for s, service in p.env.items() if (env := secrets.env(service.secret))}
    host = OnPremVps(name, OnPremVpsArgs(
        address=management.connect_address(mgmt, "vedfinance", cfg.host.address),
        wireguard=management.endpoint(mgmt, "vedfinance"),
        private_key=ctx.secret(SSH_KEY_SECRET), ssh_port=cfg.host.ssh_port,
        registry_auth=secret_keys.registry_auth("vedfinance", [s.image for s in cfg.services]),
        bootstrap_user=cfg.host.bootstrap_user, access=ctx.admin_access(),
        role=tiers.HostRole(tier=tiers.Tier.EDGE,
                            ssh_cidrs=management.ssh_sources(mgmt, ctx.environment.admin_cidrs)),
        directories=monitoring.data_directories(f"/srv/{name}"),
        egress=container_egress_lock(
            cfg.egress, bridge="ved-ctr",
            containers=[*(s.name for s in cfg.services),
                        *(s.name for s in monitoring.server_specs(cfg.monitoring, ""))]),
        workload=Workload([*p.services, *watch.specs], secret_env=merge_env(service_env, watch.secret_env),
                          files={**files, **watch.files}, ingress=ingress),
    ), opts=child)
    created = host.containers
    if host.data_dir != p.data_dir or host_path_for(host.data_dir, "s", ca_file) != host_file(p.data_dir, "s", CA_PATH):
        raise RuntimeError(f"{name}: the plan placed its files elsewhere than OnPremVps")

    role_passwords = [secrets.password(p.role_passwords[d.name]) for d in cfg.databases]
    sql = pulumi.Output.all(secrets.password(p.wal_password), *role_passwords).apply(
        lambda pws: render_init_sql({d.name: d.name for d in cfg.databases},
                                    {d.name: pw for d, pw in zip(cfg.databases, pws[1:])}, cfg.extensions)
        + replication_role_sql(pws[0]))
    init = datastore_init(f"{name}-postgres-init", host.ssh, stack=name, service=cfg.postgres_service, text=sql,
                          ready=PG_READY, apply="psql -U postgres -v ON_ERROR_STOP=1 -q",
                          path=f"/etc/platform/{name}-init.sql", parent=product,
                          depends_on=[created[cfg.postgres_service]])
    for job in p.backups:
        provision_backup(
            name, job.label, cfg.backup, kind=job.kind, tool_image=job.tool_image, runner=host.ssh,
            runner_ready=[init], mounts=(f"{host.data_dir}/files",), cluster_rpo=p.cluster_rpo,
            rpo_minutes=job.rpo_minutes, source_service=job.source if job.kind == "pitr" else "",
            source_name=created[job.source].pulumi_resource_name, source_uri=secrets.resolve(job.uri),
            protect=p.production, opts=child)

    outputs = {"address": cfg.host.address, "urls": [f"https://{r.host}" for r in cfg.routes],
               "wireguard": management.endpoint_output(mgmt, "vedfinance", cfg.host.address, host.wireguard_public_key),
               # Grafana listens on the VPS's loopback: ssh -L 3300:127.0.0.1:3300 deploy@<address>.
               "grafanaAdminPassword": pulumi.Output.secret(grafana_password)}
    product.register_outputs(outputs)
    return outputs
