"""GIV's resources from its plan: the project and VPC, the three managed clusters, the Spaces
media bucket and its key, the App Platform app, the ops droplet (monitoring, backup runner)
with its off-site backups, and DigitalOcean's alerts."""

from __future__ import annotations

import pulumi
import pulumi_digitalocean as do

from components import tiers
from components.app_platform import AppPlatformApp, AppPlatformAppArgs, DatabaseAttachment
from components.database import ManagedDatabaseCluster, ManagedDatabaseClusterArgs, TrustedSourceInput
from components.do_monitoring import droplet_alerts, uptime_checks
from components.dockerhost import Workload
from components.droplet_stack import DropletBackups, DropletStack, DropletStackArgs
from components.monitoring import HostMonitoring
from components.service_files import HostFile, host_path_for
from stacks import management
from stacks.backups import provision_backup
from stacks.giv.config import SSH_KEY_SECRET, GivConfig
from stacks.giv.plan import BACKUP_SERVICE, MEDIA, plan
from stacks.product import Product, SecretResolver, host_monitoring, product_foundation
from stacks.wiring import Generated, ResourceValue


def build(ctx, cfg: GivConfig) -> dict:
    p = plan(cfg, ctx.environment)
    env, name, prod = ctx.environment, p.name, p.production
    product = Product("giv")
    child = pulumi.ResourceOptions(parent=product)
    secrets = SecretResolver(product, ctx.secret)

    project, vpc = product_foundation(product, name=name, label="GIV", production=prod,
                                      region=p.region, ip_range=cfg.vpc_ip_range)
    # The clusters admit the app and the ops droplet, which need the clusters' URIs and CAs first.
    app_id, resolve_app_id = pulumi.deferred_output()
    ops_id, resolve_ops_id = pulumi.deferred_output()
    sources = {"app": TrustedSourceInput(kind="app", value=app_id, tier=tiers.Tier.APP),
               "ops": TrustedSourceInput(kind="droplet", value=ops_id, tier=tiers.Tier.MGMT)}
    clusters = {}
    for c in p.clusters:
        section = getattr(cfg, c.config)
        clusters[c.resource] = ManagedDatabaseCluster(c.resource, ManagedDatabaseClusterArgs(
            engine=c.engine, version=section.version, size=section.size, node_count=section.node_count,
            region=p.region, vpc_id=vpc.id, trusted_sources=[sources[s] for s in c.admits],
            maintenance_day=section.maintenance_day,
            maintenance_hour=section.maintenance_hour, project_id=project.id, tags=list(p.tags),
            adopt_cluster_id=c.adopt_id, protect=prod, databases=list(c.databases), users=list(c.users)),
            opts=child)
    secrets.clusters = clusters

    media = p.media
    bucket = do.SpacesBucket(
        media.resource, name=media.bucket, region=media.region, acl="private",
        versioning=do.SpacesBucketVersioningArgs(enabled=True),
        lifecycle_rules=[do.SpacesBucketLifecycleRuleArgs(
            id="tidy", enabled=True, abort_incomplete_multipart_upload_days=1,
            noncurrent_version_expiration=do.SpacesBucketLifecycleRuleNoncurrentVersionExpirationArgs(
                days=cfg.media_bucket.noncurrent_version_days))],
        opts=pulumi.ResourceOptions(parent=product, protect=prod, retain_on_delete=prod,
                                    import_=f"{media.region},{media.bucket}" if cfg.adopt.media_bucket else None))
    do.SpacesBucketCorsConfiguration(
        f"{name}-media-cors", bucket=bucket.name, region=media.region,
        cors_rules=[do.SpacesBucketCorsConfigurationCorsRuleArgs(
            allowed_methods=["GET", "PUT", "POST", "HEAD"], allowed_origins=list(media.origins),
            allowed_headers=["*"], max_age_seconds=3000)],
        opts=child)
    media_key = do.SpacesKey(
        f"{name}-media-key", name=media.key_name,
        grants=[do.SpacesKeyGrantArgs(bucket=bucket.name, permission="readwrite")],
        opts=pulumi.ResourceOptions(parent=product, additional_secret_outputs=["secret_key"]))
    secrets.bucket_keys = {cfg.backend: (pulumi.Output.secret(media_key.access_key),
                                         pulumi.Output.secret(media_key.secret_key))}
    provided = {MEDIA: bucket, **clusters}

    def plain(value) -> pulumi.Input[str]:
        return getattr(provided[value.resource], value.attribute) if isinstance(value, ResourceValue) else value

    app = AppPlatformApp(f"{name}-app", AppPlatformAppArgs(
        name=cfg.app_name, region=cfg.app_region, components=cfg.components, zone=cfg.zone, vpc_id=vpc.id,
        databases=[DatabaseAttachment(c.attachment, c.resource, c.engine.upper()) for c in p.clusters],
        secret_env={c: values for c, service in p.env.items() if (values := secrets.env(service.secret))},
        extra_env={c: {k: plain(v) for k, v in service.plain} for c, service in p.env.items() if service.plain},
        alert_emails=env.alerts.emails, project_id=project.id, adopt_app_id=cfg.adopt.app_id,
    ), opts=child)
    resolve_app_id(app.app_id)

    ca_files = [HostFile(container_path=b.ca_file, content=clusters[b.cluster].ca_certificate) for b in p.backups]
    watch = HostMonitoring(specs=[], files={}, secret_env={})
    if cfg.monitoring:
        # It watches the ops droplet and the backups it runs, and probes the public domains.
        watch = host_monitoring(
            ctx, cfg.monitoring, data_dir=p.ops_data_dir, service_ports={},
            grafana_password=secrets.password(Generated(f"{name}-grafana-admin")),
            probes=[f"https://{d}" for d in p.domains], backup_jobs=list(p.backup_job_names))
    ops = DropletStack(p.ops, DropletStackArgs(
        region=p.region, size=cfg.ops_droplet.size, image="ubuntu-24-04-x64",
        ssh_key_fingerprints=cfg.ops_droplet.ssh_key_fingerprints, vpc_id=vpc.id,
        admin_cidrs=management.public_ssh_sources(env.management, env.admin_cidrs),
        wireguard=management.endpoint(env.management, "giv"),
        connect_address=management.connect_address(env.management, "giv", None),
        ssh_private_key=ctx.secret(SSH_KEY_SECRET), access=ctx.admin_access(),
        tier=tiers.Tier.MGMT, tags=list(p.tags), backups=DropletBackups() if prod else None,
        project_id=project.id, protect=prod, reserved_ip=False, directories=p.ops_directories, egress=p.ops_egress,
        workload=Workload(watch.specs, files={BACKUP_SERVICE: ca_files, **watch.files}, secret_env=watch.secret_env),
    ), opts=child)
    resolve_ops_id(ops.droplet_id)
    for b, ca_file in zip(p.backups, ca_files):
        if host_path_for(ops.data_dir, BACKUP_SERVICE, ca_file) != b.uri.ca_path:
            raise RuntimeError(f"{name}: the plan placed {b.ca_file} elsewhere than DropletStack")

    for b in p.backups:
        provision_backup(
            name, b.label, cfg.backup, kind=b.kind, tool_image=b.tool_image,
            mounts=(b.uri.ca_path.rsplit("/", 1)[0],), source_name=clusters[b.cluster].cluster_resource_name,
            source_uri=secrets.resolve(b.uri), runner=ops.ssh, runner_ready=ops.files_delivered,
            protect=prod, opts=child)

    destinations = ctx.alert_destinations()
    droplet_alerts(p.ops, [ops.droplet_id], destinations, product)
    uptime_checks(name, [f"https://{d}" for d in p.domains], destinations, product)
    outputs = {
        "app_id": app.app_id,
        "live_url": app.live_url,
        "media_bucket": bucket.name,
        "domains": [f"https://{d}" for d in p.domains],
        "wireguard": management.endpoint_output(env.management, "giv", ops.public_ip, ops.wireguard_public_key),
    }
    product.register_outputs(outputs)
    return outputs
