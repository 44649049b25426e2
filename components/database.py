"""``ManagedDatabaseCluster``: a DigitalOcean managed database in the product's VPC."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Sequence
from urllib.parse import quote

import pulumi
import pulumi_digitalocean as do

from components import tiers

Engine = Literal["pg", "mongodb", "valkey"]
DEFAULT_PORTS = {"pg": 25060, "mongodb": 27017, "valkey": 25061}
# Inputs that replace a cluster (and lose its data) when they change.
CLUSTER_REPLACING_INPUTS = ("engine", "region", "name", "privateNetworkUuid")


@dataclass(frozen=True)
class TrustedSourceInput:
    """A client the cluster admits; ``value`` may be an output (a droplet or app id)."""

    kind: str
    value: pulumi.Input[str]
    tier: tiers.Tier


@dataclass(frozen=True)
class ConnectionPool:
    name: str
    database: str
    user: str
    size: int = 10
    mode: Literal["transaction", "session", "statement"] = "transaction"


@dataclass(frozen=True)
class ManagedDatabaseClusterArgs:
    engine: Engine
    """pg, mongodb or valkey (DigitalOcean's managed Redis successor)."""
    version: str
    """Major version, e.g. "16" for Postgres, "7" for MongoDB, "8" for Valkey."""
    size: str
    """Node size slug such as db-s-1vcpu-2gb; a resize keeps the data."""
    node_count: int
    """Nodes (1-3); 2 or more gives a standby for failover."""
    region: str
    """Region slug; changing it replaces the cluster."""
    vpc_id: pulumi.Input[str]
    """Private network of the cluster; its clients connect over the private host."""
    trusted_sources: Sequence[TrustedSourceInput]
    """Who may connect: app and mgmt tier only. One DatabaseFirewall holds them all. A client
    that needs the cluster's URI before it exists (an App) is a ``pulumi.deferred_output()``
    for its id, resolved once it does."""
    maintenance_day: str = "sunday"
    """Day of the maintenance window."""
    maintenance_hour: str = "02:00"
    """Start (UTC) of the maintenance window."""
    databases: Sequence[str] = ()
    """Databases to create (pg and mongodb)."""
    users: Sequence[str] = ()
    """Users to create (pg and mongodb); each gets a generated password."""
    pools: Sequence[ConnectionPool] = ()
    """PgBouncer pools (pg only)."""
    project_id: Optional[pulumi.Input[str]] = None
    """DigitalOcean project that lists the cluster."""
    tags: Sequence[str] = ()
    adopt_cluster_id: Optional[str] = None
    """ID of an existing cluster to adopt; its settings must match the config exactly."""
    protect: bool = False
    """Protect the cluster, databases and users, and retain them if removed (prod)."""
    storage_size_mib: Optional[int] = None


class ManagedDatabaseCluster(pulumi.ComponentResource):
    """A managed cluster with exactly one firewall, its databases, users and pools, and the CA.

    Children: ``{name}-cluster``, ``{name}-firewall``, ``{name}-db-<db>``, ``{name}-user-<user>``,
    ``{name}-pool-<pool>``. Outputs: ``cluster_id``, ``private_host``, ``port``,
    ``ca_certificate``; ``uri(...)`` gives a secret, TLS-verifying connection URI.
    """

    def __init__(self, name: str, args: ManagedDatabaseClusterArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("platform:components:ManagedDatabaseCluster", name, None, opts)
        if args.engine == "valkey" and (args.databases or args.users):
            raise ValueError("valkey clusters have no databases or users to create")
        if args.pools and args.engine != "pg":
            raise ValueError("connection pools exist for pg only")
        self.engine = args.engine
        stateful = pulumi.ResourceOptions(parent=self, protect=args.protect,
                                          retain_on_delete=args.protect)
        self.cluster = do.DatabaseCluster(
            f"{name}-cluster",
            name=name,
            engine=args.engine,
            version=args.version,
            size=args.size,
            node_count=args.node_count,
            region=args.region,
            private_network_uuid=args.vpc_id,
            project_id=args.project_id,
            tags=list(args.tags) or None,
            maintenance_windows=[do.DatabaseClusterMaintenanceWindowArgs(
                day=args.maintenance_day, hour=args.maintenance_hour)],
            storage_size_mib=str(args.storage_size_mib) if args.storage_size_mib else None,
            opts=pulumi.ResourceOptions.merge(stateful, pulumi.ResourceOptions(
                import_=args.adopt_cluster_id)),
        )
        self.cluster_id = self.cluster.id
        self.cluster_resource_name = f"{name}-cluster"
        """The cluster resource's Pulumi name: what a backup names as its source."""
        self.firewall = self._admit(args.trusted_sources)
        self.databases = {
            db: do.DatabaseDb(f"{name}-db-{db}", cluster_id=self.cluster.id, name=db, opts=stateful)
            for db in args.databases
        }
        self.users = {
            user: do.DatabaseUser(f"{name}-user-{user}", cluster_id=self.cluster.id, name=user,
                                  opts=stateful)
            for user in args.users
        }
        for pool in args.pools:
            if pool.database not in self.databases or pool.user not in self.users:
                raise ValueError(f"{name}: pool {pool.name} needs database {pool.database} and "
                                 f"user {pool.user} declared on the cluster")
        self.pools = {
            pool.name: do.DatabaseConnectionPool(
                f"{name}-pool-{pool.name}", cluster_id=self.cluster.id, name=pool.name,
                db_name=pool.database, user=pool.user, size=pool.size, mode=pool.mode,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[
                    self.databases[pool.database], self.users[pool.user]]),
            )
            for pool in args.pools
        }
        self.private_host = self.cluster.private_host
        self.port = self.cluster.port
        self.ca_certificate = do.get_database_ca_output(cluster_id=self.cluster.id).certificate
        self.register_outputs({
            "cluster_id": self.cluster_id,
            "private_host": self.private_host,
            "port": self.port,
            "ca_certificate": self.ca_certificate,
        })

    def _admit(self, sources: Sequence[TrustedSourceInput]) -> do.DatabaseFirewall:
        """The cluster's one DatabaseFirewall, from tier-checked trusted sources."""
        if not sources:
            raise ValueError(f"{self.pulumi_resource_name}: a database firewall needs at least one trusted source")
        for source in sources:
            try:
                tiers.check_trusted_source(source.kind, source.value, source.tier)
            except ValueError as exc:
                raise ValueError(f"{self.pulumi_resource_name}: {exc}") from None
        return do.DatabaseFirewall(
            f"{self.pulumi_resource_name}-firewall",
            cluster_id=self.cluster.id,
            rules=[do.DatabaseFirewallRuleArgs(type=s.kind, value=s.value) for s in sources],
            opts=pulumi.ResourceOptions(parent=self),
        )

    def uri(self, *, ca_path: str, user: Optional[str] = None, database: Optional[str] = None,
            pool: Optional[str] = None) -> pulumi.Output[str]:
        """A secret URI on the private host that verifies the server against the cluster CA
        at ``ca_path`` (where the client finds the CA file)."""
        if self.engine == "valkey":
            return pulumi.Output.secret(pulumi.Output.all(
                self.cluster.password, self.private_host, self.port).apply(
                lambda a: f"rediss://default:{quote(a[0], safe='')}@{a[1]}:{a[2]}"))
        if user is None or database is None:
            raise ValueError("pg and mongodb URIs need a user and a database")
        db_user = self.users[user]
        if pool is not None:
            host, port, name = self.pools[pool].private_host, self.pools[pool].port, pool
        else:
            host, port, name = self.private_host, self.port, database
        if self.engine == "pg":
            return pulumi.Output.secret(pulumi.Output.all(db_user.password, host, port).apply(
                lambda a: f"postgresql://{quote(user)}:{quote(a[0], safe='')}@{a[1]}:{a[2]}/{name}"
                          f"?sslmode=verify-full&sslrootcert={ca_path}"))
        return pulumi.Output.secret(pulumi.Output.all(db_user.password, host).apply(
            lambda a: f"mongodb+srv://{quote(user)}:{quote(a[0], safe='')}@{a[1]}/{database}"
                      f"?tls=true&authSource=admin&tlsCAFile={ca_path}"))
