"""The kinds a plan may name (``stacks.plan``): ``STEPS``, what a ``Step`` creates (called
with the provisioner, the step's name and its resolved args), and ``VALUES``, what a ``Call``
computes (called with the provisioner and its resolved args). Options of a plain resource
(``protect``, ``retain_on_delete``, ``import_``, ``additional_secret_outputs``) are args of
its step; every resource's parent is the product's root component."""

from __future__ import annotations

from typing import Any, Callable

import pulumi
import pulumi_digitalocean as do
import pulumi_minio as minio

from components.app_platform import AppPlatformApp, AppPlatformAppArgs, DatabaseAttachment
from components.backupscripts import replication_role_sql
from components.database import (ConnectionPool, ManagedDatabaseCluster, ManagedDatabaseClusterArgs,
                                 TrustedSourceInput)
from components.dns import a_records
from components.do_monitoring import droplet_alerts, uptime_checks
from components.dockerhost import DatastoreInit, SessionCollector, Workload
from components.droplet_stack import DropletBackups, DropletStack, DropletStackArgs
from components.host_containers import datastore_init
from components.ingress import Ingress
from components.internal_ca import ClientRequest, InternalCa, ServerRequest
from components.minio_bucket import MinioBucket, MinioBucketArgs, MinioConsumer
from components.mongo_init import render_mongo_init_js
from components.onprem import OnPremVps, OnPremVpsArgs
from components.postgres_init import render_init_sql
from components.session_archive import SessionArchive, SessionArchiveArgs
from stacks import management, secret_keys
from stacks.backups import provision_backup

OPTIONS = ("protect", "retain_on_delete", "import_", "additional_secret_outputs")
RESOURCES = {"do.Project": do.Project, "do.Vpc": do.Vpc, "do.Domain": do.Domain, "do.SpacesBucket": do.SpacesBucket,
             "do.SpacesBucketCorsConfiguration": do.SpacesBucketCorsConfiguration, "do.SpacesKey": do.SpacesKey,
             "minio.Provider": minio.Provider}


def _resource(type_: str) -> Callable[..., Any]:
    def create(p, step_name: str, /, **args):
        options = {k: args.pop(k) for k in OPTIONS if k in args}
        return RESOURCES[type_](step_name, **args, opts=pulumi.ResourceOptions(parent=p.product, **options))
    return create


def _component(component, args_class=None) -> Callable[..., Any]:
    def create(p, step_name: str, /, **args):
        if args_class is None:
            return component(step_name, **args, opts=p.child)
        return component(step_name, args_class(**args), opts=p.child)
    return create


def _init_sql(p, databases, passwords, wal_password, extensions=(), readers=None) -> pulumi.Output[str]:
    """A Postgres init script (``postgres_init.render_init_sql``) with the WAL archiver's role."""
    return pulumi.Output.all(pulumi.Output.all(**passwords), wal_password).apply(
        lambda a: render_init_sql(databases, a[0], extensions, readers=readers) + replication_role_sql(a[1]))


def _mongo_init_js(p, users, passwords) -> pulumi.Output[str]:
    """``users``: database -> user; ``passwords``: database -> its user's password."""
    return pulumi.Output.all(**passwords).apply(
        lambda pws: render_mongo_init_js({db: (user, pws[db]) for db, user in users.items()}))


def _pem_bundle(p, cert, key) -> pulumi.Output[str]:
    """A certificate and its key in one secret PEM file (MongoDB's ``--tlsCertificateKeyFile``)."""
    return pulumi.Output.secret(pulumi.Output.all(cert, key).apply(lambda parts: parts[0].rstrip("\n") + "\n" + parts[1]))


def _bucket_url(p, keys, address, bucket) -> pulumi.Output[str]:
    """``https://<access>:<secret>@<address>/<bucket>``, secret (``keys``: (access, secret))."""
    return pulumi.Output.secret(pulumi.Output.all(*keys).apply(lambda k: f"https://{k[0]}:{k[1]}@{address}/{bucket}"))


STEPS: dict[str, Callable[..., Any]] = {
    **{type_: _resource(type_) for type_ in RESOURCES},
    "managed_cluster": _component(ManagedDatabaseCluster, ManagedDatabaseClusterArgs),
    "droplet_host": _component(DropletStack, DropletStackArgs),
    "vps_host": _component(OnPremVps, OnPremVpsArgs),
    "app_platform": _component(AppPlatformApp, AppPlatformAppArgs),
    "internal_ca": _component(InternalCa),
    "minio_bucket": _component(MinioBucket, MinioBucketArgs),
    "session_archive": _component(SessionArchive, SessionArchiveArgs),
    # Functions registering several resources, named from ``prefix``.
    "a_records": lambda p, name, prefix, **args: a_records(prefix, parent=p.product, **args),
    "droplet_alerts": lambda p, name, prefix, droplet_ids, destinations: droplet_alerts(
        prefix, droplet_ids, destinations, p.product),
    "uptime_checks": lambda p, name, prefix, urls, destinations: uptime_checks(prefix, urls, destinations, p.product),
    "backup": lambda p, name, stack, label, **args: provision_backup(stack, label, opts=p.child, **args),
    "datastore_init": lambda p, name, **args: datastore_init(name, parent=p.product, **args),
}

VALUES: dict[str, Callable[..., Any]] = {
    "admin_access": lambda p: p.ctx.admin_access(),
    "alert_destinations": lambda p: p.ctx.alert_destinations(),
    "registry_auth": lambda p, product, images: secret_keys.registry_auth(product, images),
    "wireguard_output": lambda p, **args: management.endpoint_output(**args),
    "secret": lambda p, value: pulumi.Output.secret(value),
    "init_sql": _init_sql,
    "mongo_init_js": _mongo_init_js,
    "pem_bundle": _pem_bundle,
    "bucket_url": _bucket_url,
    # Args classes of modules a plan may not import (they import a provider SDK).
    **{cls.__name__: (lambda cls: lambda p, **args: cls(**args))(cls) for cls in (
        TrustedSourceInput, ConnectionPool, DropletBackups, Workload, Ingress, DatabaseAttachment, MinioConsumer,
        ServerRequest, ClientRequest, DatastoreInit, SessionCollector, do.SpacesBucketVersioningArgs,
        do.SpacesBucketLifecycleRuleArgs, do.SpacesBucketLifecycleRuleNoncurrentVersionExpirationArgs,
        do.SpacesBucketCorsConfigurationCorsRuleArgs, do.SpacesKeyGrantArgs)},
}
