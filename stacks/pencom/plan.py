"""Pencom's plan values: everything the stack will hold, from the config alone, as plain values
and secret references (``stacks.wiring``); ``stacks.pencom.steps`` makes them a ``ProductPlan``
(``stacks.provision`` creates it). Tests read both without the mock engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from components import egress, monitoring, prometheus
from components.backupscripts import WAL_ROLE
from components.containers import ContainerSpec, PublishedPort
from components.ingress import NGINX_IMAGE
from components.mongo_init import check_mongo_names
from components.postgres_init import check_init_plan, hba_file_args
from stacks import management
from stacks.pencom.config import (CA_PATH, MINIO_CA_PATH, MINIO_ROOT_USER, PORTS, PROXY_SERVICE, REDIS_USER,
                                  RESERVED_LABELS, TLS_DIR, PencomConfig)
from stacks.pencom.mtls import METRICS_CALLER, TERMINATOR, MtlsPlan, callees, mtls_plan, mtls_spec, sidecar_name
from stacks.pencom.network import NodeNetwork, node_networks, proxy_routes, session_peer_name
from stacks.wiring import (WAL_LABEL, BucketKey, EnvMaps, Generated, SecretUrl, ServiceEnv, backup_job_name, host_file,
                           with_env)
from validation.rules import each

BUCKET_ENV = ("SPACES_ACCESS_KEY_ID", "SPACES_SECRET_ACCESS_KEY", "SPACES_ENDPOINT", "SPACES_BUCKET_NAME",
              "SPACES_REGION", "SPACES_FORCE_PATH_STYLE")


def role_name(service: str) -> str:
    """A service's Postgres role and MongoDB user: its name with ``_`` for ``-``."""
    return service.replace("-", "_")


def owner(user: str | None) -> str:
    """``uid:gid`` of a container user (``999`` -> ``999:999``; none: root)."""
    if not user:
        return "root:root"
    return user if ":" in user else f"{user}:{user}"


def node_data_dir(name: str, node: str) -> str:
    """A node's data directory, as ``OnPremVps`` names it (``stacks.provision`` checks they agree)."""
    return f"/srv/{name}-{node}"


def images(cfg: PencomConfig) -> list[str]:
    return [s.image for s in (*cfg.edge_services, *cfg.app_services)]


def proxy_env(cfg: PencomConfig) -> dict[str, dict[str, str]]:
    """HTTPS_PROXY for each service with an egress route: its own proxy port, by alias on the
    edge node and by the edge node's private address from the app node."""
    ports = egress.proxy_ports(proxy_routes(cfg))
    edge_names = {s.name for s in cfg.edge_services}
    no_proxy = ",".join(["localhost", "127.0.0.1", cfg.internal_cidr,
                         *sorted(s.name for s in [*cfg.edge_services, *cfg.app_services])])
    out = {}
    for service, port in ports.items():
        if service == egress.HOST_ROUTE:
            continue
        host = PROXY_SERVICE if service in edge_names else cfg.nodes.edge.private_address
        url = f"http://{host}:{port}"
        out[service] = {"HTTPS_PROXY": url, "HTTP_PROXY": url, "NO_PROXY": no_proxy}
    return out


def service_url_key(service: str) -> str:
    """The env key holding an app service's URL (``core`` -> ``CORE_SERVICE_URL``)."""
    return f"{service.upper().replace('-', '_')}_SERVICE_URL"


def service_urls(cfg: PencomConfig, caller: str) -> dict[str, str]:
    """How edge service ``caller`` reaches each app service it may call: plain HTTP to its own
    mutual-TLS sidecar on the edge node, on the service's port (``stacks.pencom.mtls``)."""
    ports = {s.name: s.port for s in cfg.app_services}
    return {service_url_key(s): f"http://{sidecar_name(caller)}:{ports[s]}" for s in callees(cfg)[caller]}


def backup_labels(cfg: PencomConfig) -> list[str]:
    """One backup job per database, then Redis and the bucket (``RESERVED_LABELS``)."""
    return [d.name for _, d in each(cfg.databases)] + [d.name for _, d in each(cfg.mongo_databases)] \
        + list(RESERVED_LABELS)


def backup_jobs(stack: str, cfg: PencomConfig) -> list[str]:
    """Every backup job's name, known before the jobs exist so monitoring can expect each one."""
    return [backup_job_name(stack, label) for label in backup_labels(cfg)]


def operator_ca_path(name: str) -> str:
    """Where the MinIO provider reads the internal CA on the operator's machine, relative to
    the project directory (the provider runs there). The program writes nothing: the operator
    writes the file from the stack output ``<product>.internalCaPem`` (see the README)."""
    return f"operator/{name}-internal-ca.pem"


@dataclass(frozen=True)
class BackupPlan:
    """One off-site backup job: ``kind`` is postgres, mongodb, redis, minio (the bucket, read
    with the backup reader's keys) or pitr (the cluster's WAL archive); ``node`` runs it."""

    label: str
    kind: str
    source: ContainerSpec
    node: str
    uri: Union[SecretUrl, None]
    """None for the bucket: its URL holds the backup reader's MinIO keys."""
    rpo_minutes: int | None
    environment: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class PencomPlan:
    """The stack's Pencom product: names, every container with its complete env map, the
    generated secrets the datastores use, the backup jobs and the monitoring targets."""

    name: str
    production: bool
    env: dict[str, ServiceEnv]
    edge: tuple[ContainerSpec, ...]
    app: tuple[ContainerSpec, ...]
    data: tuple[ContainerSpec, ...]
    storage: tuple[ContainerSpec, ...]
    datastore_env: dict[str, dict[str, Union[str, Generated]]]
    pg_databases: dict[str, str]
    pg_roles: dict[str, Generated]
    """Postgres role -> its password: one per database's service and per waiver's reader."""
    mongo_users: dict[str, Generated]
    """MongoDB database -> its user's password."""
    pg_readers: dict[str, list[str]] | None
    proxy_ports: dict[str, int]
    scrape: prometheus.ScrapeTargets
    backups: tuple[BackupPlan, ...]
    backup_job_names: tuple[str, ...]
    cluster_rpo: int
    minio_api: str
    nodes: dict[str, NodeNetwork]
    """edge, app, data, storage -> its role, firewall rules and egress lock"""
    mtls: MtlsPlan
    """the app node's mutual-TLS terminator and the edge's caller sidecars"""
    session_peer: str
    """the name on the session collector's certificate (the edge), which the other nodes check"""


def detail(cfg: PencomConfig, environment) -> PencomPlan:
    """The plan of ``cfg`` in ``environment`` (its ``name``, ``is_production`` and ``admin_cidrs``).

    Raises ``ValueError`` on what the config rules should have stopped first: an env key with
    two sources, an init plan Postgres or MongoDB would reject."""
    name = f"pencom-{environment.name}"
    n = cfg.nodes
    pg_databases = {d.name: role_name(d.service) for d in cfg.databases}
    pg_readers = {w.database: [role_name(w.service)] for w in cfg.read_waivers} or None
    # The init scripts' names are checked on plain values, before anything is registered: the
    # scripts are rendered inside applies, which `pulumi preview` does not run.
    check_init_plan(pg_databases, [role_name(s) for s in [*(d.service for d in cfg.databases),
                                                           *(w.service for w in cfg.read_waivers)]],
                    readers=pg_readers)
    check_mongo_names({d.name: role_name(d.service) for d in cfg.mongo_databases})
    ports = egress.proxy_ports(proxy_routes(cfg))
    minio_api = f"{n.storage.private_address}:{PORTS['minio']}"
    data_host = n.data.private_address
    services = [*cfg.edge_services, *cfg.app_services]
    pg_role = {d.service: Generated(f"{name}-pg-{d.service}") for d in cfg.databases}
    pg_role |= {w.service: Generated(f"{name}-pg-{w.service}-reader") for w in cfg.read_waivers}
    mongo_user = {d.name: Generated(f"{name}-mongo-{d.name.replace('_', '-')}") for d in cfg.mongo_databases}
    redis_password = Generated(f"{name}-redis-password")

    env = EnvMaps()
    for spec in services:
        env.user(spec)
    for spec in services:
        env.secret(spec.name, {"INTERNAL_API_KEY": Generated(f"{name}-internal-api-key", 48)}, "the internal API key")
    for service in cfg.jwt.users:
        env.secret(service, {"JWT_SECRET": Generated(f"{name}-jwt-users", 64)}, "jwt.users")
    for service in cfg.jwt.partners:
        env.secret(service, {"PFC_JWT_SECRET": Generated(f"{name}-jwt-partners", 64)}, "jwt.partners")
    tls_query = f"sslmode=verify-full&sslrootcert={CA_PATH}"
    for d in cfg.databases:
        env.secret(d.service, {d.env or "DATABASE_URL": SecretUrl(
            f"postgresql://{role_name(d.service)}:{{pw}}@{data_host}:5432/{d.name}?{tls_query}",
            pg_role[d.service])}, f"databases ({d.name})")
    for w in cfg.read_waivers:
        env.secret(w.service, {w.env: SecretUrl(
            f"postgresql://{role_name(w.service)}:{{pw}}@{data_host}:5432/{w.database}?{tls_query}",
            pg_role[w.service])}, f"read_waivers ({w.name})")
    for d in cfg.mongo_databases:
        env.secret(d.service, {d.env or "MONGODB_URI": SecretUrl(
            f"mongodb://{role_name(d.service)}:{{pw}}@{data_host}:27017/{d.name}"
            f"?authSource={d.name}&tls=true&tlsCAFile={CA_PATH}", mongo_user[d.name])}, f"mongo_databases ({d.name})")
    for service in cfg.redis_clients:
        env.secret(service, {"REDIS_URL": SecretUrl(f"rediss://default:{{pw}}@{data_host}:6379", redis_password)},
                   "redis_clients")
    for c in cfg.bucket.consumers:
        env.secret(c.service, {"SPACES_ACCESS_KEY_ID": BucketKey(c.service, "access"),
                               "SPACES_SECRET_ACCESS_KEY": BucketKey(c.service, "secret")}, "bucket.consumers")
    for spec in services:
        env.plain(spec.name, {"NODE_EXTRA_CA_CERTS": CA_PATH}, "the internal CA")
    for spec in cfg.edge_services:
        if urls := service_urls(cfg, spec.name):
            env.plain(spec.name, urls, "the app services' URLs")
    for c in cfg.bucket.consumers:
        env.plain(c.service, {"SPACES_ENDPOINT": f"https://{minio_api}", "SPACES_BUCKET_NAME": cfg.bucket.name,
                              "SPACES_REGION": "us-east-1", "SPACES_FORCE_PATH_STYLE": "true"}, "bucket.consumers")
    for service, values in proxy_env(cfg).items():
        env.plain(service, values, "the egress proxy")
    env_maps = env.freeze()

    mon = cfg.monitoring
    edge_names = {s.name for s in cfg.edge_services}
    internal = (n.app.private_address, n.data.private_address, n.storage.private_address)
    scrape = prometheus.ScrapeTargets(
        node=[f"node-exporter:{monitoring.NODE_EXPORTER_PORT}"]
        + [f"{a}:{monitoring.NODE_EXPORTER_PORT}" for a in internal],
        cadvisor=[f"cadvisor:{monitoring.CADVISOR_PORT}"] + [f"{a}:{monitoring.CADVISOR_PORT}" for a in internal],
        # The app services' metrics cross hosts: through Prometheus' own mutual-TLS sidecar.
        services={s.name: [f"{s.name}:{s.port}" if s.name in edge_names else f"{sidecar_name(METRICS_CALLER)}:{s.port}"]
                  for s in services if s.name in mon.metrics_services},
        probes=[f"https://{r.host}" for r in cfg.routes])

    def published(port: int) -> list[PublishedPort]:
        return [PublishedPort(host_port=port, container_port=port)]

    proxy = cfg.egress.proxy.model_copy(update={
        "publish": [PublishedPort(host_port=p, container_port=p) for p in sorted(ports.values())]})
    mt = mtls_plan(cfg, name)
    edge = (*(with_env(s, env_maps.get(s.name)) for s in cfg.edge_services), proxy,
            *(mtls_spec(c.name, NGINX_IMAGE) for c in mt.sidecars),
            *monitoring.server_specs(mon, node_data_dir(name, "edge")), *monitoring.exporter_specs(mon, publish=False))
    # The app services publish nothing: other hosts reach them through the terminator only.
    app = (*(with_env(s, env_maps.get(s.name)) for s in cfg.app_services),
           mtls_spec(TERMINATOR, NGINX_IMAGE, publish=[published(p)[0] for p in mt.ports]),
           *monitoring.exporter_specs(mon, publish=True))
    data = (
        cfg.postgres.model_copy(update={
            "publish": published(5432),
            "command": ["postgres", "-c", "ssl=on", "-c", f"ssl_cert_file={TLS_DIR}/server.crt",
                        "-c", f"ssl_key_file={TLS_DIR}/server.key", "-c", "ssl_min_protocol_version=TLSv1.2",
                        "-c", "listen_addresses=*", *hba_file_args()]}),
        cfg.mongodb.model_copy(update={
            "publish": published(27017),
            "command": ["mongod", "--auth", "--bind_ip_all", "--tlsMode", "requireTLS",
                        "--tlsCertificateKeyFile", f"{TLS_DIR}/mongodb.pem"]}),
        cfg.redis.model_copy(update={
            "user": cfg.redis.user or REDIS_USER,
            "publish": published(6379),
            "command": ["sh", "-c", "exec redis-server --port 0 --tls-port 6379 "
                        f"--tls-cert-file {TLS_DIR}/server.crt --tls-key-file {TLS_DIR}/redis.key "
                        f"--tls-ca-cert-file {CA_PATH} --tls-auth-clients no "
                        '--requirepass "$REDIS_PASSWORD" --appendonly yes']}),
        *monitoring.exporter_specs(mon, publish=True))
    storage = (cfg.minio.model_copy(update={
        "publish": published(9000),
        "command": ["server", "/data", "--address", ":9000", "--console-address", "127.0.0.1:9001",
                    "--certs-dir", "/run/platform/certs"]}), *monitoring.exporter_specs(mon, publish=True))
    datastore_env = {
        cfg.postgres.name: {"POSTGRES_PASSWORD": Generated(f"{name}-pg-superuser")},
        cfg.mongodb.name: {"MONGO_INITDB_ROOT_USERNAME": "root",
                           "MONGO_INITDB_ROOT_PASSWORD": Generated(f"{name}-mongo-root")},
        cfg.redis.name: {"REDIS_PASSWORD": redis_password},
        cfg.minio.name: {"MINIO_ROOT_USER": MINIO_ROOT_USER, "MINIO_ROOT_PASSWORD": Generated(f"{name}-minio-root", 40)},
    }

    # The data node runs its datastores' backups over loopback, the storage node the bucket's;
    # their own traffic to R2 leaves through the edge's proxy.
    runner = (("HTTPS_PROXY", f"http://{n.edge.private_address}:{ports[egress.HOST_ROUTE]}"),
              ("NO_PROXY", f"localhost,127.0.0.1,{cfg.internal_cidr}"))
    data_dir = node_data_dir(name, "data")
    pg_ca, mongo_ca = host_file(data_dir, cfg.postgres.name, CA_PATH), host_file(data_dir, cfg.mongodb.name, CA_PATH)
    rpo = {d.name: d.rpo_minutes for d in cfg.databases}
    backups = [BackupPlan(d.name, "postgres", cfg.postgres, "data", SecretUrl(
        f"postgresql://{role_name(d.service)}:{{pw}}@127.0.0.1:5432/{d.name}"
        f"?sslmode=verify-full&sslrootcert={pg_ca}", pg_role[d.service]), rpo[d.name], runner)
        for d in cfg.databases]
    backups += [BackupPlan(d.name, "mongodb", cfg.mongodb, "data", SecretUrl(
        f"mongodb://{role_name(d.service)}:{{pw}}@127.0.0.1:27017/{d.name}"
        f"?authSource={d.name}&tls=true&tlsCAFile={mongo_ca}", mongo_user[d.name]), None, runner)
        for d in cfg.mongo_databases]
    backups.append(BackupPlan(
        "redis", "redis", cfg.redis, "data", SecretUrl("rediss://default:{pw}@127.0.0.1:6379", redis_password),
        None, (*runner, ("BACKUP_CA_CERT", host_file(data_dir, cfg.redis.name, CA_PATH)))))
    backups.append(BackupPlan(
        "files", "minio", cfg.minio, "storage", None, None,
        (*runner, ("RCLONE_CA_CERT", host_file(node_data_dir(name, "storage"), cfg.minio.name, MINIO_CA_PATH)))))
    # Point-in-time recovery of the cluster: one WAL archive, at the strictest RPO of its databases.
    cluster_rpo = min(d.rpo_minutes for d in cfg.databases)
    backups.append(BackupPlan(WAL_LABEL, "pitr", cfg.postgres, "data", SecretUrl(
        f"postgresql://{WAL_ROLE}:{{pw}}@127.0.0.1:5432/postgres", Generated(f"{name}-pg-wal")), cluster_rpo, runner))
    return PencomPlan(
        name=name, production=environment.is_production, env=env_maps, edge=edge, app=app, data=data,
        storage=storage, datastore_env=datastore_env, pg_databases=pg_databases,
        pg_roles={role_name(s): ref for s, ref in pg_role.items()}, mongo_users=mongo_user, pg_readers=pg_readers,
        proxy_ports=ports, scrape=scrape, backups=tuple(backups), backup_job_names=tuple(backup_jobs(name, cfg)),
        cluster_rpo=cluster_rpo, minio_api=minio_api,
        # The edge's SSH answers from the management network (and admin_cidrs under break-glass);
        # the internal nodes' from the edge, their jump host.
        nodes=node_networks(cfg, management.ssh_sources(environment.management, environment.admin_cidrs)),
        session_peer=session_peer_name(name), mtls=mt)

