"""``DropletStack``: a DigitalOcean droplet that runs hardened containers behind TLS ingress."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi
import pulumi_digitalocean as do

from components import egress, hostsetup, tiers, wireguard
from components.containers import ContainerSpec, HealthCheck, Mount, PublishedPort
from components.dockerhost import DockerHost, HostBasis, Workload
from components.remote import SshTarget

# Inputs that replace a droplet when they change. They are set once from stable values and
# ignored after adoption, so routine changes never rebuild the host.
DROPLET_REPLACING_INPUTS = ("image", "region", "sshKeys", "userData", "vpcUuid", "monitoring")


@dataclass(frozen=True)
class DropletBackups:
    plan: str = "weekly"
    weekday: str = "SUN"
    hour: int = 4


@dataclass(frozen=True)
class DropletStackArgs:
    """Everything a droplet host needs, its containers and ingress included (``workload``)."""

    region: str
    """DigitalOcean region slug; changing it replaces the droplet."""
    size: str
    """Droplet size slug; a resize keeps the droplet (disk is not resized, so it can go back)."""
    image: str
    """Base image slug, an Ubuntu LTS; changing it replaces the droplet."""
    ssh_key_fingerprints: Sequence[str]
    """Keys installed for the first boot; copied to the deploy user by cloud-init."""
    vpc_id: pulumi.Input[str]
    """The product's VPC; the droplet's private interface and its database live there."""
    admin_cidrs: Sequence[str]
    """Public sources the DigitalOcean Firewall admits to SSH (break-glass). Never the world;
    empty only with ``wireguard`` (SSH then answers only through the management network)."""
    ssh_private_key: pulumi.Input[str]
    """Secret key of the deploy user, for remote commands."""
    tier: tiers.Tier = tiers.Tier.EDGE
    """Tier of the host's firewall; edge opens 80/443 to the world, nothing else is public."""
    workload_tiers: Sequence[tiers.Tier] = ()
    """Other tiers of the containers it runs (a single-host product runs app containers behind
    its edge nginx); each becomes a ``tier-<name>`` tag that database firewalls can trust."""
    tags: Sequence[str] = ()
    """Extra droplet tags; the tier tag is always added."""
    backups: Optional[DropletBackups] = field(default_factory=DropletBackups)
    """Provider backups (weekly by default); None turns them off."""
    project_id: Optional[pulumi.Input[str]] = None
    """DigitalOcean project that lists the droplet and its reserved IP."""
    adopt_droplet_id: Optional[str] = None
    """ID of an existing droplet to adopt instead of creating one (see README, Adoption)."""
    protect: bool = False
    """Protect the droplet from deletion and keep it if removed from the program (prod)."""
    registry_auth: Sequence = ()
    """Private registries' credentials for the Docker provider (``dockerhost.registry_auth``)."""
    reserved_ip: bool = True
    """A reserved IP keeps the public address across rebuilds; internal hosts do without."""
    directories: Sequence[tuple[str, str, str]] = ()
    """More directories as (path, mode, owner:group), e.g. data owned by an image's user."""
    egress: Optional[egress.EgressLock] = None
    """Locks the containers' egress (``egress.workload_lock``): their own bridge, their
    allow-lists and the exempt containers only. Its bridge name and subnet are the Docker
    network's, so setting it first replaces the network and its containers once. Unset: open."""
    access: Optional[hostsetup.AdminAccess] = None
    """Just-in-time SSH: sshd trusts the stack's SSH CA for the admin account
    (``hostsetup.AdminAccess``); unset, only the deploy key logs in."""
    workload: Optional[Workload] = None
    """What the droplet runs (``dockerhost.Workload``); unset: no container."""
    wireguard: Optional[wireguard.Endpoint] = None
    """The droplet is an endpoint of the management network (``components.wireguard``): its
    UDP port opens in the DigitalOcean Firewall, and SSH through the tunnel arrives on wg0,
    behind that firewall (which filters the public and VPC interfaces only)."""
    connect_address: Optional[str] = None
    """The address remote commands and the Docker provider use (the droplet's management
    address, the deploy runner being a peer); unset: the droplet's public IPv4 (break-glass)."""


class DropletStack(DockerHost):
    """A droplet in its VPC with a tier firewall, a reserved IP, idempotent host setup over SSH,
    and a Docker provider that manages its containers over SSH.

    Children: ``{name}-droplet``, ``{name}-firewall``, ``{name}-ip``, ``{name}-ip-assignment``,
    ``{name}-wg-key`` (with ``wireguard``), ``{name}-setup-<script>``,
    ``{name}-docker``, ``{name}-network``, ``{name}-docker-firewall``,
    then per container ``{name}-<service>-image`` and ``{name}-<service>``. Renaming any needs
    ``aliases``. The DOCKER-USER rules: a droplet publishes edge ports on all addresses and the
    others on loopback, and its DigitalOcean Firewall admits the sources; what is left for
    DOCKER-USER is the bridge guard: nothing enters a container bridge that Docker did not DNAT
    for a published port (``egress.render_docker_user_rules``), no container opens SSH, and with
    an egress lock the containers reach only their allow-lists.
    """

    droplet_id: pulumi.Output[str]
    public_ip: pulumi.Output[str]
    private_ip: pulumi.Output[str]

    def __init__(self, name: str, args: DropletStackArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        self._args = args
        super().__init__("platform:components:DropletStack", name, None, opts, args.workload)

    def _basis(self, name: str) -> HostBasis:
        args = self._args
        child = pulumi.ResourceOptions(parent=self)
        adopted = args.adopt_droplet_id is not None

        backup_policy = (do.DropletBackupPolicyArgs(plan=args.backups.plan,
                                                    weekday=args.backups.weekday,
                                                    hour=args.backups.hour)
                         if args.backups else None)
        self.droplet = do.Droplet(
            f"{name}-droplet",
            name=name,
            image=args.image,
            region=args.region,
            size=args.size,
            vpc_uuid=args.vpc_id,
            ssh_keys=list(args.ssh_key_fingerprints),
            monitoring=True,
            backups=args.backups is not None,
            backup_policy=backup_policy,
            user_data=hostsetup.render_cloud_init(),
            tags=sorted({f"tier-{args.tier.value}", *(f"tier-{t.value}" for t in args.workload_tiers),
                         *args.tags}),
            graceful_shutdown=True,
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=args.protect,
                retain_on_delete=args.protect,
                import_=args.adopt_droplet_id,
                # An adopted droplet was created with other user data and keys; those inputs
                # cannot change without a rebuild, so they are left as they are.
                ignore_changes=["userData", "sshKeys", "image"] if adopted else None,
            ),
        )
        self.droplet_id = self.droplet.id
        if not args.admin_cidrs and args.wireguard is None:
            raise ValueError(f"{name}: SSH needs admin_cidrs or a management endpoint (wireguard)")
        rules = tiers.inbound_rules(tiers.HostRole(
            tier=args.tier, ssh_cidrs=tuple(args.admin_cidrs) or (args.wireguard.network,)))
        if not args.admin_cidrs:
            # The tunnel's packets reach sshd on wg0, behind the cloud firewall: no public SSH.
            rules = [r for r in rules if r.port != tiers.SSH_PORT]
        if args.wireguard is not None:
            rules.append(wireguard.inbound_rule(args.wireguard))
        self.firewall = do.Firewall(
            f"{name}-firewall",
            name=f"{name}-{args.tier.value}",
            droplet_ids=[self.droplet.id.apply(int)],
            inbound_rules=[do.FirewallInboundRuleArgs(**r) for r in tiers.digitalocean_inbound(rules)],
            outbound_rules=[do.FirewallOutboundRuleArgs(**r) for r in tiers.DIGITALOCEAN_OUTBOUND],
            opts=child,
        )
        managed = [self.droplet.droplet_urn]
        self.public_ip = self.droplet.ipv4_address
        if args.reserved_ip:
            self.reserved_ip = do.ReservedIp(f"{name}-ip", region=args.region,
                                             opts=pulumi.ResourceOptions(parent=self,
                                                                         protect=args.protect))
            do.ReservedIpAssignment(f"{name}-ip-assignment", ip_address=self.reserved_ip.ip_address,
                                    droplet_id=self.droplet.id.apply(int), opts=child)
            managed.append(self.reserved_ip.reserved_ip_urn)
            self.public_ip = self.reserved_ip.ip_address
        if args.project_id is not None:
            do.ProjectResources(f"{name}-project-resources", project=args.project_id,
                                resources=managed, opts=child)
        self.private_ip = self.droplet.ipv4_address_private

        # Remote commands use the droplet's management address, or with break-glass its own
        # public address: it answers before the reserved IP is assigned, and the firewall (SSH
        # from admin CIDRs) is where the program runs from.
        connect = args.connect_address or self.droplet.ipv4_address
        data_dir = f"/srv/{name}"
        lock = args.egress
        if lock is not None and lock.locks_host:
            raise ValueError(f"{name}: a droplet's own egress is its DigitalOcean Firewall's; the lock takes no proxy_url")
        return HostBasis(
            ssh=SshTarget(host=connect, user=hostsetup.DEPLOY_USER,
                          private_key=args.ssh_private_key),
            docker_address=connect, data_dir=data_dir,
            scripts=hostsetup.host_baseline(
                sshd=hostsetup.SshdPolicy(),
                fail2ban_ignore=(*args.admin_cidrs, *([args.wireguard.network] if args.wireguard else [])),
                directories=[(data_dir, "0755", "deploy:deploy"), *args.directories],
                access=args.access,
                wireguard=self._wireguard_script(name, args.wireguard),
            ),
            after=[self.firewall], egress=lock, registries=args.registry_auth)

    def _docker_user_rules(self, containers: Sequence[ContainerSpec]) -> str:
        lock = self.egress
        return egress.render_docker_user_rules(
            published=[], rules=[], bridge=lock.bridge if lock else None,
            internal_cidr=lock.internal_cidr if lock else None,
            internal_peers=lock.internal_peers if lock else None,
            exempt_sources=[a for _, a in lock.exempt] if lock else (),
            allowed=lock.allowed_sources() if lock else (),
            own_networks=lock.own_bridges() if lock else ())

    def _outputs(self) -> dict:
        outputs = {"droplet_id": self.droplet_id, "public_ip": self.public_ip,
                   "private_ip": self.private_ip}
        if self.wireguard_public_key is not None:
            outputs["wireguardPublicKey"] = self.wireguard_public_key
        return outputs


__all__ = ["DropletStack", "DropletStackArgs", "DropletBackups", "DROPLET_REPLACING_INPUTS",
           "ContainerSpec", "HealthCheck", "Mount", "PublishedPort", "Workload"]
