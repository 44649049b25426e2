"""``OnPremVps``: an existing server reached over SSH (directly or through a bastion), hardened
by idempotent scripts, with a UFW firewall derived from the tier model and containers run by the
Docker provider over SSH."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi
import pulumi_tls as tls

from components import egress, hostsetup, tiers, wireguard
from components.containers import ContainerSpec
from components.dockerhost import DockerHost, HostBasis, Workload
from components.remote import SshTarget, run_script


@dataclass(frozen=True)
class OnPremVpsArgs:
    address: str
    """Address the program connects to (public for internet-facing nodes, private behind a bastion)."""
    private_key: pulumi.Input[str]
    """Secret OpenSSH private key of the deploy user."""
    role: tiers.HostRole
    """Tier, SSH sources, service ports and peers: becomes the UFW rules."""
    bastion: Optional[SshTarget] = None
    """Jump host for nodes that are not internet-facing."""
    ssh_port: int = 22
    bootstrap_user: Optional[str] = None
    """An existing sudo user that accepts ``private_key`` (e.g. ``ubuntu``): the first script
    connects as it and creates the deploy user with that key's public half. It stays allowed in
    sshd so the script can run again when the key changes. Unset: the deploy user exists."""
    private_address: Optional[str] = None
    """Address non-edge containers publish on (the private interface); loopback when unset."""
    waivers: dict[str, str] = field(default_factory=dict)
    """Extra UFW rules' reason -> waiver name, visible in the plan and the policy report."""
    extra_rules: Sequence[tiers.InboundRule] = ()
    """Rules beyond the tier model (each must be a named waiver)."""
    directories: Sequence[tuple[str, str, str]] = ()
    """More directories as (path, mode, owner:group), e.g. data owned by an image's user."""
    permit_open: Sequence[str] = ()
    """``host:port`` targets SSH local forwarding may reach, e.g. an admin API the program
    reaches through a tunnel; nothing else can be forwarded on a non-edge node."""
    egress: Optional[egress.EgressLock] = None
    """Locks the containers' egress (and the host's, with a proxy) to the internal network and
    direct routes; unset leaves egress open."""
    registry_auth: Sequence = ()
    """Private registries' credentials for the Docker provider (``dockerhost.registry_auth``)."""
    denied_outbound: Sequence[hostsetup.OutboundRule] = ()
    """Flows the host itself may never open, even with open egress (UFW ``deny out``): a
    destination the tier model reserves for another node, such as Oracle ECRS."""
    access: Optional[hostsetup.AdminAccess] = None
    """Just-in-time SSH: sshd trusts the stack's SSH CA for the admin account
    (``hostsetup.AdminAccess``); unset, only the deploy key (and a bootstrap user) logs in."""
    after: Sequence[pulumi.Resource] = ()
    """Resources the host's first setup script waits for: with a host egress lock, the proxy
    container its apt and image pulls go through (apt fails while the proxy is not up)."""
    workload: Optional[Workload] = None
    """What the host runs (``dockerhost.Workload``); unset: no container."""
    wireguard: Optional[wireguard.Endpoint] = None
    """The host is an endpoint of the management network (``components.wireguard``): a
    generated private key, wg0.conf, ``wg-quick@wg0``, and UFW admitting its UDP port from
    anywhere. Its SSH sources (``role.ssh_cidrs``) are then the management network. Unset: no
    WireGuard (an internal node reached through the edge)."""


class OnPremVps(DockerHost):
    """Children: ``{name}-setup-user`` with a bootstrap user, ``{name}-setup-<script>`` (proxy
    when the host's egress is locked, ufw, wireguard with
    ``wireguard`` (and its key ``{name}-wg-key``), base, sshd, fail2ban, docker, dirs, sessions with
    ``access``), ``{name}-docker``, ``{name}-network``, ``{name}-docker-firewall`` (the published
    ports and locked egress filtered in DOCKER-USER, from the same rules UFW applies), then the
    workload's: per container ``{name}-<service>-image`` and ``{name}-<service>``, and each
    datastore init. Outputs: ``address``, ``tier``, ``privateAddress``."""

    def __init__(self, name: str, args: OnPremVpsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        self._args = args
        # Recorded so the plan and the tier diagram can tell the hosts apart.
        super().__init__("platform:components:OnPremVps", name, {
            "tier": args.role.tier.value, "address": args.address,
            "privateAddress": args.private_address or args.address}, opts, args.workload)

    def _basis(self, name: str) -> HostBasis:
        args = self._args
        unwaived = [r.reason for r in args.extra_rules if r.reason not in args.waivers]
        if unwaived:
            raise ValueError(f"{name}: rules outside the tier model need a named waiver: {unwaived}")
        self.address = args.address
        self.private_address = args.private_address
        self.tier = args.role.tier.value
        if args.bootstrap_user in ("root", hostsetup.DEPLOY_USER):
            raise ValueError(f"{name}: bootstrap_user {args.bootstrap_user!r}: use an existing sudo user other "
                             "than root (the baseline closes root login) and other than the deploy user")
        ssh = SshTarget(host=args.address, user=hostsetup.DEPLOY_USER,
                        private_key=args.private_key, port=args.ssh_port, bastion=args.bastion)
        data_dir = f"/srv/{name}"
        rules = tiers.inbound_rules(args.role) + list(args.extra_rules)
        if args.wireguard is not None:
            rules.append(wireguard.inbound_rule(args.wireguard))
        self.rules = rules
        lock = args.egress
        locks_host = lock is not None and lock.locks_host
        scripts = hostsetup.host_baseline(
            sshd=hostsetup.SshdPolicy(port=args.ssh_port,
                                      allow_users=(hostsetup.DEPLOY_USER,
                                                   *([args.bootstrap_user] if args.bootstrap_user else [])),
                                      allow_tcp_forwarding=args.role.tier is tiers.Tier.EDGE,
                                      permit_open=tuple(args.permit_open)),
            fail2ban_ignore=args.role.ssh_cidrs,
            directories=[(data_dir, "0755", "deploy:deploy"), *args.directories],
            firewall=hostsetup.ufw_section(rules, args.waivers, lock.outbound() if locks_host else None,
                                           args.denied_outbound),
            proxy=egress.host_proxy_section(lock.proxy_url) if locks_host else None,
            access=args.access,
            wireguard=self._wireguard_script(name, args.wireguard),
        )
        first: list[pulumi.Resource] = list(args.after)
        if args.bootstrap_user:
            public_key = tls.get_public_key_output(private_key_openssh=args.private_key).public_key_openssh
            first = [run_script(
                f"{name}-setup-user",
                SshTarget(host=args.address, user=args.bootstrap_user, private_key=args.private_key,
                          port=args.ssh_port, bastion=args.bastion),
                public_key.apply(lambda key: hostsetup.script(hostsetup.deploy_user_section(key.strip()))),
                parent=self, depends_on=first)]
        jump = []
        if args.bastion is not None:
            jump = ["-o", f"ProxyJump={args.bastion.user}@{args.bastion.host}:{args.bastion.port}"]
        return HostBasis(ssh=ssh, docker_address=args.address, data_dir=data_dir, scripts=scripts, after=first,
                         ssh_opts=jump, egress=lock, registries=args.registry_auth)

    def _docker_user_rules(self, containers: Sequence[ContainerSpec]) -> str:
        published = []
        for spec in containers:
            address = tiers.container_bind_address(spec.tier, self.private_address)
            if address != "0.0.0.0" and not address.startswith("127."):
                published += [(address, p.host_port) for p in spec.publish if not p.loopback]
        lock = self.egress
        return egress.render_docker_user_rules(
            published=published, rules=self.rules, bridge=lock.bridge if lock else None,
            internal_cidr=lock.internal_cidr if lock else None, direct=lock.direct if lock else (),
            exempt_sources=[address for _, address in lock.exempt] if lock else (),
            internal_peers=lock.internal_peers if lock else None,
            allowed=lock.allowed_sources() if lock else (),
            own_networks=lock.own_bridges() if lock else (),
            ssh_ports=(tiers.SSH_PORT, self.ssh.port))

    def _outputs(self) -> dict:
        # The policy pack's stack policies see a component's registered outputs under
        # `pulumi preview` (its inputs only offline), so the tier facts are outputs too.
        outputs = {"address": self.address, "tier": self.tier,
                   "privateAddress": self.private_address or self.address}
        if self.wireguard_public_key is not None:
            outputs["wireguardPublicKey"] = self.wireguard_public_key
        return outputs

