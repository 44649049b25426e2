"""Pencom's plan as a ``ProductPlan``: the steps ``stacks.provision`` creates from the values of
``stacks.pencom.plan`` (``detail``): the internal CA and its certificates, the MinIO bucket,
the four nodes with their containers and files, the datastores' init and the off-site backups."""

from __future__ import annotations

from components import egress, hostsetup, monitoring, mtls, prometheus
from components.ingress import NGINX_UID, IngressRoute
from components.postgres_init import HBA_PATH, render_pg_hba
from components.service_files import HostFile
from stacks import management
from stacks.pencom.config import (BACKUP_READER, CA_PATH, DOCKER_POOLS, MINIO_CA_PATH, MINIO_ROOT_USER,
                                  MINIO_TUNNEL_HOST, PROXY_SERVICE, REDIS_USER, SSH_KEY_SECRET, TLS_DIR, PencomConfig)
from stacks.pencom.mtls import TERMINATOR
from stacks.pencom.network import proxy_routes
from stacks.pencom.plan import PencomPlan, detail, images, node_data_dir, operator_ca_path, owner, role_name
from stacks.plan import ProductPlan, Step, call, ref, step
from stacks.plan_parts import PG_READY, session_archive
from stacks.wiring import ConfigSecret, Generated, backup_job_name


def plan(cfg: PencomConfig, environment) -> ProductPlan:
    """The plan of ``cfg`` in ``environment`` (``stacks.pencom.plan.detail`` says what it reads
    and raises); ``detail`` is a ``PencomPlan``."""
    d = detail(cfg, environment)
    n, name, ca = cfg.nodes, d.name, f"{d.name}-ca"
    outputs = (
        ("edgeAddress", n.edge.public_address),
        ("wireguard", call("wireguard_output", m=environment.management, product="pencom",
                           public_address=n.edge.public_address, public_key=ref(f"{name}-edge", "wireguard_public_key"))),
        ("urls", [f"https://{r.host}" for r in cfg.routes]), ("waivers", [w.name for w in cfg.read_waivers]),
        ("internalCaPem", ref(ca, "cert_pem")),
        # Grafana listens on the edge node's loopback: ssh -L 3300:127.0.0.1:3300 deploy@<edge>.
        ("grafanaAdminPassword", call("secret", value=Generated(f"{name}-grafana-admin"))))
    return ProductPlan(product="pencom", name=name, production=d.production, env=d.env,
                       steps=_steps(cfg, environment, d), outputs=outputs, backup_job_names=d.backup_job_names,
                       detail=d, bucket_keys=ref(f"{name}-files", "credentials"))


def _mtls_files(ca: str, conf: str, leaf: tuple[str, ...]) -> list[HostFile]:
    # Rotation: a re-issued leaf (30 days before expiry, on any `up`) changes these files,
    # whose delivery checks the config in the container (`nginx -t`) and reloads nginx.
    # The certificate is delivered with its key (both owner-only, so one script writes
    # them): checked apart, a new certificate with the old key fails `nginx -t`, and each
    # half would be rolled back for ever.
    tls, nginx = mtls.TlsFiles(), f"{NGINX_UID}:{NGINX_UID}"
    return [HostFile(container_path=mtls.CONF_PATH, content=conf),
            HostFile(container_path=tls.cert, content=ref(ca, *leaf, "cert_pem"), mode="0400", owner=nginx),
            HostFile(container_path=tls.key, content=ref(ca, *leaf, "key_pem"), mode="0400", owner=nginx),
            HostFile(container_path=tls.ca, content=ref(ca, "cert_pem"))]


def _key_file(path: str, content, key_owner: str) -> HostFile:
    # Each image's user must own its key, readable by nobody else.
    return HostFile(container_path=path, content=content, mode="0600", owner=key_owner)


def _steps(cfg: PencomConfig, environment, p: PencomPlan) -> tuple[Step, ...]:
    n, name, mon, alerts = cfg.nodes, p.name, cfg.monitoring, environment.alerts
    ca, files, edge = f"{name}-ca", f"{name}-files", f"{name}-edge"
    secret_env = {s: dict(e.secret) for s, e in p.env.items() if e.secret}
    # --- TLS for the data tier -------------------------------------------------------------
    steps = [step("internal_ca", ca, common_name=f"{name} internal CA", servers=[
        call("ServerRequest", server="data", dns_names=("localhost",),
             ip_addresses=(n.data.private_address, "127.0.0.1")),
        call("ServerRequest", server="minio", dns_names=("localhost",),
             ip_addresses=(n.storage.private_address, MINIO_TUNNEL_HOST)),
        # The session collector on the edge: the internal nodes check this name.
        call("ServerRequest", server="sessions", dns_names=(p.session_peer,), ip_addresses=(n.edge.private_address,)),
        # The app node's mutual-TLS terminator: every sidecar checks this name.
        call("ServerRequest", server="mtls", dns_names=(p.mtls.server_name,), ip_addresses=(n.app.private_address,))],
        clients=[call("ClientRequest", client=s.caller, identity=s.identity) for s in p.mtls.sidecars])]
    data_cert, minio_cert = ("certificates", "data"), ("certificates", "minio")
    ca_file = HostFile(container_path=CA_PATH, content=ref(ca, "cert_pem"))
    # --- MinIO: the bucket is managed through an SSH tunnel to the storage node ----------------
    steps.append(step("minio.Provider", f"{name}-minio", minio_server=f"{MINIO_TUNNEL_HOST}:{cfg.bucket.tunnel_port}",
                      minio_user=MINIO_ROOT_USER, minio_password=p.datastore_env[cfg.minio.name]["MINIO_ROOT_PASSWORD"],
                      minio_ssl=True, minio_cacert_file=operator_ca_path(name)))
    steps.append(step("minio_bucket", files, bucket=cfg.bucket.name, provider=ref(f"{name}-minio"),
                      protect=p.production, noncurrent_version_days=cfg.bucket.noncurrent_version_days,
                      consumers=[call("MinioConsumer", service=c.service, prefixes=tuple(c.prefixes), write=c.write)
                                 for c in cfg.bucket.consumers]
                      + [call("MinioConsumer", service=BACKUP_READER, write=False,
                              prefixes=tuple(sorted({x for c in cfg.bucket.consumers for x in c.prefixes})))]))
    # --- edge: nginx, gateways, egress proxy, monitoring ---------------------------------------
    records = []
    if cfg.dns:
        steps.append(step("a_records", f"{name}-records", prefix=name, provider=cfg.dns.provider, zone=cfg.dns.zone,
                          hosts=[r.host for r in cfg.routes], address=n.edge.public_address, ttl=cfg.dns.ttl,
                          cloudflare_zone_id=cfg.dns.cloudflare_zone_id))
        records = ref(f"{name}-records")
    by_edge = {s.name: s for s in cfg.edge_services}
    ingress = call("Ingress", routes=[IngressRoute(host=r.host, service=r.service, port=by_edge[r.service].port,
                                                   websocket=r.websocket) for r in cfg.routes],
                   acme_email=cfg.acme_email, depends_on=records)
    squid_conf = egress.render_squid_conf(proxy_routes(cfg), p.proxy_ports,
                                          allowed_sources=[cfg.internal_cidr, *DOCKER_POOLS])
    edge_files = {s.name: [ca_file] for s in cfg.edge_services}
    edge_files[PROXY_SERVICE] = [HostFile(container_path="/etc/squid/squid.conf", content=squid_conf)]
    for sidecar in p.mtls.sidecars:
        edge_files[sidecar.name] = _mtls_files(ca, mtls.render_caller_conf(sidecar.routes),
                                               ("client_certificates", sidecar.caller))
    files_for_monitoring = monitoring.monitoring_files(
        mon, p.scrape, prometheus.AlertRoutes(emails=tuple(alerts.emails), slack_channel=alerts.slack_channel,
                                              sender=mon.smtp_from),
        smtp_password=ConfigSecret(mon.smtp_password_secret) if mon.smtp_password_secret else None,
        slack_url=ConfigSecret("alerts_slack_webhook_url") if alerts.slack_channel else None,
        backup_jobs=list(p.backup_job_names))
    # --- admin sessions: the internal nodes ship their audit records to the edge (mgmt tier) --
    sessions = ("certificates", "sessions")
    shipping = hostsetup.SessionShipping(collector=n.edge.private_address, peer_name=p.session_peer,
                                         ca_pem=ref(ca, "cert_pem"))
    net, mgmt = p.nodes["edge"], environment.management
    registry_auth = call("registry_auth", product="pencom", images=images(cfg))
    # The deploy runner reaches the edge over the management network (it is a peer), the
    # internal nodes through the edge; with break-glass on, on the edge's public address.
    steps.append(step(
        "vps_host", edge, data_dir=node_data_dir(name, "edge"),
        address=management.connect_address(mgmt, "pencom", n.edge.public_address),
        wireguard=management.endpoint(mgmt, "pencom"), private_address=n.edge.private_address,
        private_key=ConfigSecret(SSH_KEY_SECRET), registry_auth=registry_auth, ssh_port=n.edge.ssh_port,
        bootstrap_user=n.edge.bootstrap_user, access=call("admin_access"),
        directories=monitoring.data_directories(f"/srv/{name}-edge"), role=net.role, egress=net.egress,
        denied_outbound=net.denied_outbound, workload=call(
            "Workload", containers=list(p.edge), ingress=ingress, files={**edge_files, **files_for_monitoring},
            secret_env={**{s.name: secret_env[s.name] for s in cfg.edge_services if s.name in secret_env},
                        "grafana": {"GF_SECURITY_ADMIN_PASSWORD": Generated(f"{name}-grafana-admin")}},
            collector=call("SessionCollector", address=n.edge.private_address, cert_pem=ref(ca, *sessions, "cert_pem"),
                           key_pem=ref(ca, *sessions, "key_pem"), ca_pem=ref(ca, "cert_pem"), archive=True))))
    # --- data: Postgres, MongoDB, Redis over TLS -------------------------------------------
    mongo_pem = call("pem_bundle", cert=ref(ca, *data_cert, "cert_pem"), key=ref(ca, *data_cert, "key_pem"))
    server_crt = HostFile(container_path=f"{TLS_DIR}/server.crt", content=ref(ca, *data_cert, "cert_pem"))
    data_key = ref(ca, *data_cert, "key_pem")
    data_files = {
        cfg.postgres.name: [server_crt, _key_file(f"{TLS_DIR}/server.key", data_key, "999:999"), ca_file,
                            HostFile(container_path=HBA_PATH, content=render_pg_hba())],
        cfg.mongodb.name: [_key_file(f"{TLS_DIR}/mongodb.pem", mongo_pem, "999:999"), ca_file],
        cfg.redis.name: [server_crt, _key_file(f"{TLS_DIR}/redis.key", data_key, owner(cfg.redis.user or REDIS_USER)),
                         ca_file],
    }
    # Single-quoted: the root password is expanded inside the container, from its own env.
    mongo_shell = (f'mongosh --quiet --tls --tlsCAFile {CA_PATH} --host localhost '
                   '-u root -p "$MONGO_INITDB_ROOT_PASSWORD" --authenticationDatabase admin')
    pg_init, mongo_init = f"{name}-postgres-init", f"{name}-mongodb-init"
    inits = [
        call("DatastoreInit", resource=pg_init, service=cfg.postgres.name,
             text=call("init_sql", databases=p.pg_databases, passwords=dict(p.pg_roles),
                       wal_password=Generated(f"{name}-pg-wal"), readers=p.pg_readers),
             ready=PG_READY, apply="psql -U postgres -v ON_ERROR_STOP=1 -q", path=f"/etc/platform/{name}-postgres-init.sql"),
        call("DatastoreInit", resource=mongo_init, service=cfg.mongodb.name,
             text=call("mongo_init_js", users={d.name: role_name(d.service) for d in cfg.mongo_databases},
                       passwords=dict(p.mongo_users)),
             ready=f"sh -c '{mongo_shell} --eval \"db.runCommand({{ping: 1}})\"'",
             apply=f"sh -c '{mongo_shell}'", path=f"/etc/platform/{name}-mongodb-init.js")]
    # --- the internal nodes: app, data, storage (MinIO over TLS), reached through the edge ------
    # Their setup waits for the edge's egress proxy container: their apt and image pulls leave
    # through it, and fail on a first `pulumi up` while it is not running.
    datastores = (cfg.postgres.name, cfg.mongodb.name, cfg.redis.name)
    workloads = {
        "app": call("Workload", containers=list(p.app), files={
            **{s.name: [ca_file] for s in cfg.app_services},
            TERMINATOR: _mtls_files(ca, mtls.render_terminator_conf(p.mtls.services), ("certificates", "mtls"))},
            secret_env={s.name: secret_env[s.name] for s in cfg.app_services if s.name in secret_env},
            sessions=shipping),
        "data": call("Workload", containers=list(p.data), files=data_files, inits=inits, sessions=shipping,
                     secret_env={s: p.datastore_env[s] for s in datastores}),
        "storage": call("Workload", containers=list(p.storage), files={cfg.minio.name: [
            HostFile(container_path="/run/platform/certs/public.crt", content=ref(ca, *minio_cert, "cert_pem")),
            _key_file("/run/platform/certs/private.key", ref(ca, *minio_cert, "key_pem"), owner(cfg.minio.user)),
            HostFile(container_path=MINIO_CA_PATH, content=ref(ca, "cert_pem"))]},
            secret_env={cfg.minio.name: p.datastore_env[cfg.minio.name]}, sessions=shipping)}
    extra = {
        "app": {},
        "data": {"directories": [(m.host_path, "0750", owner(cfg.redis.user or REDIS_USER))
                                 for m in cfg.redis.mounts if not m.read_only],
                 "waivers": {f"{w.service} reads {w.database}": w.name for w in cfg.read_waivers}},
        # MinIO runs as its configured user: its data directories and TLS key belong to that user.
        "storage": {"permit_open": (p.minio_api,),
                    "directories": [(m.host_path, "0750", owner(cfg.minio.user)) for m in cfg.minio.mounts
                                    if not m.read_only]}}
    for node in ("app", "data", "storage"):
        node_cfg, net = getattr(n, node), p.nodes[node]
        steps.append(step(
            "vps_host", f"{name}-{node}", data_dir=node_data_dir(name, node),
            address=node_cfg.private_address, private_address=node_cfg.private_address,
            private_key=ConfigSecret(SSH_KEY_SECRET), ssh_port=node_cfg.ssh_port, bootstrap_user=node_cfg.bootstrap_user,
            bastion=ref(edge, "ssh"), role=net.role, egress=net.egress, after=(ref(edge, "containers", PROXY_SERVICE),),
            extra_rules=list(net.extra_rules), denied_outbound=net.denied_outbound, access=call("admin_access"),
            registry_auth=registry_auth, workload=workloads[node], **extra[node]))
    # --- off-site backups: the data node for its datastores, the storage node for the bucket ----
    data, storage = f"{name}-data", f"{name}-storage"
    bucket_url = call("bucket_url", keys=ref(files, "credentials", BACKUP_READER), address=p.minio_api,
                      bucket=cfg.bucket.name)
    ready = {"postgres": [ref(data, "inits", pg_init)], "pitr": [ref(data, "inits", pg_init)],
             "mongodb": [ref(data, "inits", mongo_init)], "redis": [ref(data, "containers", cfg.redis.name)],
             "minio": [ref(storage, "containers", cfg.minio.name), ref(files)]}
    for job in p.backups:
        runner = f"{name}-{job.node}"
        steps.append(step(
            "backup", f"{backup_job_name(name, job.label)}-backup", stack=name, label=job.label, backup=cfg.backup,
            kind=job.kind, tool_image=job.source.image, runner=ref(runner, "ssh"), runner_ready=ready[job.kind],
            mounts=_backup_mounts(job, node_data_dir(name, job.node)), cluster_rpo=p.cluster_rpo,
            rpo_minutes=job.rpo_minutes,
            # The data node publishes its datastores on its private address only, so 127.0.0.1
            # is theirs only inside the server's own network namespace.
            source_service=job.source.name if job.kind != "minio" else "",
            scratch_limits=(job.source.memory_mb, job.source.cpus),
            mode="host" if job.kind == "minio" else "docker", source_name=f"{runner}-{job.source.name}",
            source_uri=bucket_url if job.uri is None else job.uri, environment=dict(job.environment),
            protect=p.production))
    # The edge collects every node's session records: its archive holds them all.
    steps.append(session_archive(name, cfg.backup, edge, protect=p.production))
    return tuple(steps)


def _backup_mounts(job, data_dir: str) -> tuple[str, ...]:
    """The host paths a backup job's tool container reads (read-only, at the same path): the
    redis job only the CA file its ``BACKUP_CA_CERT`` names, since the node's ``files``
    directory holds every datastore's TLS private key; the postgres and mongodb jobs name their
    CA in the URI (``sslrootcert``, ``tlsCAFile``) and keep the whole ``files`` directory."""
    cas = tuple(path for key, path in job.environment if key == "BACKUP_CA_CERT")
    return cas if job.kind == "redis" and cas else (f"{data_dir}/files",)
