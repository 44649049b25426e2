"""KRO's resources from its plan: the project and VPC, the droplet with its containers behind
TLS ingress, the managed Postgres cluster, DNS, monitoring, the off-site backup and
DigitalOcean's alerts."""

from __future__ import annotations

import pulumi
import pulumi_digitalocean as do

from components import tiers
from components.database import (ConnectionPool, ManagedDatabaseCluster, ManagedDatabaseClusterArgs,
                                 TrustedSourceInput)
from components.dns import a_records
from components.do_monitoring import droplet_alerts, uptime_checks
from components.dockerhost import Workload
from components.droplet_stack import DropletBackups, DropletStack, DropletStackArgs
from components.ingress import Ingress, IngressRoute
from components.monitoring import HostMonitoring
from components.service_files import HostFile, host_path_for
from stacks import management, secret_keys
from stacks.backups import provision_backup
from stacks.kro.config import SSH_KEY_SECRET, KroConfig
from stacks.kro.plan import plan
from stacks.product import Product, SecretResolver, host_monitoring, merge_env, product_foundation
from stacks.wiring import Generated


def build(ctx, cfg: KroConfig) -> dict:
    p = plan(cfg, ctx.environment)
    env, name, prod = ctx.environment, p.name, p.production
    product = Product("kro")
    child = pulumi.ResourceOptions(parent=product)
    secrets = SecretResolver(product, ctx.secret)

    project, vpc = product_foundation(product, name=name, label="KRO", production=prod,
                                      region=p.region, ip_range=cfg.vpc_ip_range)
    droplet_id, resolve_droplet_id = pulumi.deferred_output()
    public_ip, resolve_public_ip = pulumi.deferred_output()
    db = p.database
    database = ManagedDatabaseCluster(db.cluster, ManagedDatabaseClusterArgs(
        engine="pg", version=cfg.database.version, size=cfg.database.size,
        node_count=cfg.database.node_count, region=p.region, vpc_id=vpc.id,
        trusted_sources=[TrustedSourceInput(kind="droplet", value=droplet_id, tier=tiers.Tier.APP)],
        maintenance_day=cfg.database.maintenance_day, maintenance_hour=cfg.database.maintenance_hour,
        databases=[db.database], users=[db.user],
        pools=[ConnectionPool(name=db.pool, database=db.database, user=db.user, size=cfg.database.pool_size)],
        project_id=project.id, tags=list(p.tags), adopt_cluster_id=cfg.adopt.database_cluster_id, protect=prod,
    ), opts=child)
    secrets.clusters = {db.cluster: database}

    if cfg.dns.provider == "digitalocean" and cfg.adopt.domain:
        do.Domain(f"{name}-domain", name=cfg.dns.zone,
                  opts=pulumi.ResourceOptions(parent=product, import_=cfg.dns.zone,
                                              protect=True, retain_on_delete=True))
    records = a_records(name, provider=cfg.dns.provider, zone=cfg.dns.zone, hosts=list(p.hosts),
                        address=public_ip, ttl=cfg.dns.ttl, parent=product,
                        cloudflare_zone_id=cfg.dns.cloudflare_zone_id)
    ports = {s.name: s.port for s in cfg.services}
    ingress = Ingress(
        routes=[IngressRoute(host=r.host, service=r.service, port=ports[r.service],
                             websocket=r.websocket) for r in cfg.routes],
        acme_email=cfg.acme_email, acme_staging=cfg.acme_staging, depends_on=records,
    )
    ca_file = HostFile(container_path=cfg.database_ca_path, content=database.ca_certificate)
    watch = HostMonitoring(specs=[], files={}, secret_env={})
    if cfg.monitoring:
        watch = host_monitoring(
            ctx, cfg.monitoring, data_dir=p.data_dir,
            grafana_password=secrets.password(Generated(f"{name}-grafana-admin")),
            service_ports=p.metrics_ports, probes=[f"https://{h}" for h in p.hosts],
            backup_jobs=list(p.backup_job_names))
    service_env = {s: values for s, service in p.env.items() if (values := secrets.env(service.secret))}
    host = DropletStack(name, DropletStackArgs(
        region=p.region, size=cfg.droplet.size, image=cfg.droplet.image,
        ssh_key_fingerprints=cfg.droplet.ssh_key_fingerprints, vpc_id=vpc.id,
        admin_cidrs=management.public_ssh_sources(env.management, env.admin_cidrs),
        wireguard=management.endpoint(env.management, "kro"),
        connect_address=management.connect_address(env.management, "kro", None),
        ssh_private_key=ctx.secret(SSH_KEY_SECRET), access=ctx.admin_access(),
        registry_auth=secret_keys.registry_auth("kro", [s.image for s in cfg.services]),
        tier=tiers.Tier.EDGE, workload_tiers=[tiers.Tier.APP], tags=list(p.tags),
        backups=DropletBackups() if cfg.droplet.backups else None,
        project_id=project.id, adopt_droplet_id=cfg.adopt.droplet_id, protect=prod,
        directories=p.directories, egress=p.egress,
        workload=Workload([*p.services, *watch.specs], secret_env=merge_env(service_env, watch.secret_env),
                          files={cfg.database_service: [ca_file], **watch.files}, ingress=ingress),
    ), opts=child)
    # The cluster admits the droplet, and the records point at its address, before it exists.
    resolve_droplet_id(host.droplet_id)
    resolve_public_ip(host.public_ip)
    if host.data_dir != p.data_dir or host_path_for(host.data_dir, cfg.database_service, ca_file) \
            != p.backup.ca_on_host:
        raise RuntimeError(f"{name}: the plan placed its files elsewhere than DropletStack")

    # The droplet is the backup runner; it reads the CA file the backend mounts.
    backup = provision_backup(
        name, p.backup.label, cfg.backup, kind="postgres", tool_image=p.backup.tool_image,
        mounts=(p.backup.ca_on_host.rsplit("/", 1)[0],), bucket_per_job=False,
        source_name=database.cluster_resource_name, source_uri=secrets.resolve(p.backup.uri),
        runner=host.ssh, runner_ready=host.files_delivered, protect=prod, opts=child)
    destinations = ctx.alert_destinations()
    droplet_alerts(name, [host.droplet_id], destinations, product)
    uptime_checks(name, [f"https://{h}" for h in p.hosts], destinations, product)
    outputs = {
        "public_ip": host.public_ip,
        "droplet_id": host.droplet_id,
        "database_host": database.private_host,
        "backup_bucket": backup.bucket.name,
        "urls": [f"https://{h}" for h in p.hosts],
        "wireguard": management.endpoint_output(env.management, "kro", host.public_ip, host.wireguard_public_key),
    }
    product.register_outputs(outputs)
    return outputs
