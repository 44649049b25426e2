"""Pencom's resources from its plan (``stacks.pencom.plan``): the four nodes, the internal CA and
its certificates, the MinIO bucket, the containers with their files, the datastores' init and
the off-site backups."""

from __future__ import annotations

import pulumi
import pulumi_minio as minio

from components import egress, hostsetup, monitoring, mtls, prometheus
from components.dns import a_records
from components.dockerhost import DatastoreInit, SessionCollector, Workload
from components.ingress import Ingress, IngressRoute
from components.ingress import NGINX_UID
from components.internal_ca import ClientRequest, InternalCa, ServerCertificate, ServerRequest
from components.minio_bucket import MinioBucket, MinioBucketArgs, MinioConsumer
from components.mongo_init import render_mongo_init_js
from components.onprem import OnPremVps, OnPremVpsArgs
from components.postgres_init import HBA_PATH, render_init_sql, render_pg_hba
from components.backupscripts import replication_role_sql
from components.service_files import HostFile, host_path_for
from stacks import management, secret_keys
from stacks.pencom.config import (BACKUP_READER, CA_PATH, DOCKER_POOLS, MINIO_CA_PATH, MINIO_ROOT_USER,
                                  MINIO_TUNNEL_HOST, PROXY_SERVICE, REDIS_USER, SSH_KEY_SECRET, TLS_DIR,
                                  NodeConfig, PencomConfig)
from stacks.pencom.mtls import TERMINATOR
from stacks.pencom.network import proxy_routes
from stacks.pencom.plan import PencomPlan, images, node_data_dir, operator_ca_path, owner, plan, role_name
from stacks.product import Product, SecretResolver
from stacks.wiring import Generated, host_file
from stacks.backups import provision_backup

# Over TCP: the postgres image's entrypoint runs initdb's temporary server on the Unix socket
# only and stops it before the real one starts, so a socket check can pass in between and the
# init then finds no server (seen on the rehearsal: "connection to server on socket ... failed").
PG_READY = "pg_isready -h 127.0.0.1 -U postgres -q"


def _nodes(ctx, cfg: PencomConfig, p: PencomPlan, child: pulumi.ResourceOptions, workload: Workload) -> OnPremVps:
    """The edge node, firewalled by the tier model: the bastion and egress proxy of the others."""
    n, net = cfg.nodes, p.nodes["edge"]
    mgmt = ctx.environment.management
    return OnPremVps(f"{p.name}-edge", OnPremVpsArgs(
        # The deploy runner reaches the edge over the management network (it is a peer), the
        # internal nodes through the edge; with break-glass on, on the edge's public address.
        address=management.connect_address(mgmt, "pencom", n.edge.public_address),
        wireguard=management.endpoint(mgmt, "pencom"),
        private_address=n.edge.private_address, private_key=ctx.secret(SSH_KEY_SECRET),
        registry_auth=secret_keys.registry_auth("pencom", images(cfg)),
        ssh_port=n.edge.ssh_port, bootstrap_user=n.edge.bootstrap_user, access=ctx.admin_access(),
        directories=monitoring.data_directories(f"/srv/{p.name}-edge"),
        role=net.role, egress=net.egress, denied_outbound=net.denied_outbound, workload=workload,
    ), opts=child)


def _internal_nodes(ctx, cfg: PencomConfig, p: PencomPlan, child: pulumi.ResourceOptions,
                    edge: OnPremVps, proxy: pulumi.Resource, workloads: dict[str, Workload]
                    ) -> tuple[OnPremVps, OnPremVps, OnPremVps]:
    """The app, data and storage nodes, firewalled by the tier model, reached through the edge,
    each running its ``workloads`` entry. Their setup waits for ``proxy`` (the edge's egress
    proxy container): their apt and image pulls leave through it, and fail on a first
    ``pulumi up`` while it is not running."""
    key = ctx.secret(SSH_KEY_SECRET)
    n = cfg.nodes

    def internal(node: str, node_cfg: NodeConfig, **extra) -> OnPremVps:
        net = p.nodes[node]
        return OnPremVps(f"{p.name}-{node}", OnPremVpsArgs(
            address=node_cfg.private_address, private_address=node_cfg.private_address,
            private_key=key, ssh_port=node_cfg.ssh_port, bootstrap_user=node_cfg.bootstrap_user,
            bastion=edge.ssh, role=net.role, egress=net.egress, after=(proxy,), extra_rules=list(net.extra_rules),
            denied_outbound=net.denied_outbound, access=ctx.admin_access(),
            registry_auth=secret_keys.registry_auth("pencom", images(cfg)), workload=workloads[node],
            **extra), opts=child)

    app = internal("app", n.app)
    data = internal("data", n.data,
                    directories=[(m.host_path, "0750", owner(cfg.redis.user or REDIS_USER))
                                 for m in cfg.redis.mounts if not m.read_only],
                    waivers={f"{w.service} reads {w.database}": w.name for w in cfg.read_waivers})
    # MinIO runs as its configured user: its data directories and TLS key belong to that user.
    storage = internal("storage", n.storage, permit_open=(p.minio_api,),
                       directories=[(m.host_path, "0750", owner(cfg.minio.user)) for m in cfg.minio.mounts
                                    if not m.read_only])
    return app, data, storage


def build(ctx, cfg: PencomConfig) -> dict:
    p = plan(cfg, ctx.environment)
    name = p.name
    n = cfg.nodes
    product = Product("pencom")
    child = pulumi.ResourceOptions(parent=product)
    secrets = SecretResolver(product, ctx.secret)

    # --- TLS for the data tier -------------------------------------------------------------
    ca = InternalCa(f"{name}-ca", common_name=f"{name} internal CA", servers=[
        ServerRequest("data", ("localhost",), (n.data.private_address, "127.0.0.1")),
        ServerRequest("minio", ("localhost",), (n.storage.private_address, MINIO_TUNNEL_HOST)),
        # The session collector on the edge: the internal nodes check this name.
        ServerRequest("sessions", (p.session_peer,), (n.edge.private_address,)),
        # The app node's mutual-TLS terminator: every sidecar checks this name.
        ServerRequest("mtls", (p.mtls.server_name,), (n.app.private_address,))], opts=child,
        clients=[ClientRequest(s.caller, s.identity) for s in p.mtls.sidecars])
    data_cert, minio_cert = ca.certificates["data"], ca.certificates["minio"]
    ca_file = HostFile(container_path=CA_PATH, content=ca.cert_pem)
    minio_ca_file = HostFile(container_path=MINIO_CA_PATH, content=ca.cert_pem)

    # --- MinIO: the bucket is managed through an SSH tunnel to the storage node ----------------
    minio_provider = minio.Provider(
        f"{name}-minio", minio_server=f"{MINIO_TUNNEL_HOST}:{cfg.bucket.tunnel_port}", minio_user=MINIO_ROOT_USER,
        minio_password=secrets.resolve(p.datastore_env[cfg.minio.name]["MINIO_ROOT_PASSWORD"]), minio_ssl=True,
        minio_cacert_file=operator_ca_path(name), opts=pulumi.ResourceOptions(parent=product))
    bucket = MinioBucket(f"{name}-files", MinioBucketArgs(
        bucket=cfg.bucket.name, provider=minio_provider, protect=p.production,
        noncurrent_version_days=cfg.bucket.noncurrent_version_days,
        consumers=[MinioConsumer(service=c.service, prefixes=tuple(c.prefixes), write=c.write)
                   for c in cfg.bucket.consumers]
        + [MinioConsumer(service=BACKUP_READER, write=False,
                         prefixes=tuple(sorted({p for c in cfg.bucket.consumers for p in c.prefixes})))]),
        opts=child)
    secrets.bucket_keys = bucket.credentials

    def mtls_files(conf: str, leaf: ServerCertificate) -> list[HostFile]:
        # Rotation: a re-issued leaf (30 days before expiry, on any `up`) changes these files,
        # whose delivery checks the config in the container (`nginx -t`) and reloads nginx.
        # The certificate is delivered with its key (both owner-only, so one script writes
        # them): checked apart, a new certificate with the old key fails `nginx -t`, and each
        # half would be rolled back for ever.
        tls, nginx = mtls.TlsFiles(), f"{NGINX_UID}:{NGINX_UID}"
        return [HostFile(container_path=mtls.CONF_PATH, content=conf),
                HostFile(container_path=tls.cert, content=leaf.cert_pem, mode="0400", owner=nginx),
                HostFile(container_path=tls.key, content=leaf.key_pem, mode="0400", owner=nginx),
                HostFile(container_path=tls.ca, content=ca.cert_pem)]

    def secret_env(specs) -> dict:
        return {s.name: env for s in specs if (env := secrets.env(p.env[s.name].secret))}

    # --- edge: nginx, gateways, egress proxy, monitoring ---------------------------------------
    squid_conf = egress.render_squid_conf(proxy_routes(cfg), p.proxy_ports,
                                          allowed_sources=[cfg.internal_cidr, *DOCKER_POOLS])
    records = []
    if cfg.dns:
        records = a_records(name, provider=cfg.dns.provider, zone=cfg.dns.zone, hosts=[r.host for r in cfg.routes],
                            address=n.edge.public_address, ttl=cfg.dns.ttl, parent=product,
                            cloudflare_zone_id=cfg.dns.cloudflare_zone_id)
    by_edge = {s.name: s for s in cfg.edge_services}
    ingress = Ingress(routes=[IngressRoute(host=r.host, service=r.service, port=by_edge[r.service].port,
                                           websocket=r.websocket) for r in cfg.routes],
                      acme_email=cfg.acme_email, depends_on=records)
    edge_files = {s.name: [ca_file] for s in cfg.edge_services}
    edge_files[PROXY_SERVICE] = [HostFile(container_path="/etc/squid/squid.conf", content=squid_conf)]
    for sidecar in p.mtls.sidecars:
        edge_files[sidecar.name] = mtls_files(mtls.render_caller_conf(sidecar.routes),
                                              ca.client_certificates[sidecar.caller])
    mon, alerts = cfg.monitoring, ctx.environment.alerts
    files_for_monitoring = monitoring.monitoring_files(
        mon, p.scrape, prometheus.AlertRoutes(emails=tuple(alerts.emails), slack_channel=alerts.slack_channel,
                                              sender=mon.smtp_from),
        smtp_password=ctx.secret(mon.smtp_password_secret) if mon.smtp_password_secret else None,
        slack_url=ctx.secret("alerts_slack_webhook_url") if alerts.slack_channel else None,
        backup_jobs=list(p.backup_job_names))
    grafana_password = secrets.password(Generated(f"{name}-grafana-admin"))
    # --- admin sessions: the internal nodes ship their audit records to the edge (mgmt tier) --
    collector = ca.certificates["sessions"]
    shipping = hostsetup.SessionShipping(collector=n.edge.private_address, peer_name=p.session_peer,
                                         ca_pem=ca.cert_pem)
    edge = _nodes(ctx, cfg, p, child, Workload(
        list(p.edge), ingress=ingress, files={**edge_files, **files_for_monitoring},
        secret_env={**secret_env(cfg.edge_services), "grafana": {"GF_SECURITY_ADMIN_PASSWORD": grafana_password}},
        collector=SessionCollector(n.edge.private_address, collector.cert_pem, collector.key_pem, ca.cert_pem)))

    # --- data: Postgres, MongoDB, Redis over TLS -------------------------------------------
    mongo_pem = pulumi.Output.secret(pulumi.Output.all(data_cert.cert_pem, data_cert.key_pem).apply(
        lambda parts: parts[0].rstrip("\n") + "\n" + parts[1]))

    def key_file(path: str, content, key_owner: str) -> HostFile:
        # Each image's user must own its key, readable by nobody else.
        return HostFile(container_path=path, content=content, mode="0600", owner=key_owner)

    server_crt = HostFile(container_path=f"{TLS_DIR}/server.crt", content=data_cert.cert_pem)
    data_files = {
        cfg.postgres.name: [server_crt, key_file(f"{TLS_DIR}/server.key", data_cert.key_pem, "999:999"), ca_file,
                            HostFile(container_path=HBA_PATH, content=render_pg_hba())],
        cfg.mongodb.name: [key_file(f"{TLS_DIR}/mongodb.pem", mongo_pem, "999:999"), ca_file],
        cfg.redis.name: [server_crt, key_file(f"{TLS_DIR}/redis.key", data_cert.key_pem,
                                              owner(cfg.redis.user or REDIS_USER)), ca_file],
    }
    datastores = (cfg.postgres.name, cfg.mongodb.name, cfg.redis.name)
    role_passwords = pulumi.Output.all(**{role: secrets.password(ref) for role, ref in p.pg_roles.items()})
    wal_password = secrets.password(Generated(f"{name}-pg-wal"))
    sql = pulumi.Output.all(role_passwords, wal_password).apply(lambda a: render_init_sql(
        p.pg_databases, a[0], readers=p.pg_readers) + replication_role_sql(a[1]))
    mongo_users = {db: secrets.password(ref) for db, ref in p.mongo_users.items()}
    mongo_js = pulumi.Output.all(**mongo_users).apply(lambda pws: render_mongo_init_js(
        {d.name: (role_name(d.service), pws[d.name]) for d in cfg.mongo_databases}))
    # Single-quoted: the root password is expanded inside the container, from its own env.
    mongo_shell = (f'mongosh --quiet --tls --tlsCAFile {CA_PATH} --host localhost '
                   '-u root -p "$MONGO_INITDB_ROOT_PASSWORD" --authenticationDatabase admin')
    pg_init, mongo_init = f"{name}-postgres-init", f"{name}-mongodb-init"
    inits = [
        DatastoreInit(pg_init, cfg.postgres.name, sql, ready=PG_READY, apply="psql -U postgres -v ON_ERROR_STOP=1 -q",
                      path=f"/etc/platform/{name}-postgres-init.sql"),
        DatastoreInit(mongo_init, cfg.mongodb.name, mongo_js,
                      ready=f"sh -c '{mongo_shell} --eval \"db.runCommand({{ping: 1}})\"'",
                      apply=f"sh -c '{mongo_shell}'", path=f"/etc/platform/{name}-mongodb-init.js")]

    # --- the internal nodes: app, data, storage (MinIO over TLS) -------------------------------
    app, data, storage = _internal_nodes(ctx, cfg, p, child, edge, edge.containers[PROXY_SERVICE], {
        "app": Workload(list(p.app), files={**{s.name: [ca_file] for s in cfg.app_services},
                                            TERMINATOR: mtls_files(mtls.render_terminator_conf(p.mtls.services),
                                                                   ca.certificates["mtls"])},
                        secret_env=secret_env(cfg.app_services), sessions=shipping),
        "data": Workload(list(p.data), files=data_files, inits=inits, sessions=shipping,
                         secret_env={s: secrets.env(p.datastore_env[s]) for s in datastores}),
        "storage": Workload(list(p.storage), files={cfg.minio.name: [
            HostFile(container_path="/run/platform/certs/public.crt", content=minio_cert.cert_pem),
            key_file("/run/platform/certs/private.key", minio_cert.key_pem, owner(cfg.minio.user)), minio_ca_file]},
            secret_env={cfg.minio.name: secrets.env(p.datastore_env[cfg.minio.name])}, sessions=shipping)})
    data_created, storage_created = data.containers, storage.containers

    # --- off-site backups: the data node for its datastores, the storage node for the bucket ----
    access, secret = bucket.credentials[BACKUP_READER]
    bucket_url = pulumi.Output.secret(pulumi.Output.all(access, secret).apply(
        lambda keys: f"https://{keys[0]}:{keys[1]}@{p.minio_api}/{cfg.bucket.name}"))
    nodes = {"edge": edge, "app": app, "data": data, "storage": storage}
    for node, host in nodes.items():
        if host.data_dir != node_data_dir(name, node) or host_path_for(host.data_dir, "s", ca_file) \
                != host_file(node_data_dir(name, node), "s", CA_PATH):
            raise RuntimeError(f"{host.pulumi_resource_name}: the plan placed its files elsewhere than OnPremVps")
    ready = {"postgres": [data.inits[pg_init]], "pitr": [data.inits[pg_init]], "mongodb": [data.inits[mongo_init]],
             "redis": [data_created[cfg.redis.name]], "minio": [storage_created[cfg.minio.name], bucket]}
    for job in p.backups:
        runner = nodes[job.node]
        provision_backup(
            name, job.label, cfg.backup, kind=job.kind, tool_image=job.source.image, runner=runner.ssh,
            runner_ready=ready[job.kind], mounts=(f"{runner.data_dir}/files",), cluster_rpo=p.cluster_rpo,
            rpo_minutes=job.rpo_minutes,
            # The data node publishes its datastores on its private address only, so 127.0.0.1
            # is theirs only inside the server's own network namespace.
            source_service=job.source.name if job.kind != "minio" else "",
            mode="host" if job.kind == "minio" else "docker",
            source_name=f"{runner.pulumi_resource_name}-{job.source.name}",
            source_uri=bucket_url if job.uri is None else secrets.resolve(job.uri),
            environment=dict(job.environment), protect=p.production, opts=child)

    outputs = {
        "edgeAddress": n.edge.public_address,
        "wireguard": management.endpoint_output(ctx.environment.management, "pencom", n.edge.public_address,
                                                edge.wireguard_public_key),
        "urls": [f"https://{r.host}" for r in cfg.routes],
        "waivers": [w.name for w in cfg.read_waivers],
        "internalCaPem": ca.cert_pem,
        # Grafana listens on the edge node's loopback: ssh -L 3300:127.0.0.1:3300 deploy@<edge>.
        "grafanaAdminPassword": pulumi.Output.secret(grafana_password),
    }
    product.register_outputs(outputs)
    return outputs
