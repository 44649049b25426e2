"""Pencom's stack settings: the config models (the boundary) and the constants the plan and
the rules share. No resources are created here."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import EmailStr, Field, field_validator

from components.containers import ContainerSpec
from components.monitoring import MonitoringConfig
from stacks.shared_config import BackupConfig, DnsConfig, RouteConfig, bootstrap_user_problem
from validation.fields import (ADMIN_PREFIX_MIN, BootstrapUser, Cidr, HostCidr, PrivateAddress, PrivateCidr,
                               PublicAddress, ResourceName, StrictModel, docker_subnet)

SSH_KEY_SECRET = "pencom_ssh_private_key"
CA_PATH = "/run/platform/ca.crt"
TLS_DIR = "/run/platform/tls"
MINIO_CA_PATH = "/run/platform/certs/CAs/ca.crt"
"""Where MinIO reads the CA (its ``--certs-dir``'s CAs)."""
PROXY_SERVICE = "egress-proxy"
BACKUP_READER = "backup"
"""The MinIO user the mirror backup reads with: every prefix, read-only."""
PORTS = {"postgres": 5432, "mongodb": 27017, "redis": 6379, "minio": 9000}
# The MinIO provider reaches the admin API through `ssh -L` to the storage node (see README).
MINIO_TUNNEL_HOST = "127.0.0.1"
MINIO_ROOT_USER = "pencom-admin"
# The redis image's own user and group (redis:*-alpine: uid 999, gid 1000). The program starts
# Redis with `sh -c` (for TLS and the password from the environment), so the image's entrypoint
# does not step down from root; without CAP_DAC_OVERRIDE root could not read its 0600 key.
REDIS_USER = "999:1000"
# Docker's default address pools: the edge node's containers reach the proxy from these.
DOCKER_POOLS = ("172.16.0.0/12", "192.168.0.0/16")


class NodeConfig(StrictModel):
    private_address: PrivateAddress = Field(description="address on the internal network")
    public_address: PublicAddress | None = Field(default=None, description="public address (edge node only)")
    ssh_port: int = Field(default=22, gt=0, lt=65536, description="SSH port")
    bootstrap_user: BootstrapUser = None

    @field_validator("bootstrap_user")
    @classmethod
    def _not_root_or_deploy(cls, value: str | None) -> str | None:
        problem = bootstrap_user_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class Nodes(StrictModel):
    edge: NodeConfig = Field(description="VPS 1: the only internet-facing node; the SSH bastion")
    app: NodeConfig = Field(description="VPS 2: the core services")
    data: NodeConfig = Field(description="VPS 3: Postgres, MongoDB, Redis")
    storage: NodeConfig = Field(description="VPS 4: MinIO")


class ServiceDatabase(StrictModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="database name")
    service: ResourceName = Field(description="service that owns it (its role or user is named after the service)")
    env: str = Field(default="", pattern=r"^([A-Z][A-Z0-9_]*)?$",
                     description="environment variable with the connection URL "
                                 "(default DATABASE_URL for Postgres, MONGODB_URI for MongoDB)")
    rpo_minutes: int = Field(default=5, ge=1, le=1440,
                             description="recovery point objective in minutes (Postgres: the WAL "
                                         "archive of the cluster ships at the strictest of its databases)")


class ReadWaiver(StrictModel):
    """A declared exception to the tier model: an edge service reading one database."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$", description="waiver name, shown in the plan and the UFW rule")
    service: ResourceName = Field(description="edge service that reads")
    database: str = Field(description="Postgres database it may read (and only read)")
    env: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$", description="environment variable with the read-only URL")
    reason: str = Field(min_length=10, description="why the exception exists and when it can go")


class BucketConsumerConfig(StrictModel):
    service: ResourceName = Field(description="app service that uses the bucket")
    prefixes: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*/$")]] = Field(
        min_length=1, description="key prefixes it may use, e.g. CERTIFICATES/ (a name and a slash)")
    write: bool = Field(default=True, description="read-write (default) or read-only")


class BucketConfig(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", description="MinIO bucket name")
    consumers: list[BucketConsumerConfig] = Field(min_length=1, description="services and their prefixes")
    noncurrent_version_days: int = Field(default=30, ge=1, le=3650, description="days old versions are kept")
    tunnel_port: int = Field(default=19000, gt=1024, lt=65536,
                             description="local port of the operator's SSH tunnel to MinIO's API")


class HttpsRoute(StrictModel):
    name: ResourceName = Field(description="provider, e.g. sendgrid")
    domains: list[str] = Field(min_length=1, description="domains; a leading dot allows subdomains")
    services: list[str] = Field(min_length=1, description="services allowed to reach them")


class DirectRouteConfig(StrictModel):
    name: ResourceName = Field(description="destination, e.g. oracle-ecrs")
    cidrs: list[Cidr] = Field(min_length=1, description="its addresses: at most one site wide (IPv4 /24, "
                              "IPv6 /48), since a broader route defeats the allow-list")

    @field_validator("cidrs")
    @classmethod
    def _narrow(cls, cidrs: list[str]) -> list[str]:
        for cidr in cidrs:
            network = ipaddress.ip_network(cidr)
            if network.prefixlen < ADMIN_PREFIX_MIN[network.version]:
                raise ValueError(f"{cidr} is broader than /{ADMIN_PREFIX_MIN[network.version]}: a direct "
                                 "route that wide bypasses the egress allow-list; list the destination's "
                                 "own addresses")
        return cidrs
    port: int = Field(gt=0, lt=65536, description="TCP port")
    services: list[ResourceName] = Field(min_length=1, description="app services that use it")




EDGE_SUBNET = docker_subnet(27, "the proxy, Alertmanager and the blackbox exporter get fixed addresses from its "
                            "tenth on, in its lower half")
NODE_SUBNET = docker_subnet(28, "Docker assigns the node's containers addresses in its upper half")


class NodeSubnets(StrictModel):
    """Fixed subnets of the internal nodes' Docker networks, one per node and apart, so a
    container address names one node: a route to a neighbour's container subnet is then
    unambiguous (and the rehearsal's matrix can probe one node's containers from another)."""

    app: NODE_SUBNET = Field(default="172.31.251.0/24", description="subnet of the app node's Docker network")
    data: NODE_SUBNET = Field(default="172.31.252.0/24", description="subnet of the data node's Docker network")
    storage: NODE_SUBNET = Field(default="172.31.253.0/24",
                                 description="subnet of the storage node's Docker network")


class EgressConfig(StrictModel):
    proxy: ContainerSpec = Field(description="the forward proxy (squid) on the edge node")
    https: list[HttpsRoute] = Field(description="HTTPS destinations per service")
    host_domains: list[str] = Field(min_length=1, description="what the nodes themselves reach "
                                    "through the proxy: package mirrors, registries, R2")
    direct: list[DirectRouteConfig] = Field(default_factory=list,
                                            description="non-HTTP destinations at fixed addresses")
    resolvers: list[HostCidr] = Field(min_length=1, description="DNS resolvers of the internal nodes, each "
                                      "one host (/32, /128): port 53 to a range would be a tunnel out")
    edge_subnet: EDGE_SUBNET = Field(default="172.31.250.0/24",
                              description="subnet of the edge node's Docker network, private IPv4, a /27 or larger; the proxy, Alertmanager "
                                          "and the blackbox exporter get fixed addresses in its lower half, "
                                          "the only containers there allowed to reach the internet directly")
    node_subnets: NodeSubnets = Field(default_factory=NodeSubnets,
                                      description="subnets of the app, data and storage nodes' Docker networks; "
                                                  "private IPv4, each a /28 or larger with room in its upper half for its "
                                                  "node's containers and Docker's gateway; apart from each other, "
                                                  "edge_subnet and internal_cidr")

    @field_validator("resolvers")
    @classmethod
    def _resolvers_once(cls, value: list) -> list:
        seen = [str(ipaddress.ip_network(str(v), strict=False)) for v in value]
        repeated = sorted({r for r in seen if seen.count(r) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} is listed twice; keep each resolver once")
        return value


class JwtConfig(StrictModel):
    users: list[ResourceName] = Field(min_length=1, description="services that get JWT_SECRET (employers, admins)")
    partners: list[ResourceName] = Field(min_length=1, description="services that get PFC_JWT_SECRET (PFC partners)")


class PencomConfig(StrictModel):
    """Settings of the Pencom product in one stack."""

    internal_cidr: PrivateCidr = Field(description="the internal network of the four nodes")
    nodes: Nodes = Field(description="the four VPS nodes")
    edge_services: list[ContainerSpec] = Field(min_length=1, description="api-gateway, external-gateway (tier edge)")
    app_services: list[ContainerSpec] = Field(min_length=1, description="services on the app node (tier app, "
                                              "with a port; it is published on the private address)")
    postgres: ContainerSpec = Field(description="Postgres container (data node); TLS is added")
    mongodb: ContainerSpec = Field(description="MongoDB container (data node); TLS is added")
    redis: ContainerSpec = Field(description="Redis container (data node); TLS is added")
    minio: ContainerSpec = Field(description="MinIO container (storage node); TLS is added")
    databases: list[ServiceDatabase] = Field(min_length=1, description="Postgres databases, one per service")
    mongo_databases: list[ServiceDatabase] = Field(min_length=1, description="MongoDB databases, one per service (at least one: the data node always runs MongoDB, and every datastore needs a backup)")
    redis_clients: list[ResourceName] = Field(description="services that get REDIS_URL")
    callers: dict[ResourceName, list[ResourceName]] = Field(
        default_factory=dict,
        description="app service -> the edge services that may call it over mutual TLS (each gets a "
                    "client certificate and <SERVICE>_SERVICE_URL); an app service not listed takes "
                    "every edge service, as the tier model allows (edge reaches app); [] lets no edge "
                    "service call it")
    read_waivers: list[ReadWaiver] = Field(default_factory=list, description="declared read-only exceptions")
    bucket: BucketConfig = Field(description="the MinIO bucket")
    jwt: JwtConfig = Field(description="who gets which JWT secret")
    egress: EgressConfig = Field(description="the egress allow-list")
    routes: list[RouteConfig] = Field(min_length=1, description="public hostname -> edge service")
    dns: DnsConfig | None = Field(default=None, description="where the hostnames are published; "
                                  "unset when PenCom manages the records")
    acme_email: EmailStr = Field(description="Let's Encrypt email")
    backup: BackupConfig = Field(description="off-site backups of every datastore and the bucket to R2")
    monitoring: MonitoringConfig = Field(
        default_factory=MonitoringConfig,
        description="Prometheus, Alertmanager, Grafana and the blackbox exporter on the edge node "
                    "(mgmt tier); node-exporter and cAdvisor on every node")



NODES = ("edge", "app", "data", "storage")
RESERVED_LABELS = ("redis", "files")
"""Backup jobs (and R2 buckets) the program adds besides one per database."""
