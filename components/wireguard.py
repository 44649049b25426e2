"""The management network's WireGuard endpoints, as pure renderers: a host's ``wg0.conf`` and
the script section that installs Debian's ``wireguard-tools``, delivers the file through the
host-delivery primitive (checked by ``wg-quick strip``; a change of peers applied by ``wg
syncconf`` through the unit's reload, so it never drops the tunnel an operator or the deploy
runner is using; a change of the interface's own settings by a restart, proven by the address
on wg0) and keeps ``wg-quick@wg0`` enabled and running.

Every host a product reaches from outside (Pencom's edge node, KRO's droplet, GIV's ops
droplet, V-EdFinance's VPS) is one endpoint with its own address in the stack's management
network (``environment.management``); its SSH answers only from that network unless
break-glass is on. Pencom's internal nodes are reached through the edge's sshd (ProxyJump),
not routed: no forwarding or NAT on the edge, and every hop is a certificate login that sshd
logs with its key ID.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from components import hostsetup, tiers

if TYPE_CHECKING:
    import pulumi

INTERFACE = "wg0"
CONFIG_PATH = f"/etc/wireguard/{INTERFACE}.conf"
DEFAULT_LISTEN_PORT = 51820
KEY_BYTES = 32
"""A Curve25519 key: 32 bytes, written as 44 characters of base64 (wg(8))."""
KEEPALIVE_S = 25
"""A peer's keepalive, in seconds: under the 30 s or more most NAT gateways keep a UDP mapping
(wg(8), PersistentKeepalive: "a sensible interval ... would be 25 seconds")."""


def key_problem(value: str) -> str | None:
    """Why ``value`` is not a WireGuard key (base64 of 32 bytes, as ``wg genkey`` / ``wg pubkey``
    print it), or None."""
    text = value.strip()
    if len(text) != 44 or not text.endswith("="):
        return "is not a WireGuard key: 44 characters of base64 ending in '=' (`wg pubkey < private.key`)"
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        return "is not a WireGuard key: not base64 (`wg pubkey < private.key` prints one)"
    if len(raw) != KEY_BYTES:
        return f"is not a WireGuard key: {len(raw)} bytes, not {KEY_BYTES}"
    if not any(raw):
        # A placeholder: X25519 with a zero public key gives a zero shared secret, which
        # WireGuard refuses, so no handshake with it ever completes.
        return "is the all-zero key, a placeholder no device has (`wg pubkey < private.key` prints the real one)"
    return None


def public_key(private_key_b64: str) -> str:
    """The public half of a WireGuard private key (base64), as ``wg pubkey`` computes it: X25519
    with the key clamped (RFC 7748), which ``cryptography`` does on load."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = X25519PrivateKey.from_private_bytes(base64.b64decode(private_key_b64))
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


@dataclass(frozen=True)
class Peer:
    """An engineer's or the deploy runner's WireGuard key: ``name`` (a comment in the file),
    ``public_key`` (base64) and ``address``, its one address in the management network."""

    name: str
    public_key: str
    address: str


@dataclass(frozen=True)
class Endpoint:
    """One host's WireGuard endpoint: its ``address`` in the management ``network`` (a CIDR),
    the UDP ``listen_port`` and the ``peers`` it admits. Its private key is a generated secret
    (``random.RandomBytes`` in the host's component), never part of this value."""

    address: str
    network: str
    peers: tuple[Peer, ...]
    listen_port: int = DEFAULT_LISTEN_PORT

    def __post_init__(self) -> None:
        net = ipaddress.ip_network(self.network)
        if ipaddress.ip_address(self.address) not in net:
            raise ValueError(f"endpoint address {self.address} is outside {self.network}")


def inbound_rule(endpoint: Endpoint) -> tiers.InboundRule:
    """The endpoint's UDP port, open to the internet: WireGuard answers no packet that does not
    carry a peer's key (silent to scans), and peers roam between networks."""
    return tiers.InboundRule(endpoint.listen_port, "udp", tiers.WORLD_CIDRS, reason=tiers.WIREGUARD_REASON)


def render_wg_conf(endpoint: Endpoint, private_key: str) -> str:
    """``/etc/wireguard/wg0.conf`` for wg-quick(8): the interface's address with the network's
    prefix (so the kernel routes the whole management network to wg0), the port, the private
    key, and one ``[Peer]`` per peer admitting exactly its one address (``AllowedIPs`` /32 or
    /128: a peer cannot speak for another). ``private_key`` is the base64 key, rendered inside
    an apply (the file is a secret)."""
    prefix = ipaddress.ip_network(endpoint.network).prefixlen
    out = [textwrap.dedent(f"""\
        # Managed by the platform program (components/wireguard.py): the management network.
        [Interface]
        Address = {endpoint.address}/{prefix}
        ListenPort = {endpoint.listen_port}
        PrivateKey = {private_key}
        """)]
    for peer in endpoint.peers:
        bits = ipaddress.ip_address(peer.address).max_prefixlen
        out.append(f"\n# {peer.name}\n[Peer]\nPublicKey = {peer.public_key}\nAllowedIPs = {peer.address}/{bits}\n")
    return "".join(out)


WG_FUNCTIONS = r"""
# wg_up -- the tunnel answers (wg show) and wg0 carries exactly the Address of wg0.conf: the proof
# that the running tunnel is the delivered one (wg syncconf, the unit's reload, never changes it).
wg_up() {
  local want
  want="$(sed -n 's/^Address *= *//p' CONF | head -n 1)"
  wg show IFACE >/dev/null && [ -n "$want" ] \
    && ip -o addr show dev IFACE | awk '{print $4}' | grep -qxF "$want"
}

# wg_interface FILE -- FILE's [Interface] section less PrivateKey (wg syncconf applies a new key):
# the settings only a restart of the tunnel applies (Address, ListenPort, MTU, DNS, Table, Post*).
wg_interface() {
  sed -n '/^\[Interface\]/,/^\[Peer\]/p' "$1" 2>/dev/null | grep -v '^PrivateKey' || true
}

# wg_apply -- applies wg0.conf to a running tunnel: a reload (wg syncconf, sessions kept) when
# only peers changed, a restart when the [Interface] section did, each proven by wg_up within
# 30 s. With no pending copy the commit is re-applying the previous file after a failed apply:
# the tunnel is restarted on it. Hangups and broken pipes are ignored, so an operator's SSH
# session that rides the tunnel and drops with the restart does not stop the proof half-way.
wg_apply() {
  local saved action="try-restart"
  trap '' HUP PIPE
  saved="$(pending_path CONF)"
  if [ ! -e "$saved" ] && [ ! -e "$saved.absent" ]; then
    apply_unit restart wg-quick@IFACE 30 wg_up
    return
  fi
  if [ -e "$saved" ] && [ "$(wg_interface "$saved")" = "$(wg_interface CONF)" ]; then
    action="try-reload"
  fi
  apply_unit "$action" wg-quick@IFACE 30 wg_up
}
""".replace("CONF", CONFIG_PATH).replace("IFACE", INTERFACE)


def wireguard_section(endpoint: Endpoint, private_key: str) -> str:
    """Install wireguard-tools, deliver wg0.conf (0600, root; validated by ``wg-quick strip``,
    applied by ``wg_apply``: ``systemctl reload wg-quick@wg0``, i.e. ``wg syncconf``, which keeps
    existing sessions, when only peers changed; ``systemctl restart`` when the ``[Interface]``
    section changed, which syncconf ignores), and keep ``wg-quick@wg0`` enabled and proven by
    ``wg_up``: ``wg show wg0`` answers and wg0 carries the file's ``Address``. A running tunnel
    whose address is not the file's (a host that ran an earlier script, which only reloaded) is
    restarted on the file first.

    A kernel without WireGuard (a container-based VPS) gets Debian's ``wireguard-go``, which
    wg-quick uses when the kernel refuses the link; where there is no ``/dev/net/tun`` either
    (a container started without it; the rehearsal's boxes get it) the unit is reported skipped, as
    auditd is, instead of failing: such a host keeps SSH only under break-glass, and a deploy
    without it cannot reach the host at all, so the gap shows at once."""
    unit = f"wg-quick@{INTERFACE}"
    return "\n".join([
        "ensure_packages wireguard-tools",
        "wireguard_in_kernel() { [ -d /sys/module/wireguard ] || modprobe -q wireguard 2>/dev/null; }",
        "if ! wireguard_in_kernel; then",
        "ensure_packages wireguard-go",
        "fi",
        WG_FUNCTIONS.strip("\n"),
        hostsetup.directories_section([("/etc/wireguard", "0700", "root:root")]),
        f"if [ -f {CONFIG_PATH} ] && systemctl is-active --quiet {unit} && ! wg_up; then",
        f'  apply_unit restart {unit} 30 wg_up || exit 1',
        f'  note_change "{unit} restarted: wg0 did not carry the Address of {CONFIG_PATH}"',
        "fi",
        hostsetup.deliver_file(
            CONFIG_PATH, "0600", "root:root", render_wg_conf(endpoint, private_key),
            validate=f"wg-quick strip {CONFIG_PATH} >/dev/null", on_change="wg_apply"),
        "if wireguard_in_kernel || [ -c /dev/net/tun ]; then",
        f"  ensure_service_enabled {unit} wg_up",
        "else",
        f'  echo "skipped: {unit} (no WireGuard in this kernel and no /dev/net/tun: a container)"',
        "fi",
    ])


@dataclass(frozen=True)
class RemoteEndpoint:
    """An endpoint as a peer sees it (an entry of the stack output ``management``): ``name`` (the
    product, a comment), ``host`` and ``port`` it answers on (public), its ``address`` in the
    management network and its ``public_key`` (base64)."""

    name: str
    host: str
    port: int
    address: str
    public_key: str


def key_file_problem(path: str) -> str | None:
    """Why ``path`` cannot be a client's key file in ``PostUp`` (wg-quick runs it through bash,
    so only an absolute path of plain characters), or None."""
    if not re.fullmatch(r"/[A-Za-z0-9_./@+-]+", path):
        return "is not an absolute path of letters, digits and _./@+- (wg-quick runs PostUp through bash)"
    return None


def render_client_conf(peer: Peer, network: str, endpoints: Sequence[RemoteEndpoint],
                       key_file: str) -> str:
    """A peer's own wg-quick(8) file: its ``Address`` with the network's prefix (the kernel routes
    the management network, and only it, to the tunnel), and one ``[Peer]`` per endpoint that
    admits exactly the endpoint's address (/32: a tunnel carries no other traffic, and an
    endpoint cannot speak for another) with ``PersistentKeepalive = 25`` (a peer behind NAT
    stays reachable). The private key is not in it: ``PostUp`` loads it from ``key_file``
    (``wg set %i private-key``), which the peer made itself (``wg genkey``) and whose public
    half the stack file declares. Raises ValueError when ``key_file`` is not an absolute path
    of plain characters (wg-quick runs ``PostUp`` through bash) or an address is outside
    ``network``."""
    net = ipaddress.ip_network(network)
    problem = key_file_problem(key_file)
    if problem:
        raise ValueError(f"{key_file!r} {problem}")
    for address in (peer.address, *(e.address for e in endpoints)):
        if ipaddress.ip_address(address) not in net:
            raise ValueError(f"{address} is outside the management network {network}")
    out = [textwrap.dedent(f"""\
        # {peer.name} in the management network {network} (scripts/wg_client.py). The private key
        # stays on this device, in {key_file} (0600); its public half is {peer.public_key}.
        [Interface]
        Address = {peer.address}/{net.prefixlen}
        PostUp = wg set %i private-key {key_file}
        """)]
    for e in endpoints:
        host = f"[{e.host}]" if ":" in e.host else e.host
        bits = ipaddress.ip_address(e.address).max_prefixlen
        out.append(f"\n# {e.name}\n[Peer]\nPublicKey = {e.public_key}\nEndpoint = {host}:{e.port}\n"
                   f"AllowedIPs = {e.address}/{bits}\nPersistentKeepalive = {KEEPALIVE_S}\n")
    return "".join(out)


def management_network(name: str, *, network: str, listen_port: int, endpoints: dict[str, str],
                       break_glass: dict) -> "pulumi.ComponentResource":
    """Registers the stack's management network as a component (``platform:components:
    ManagementNetwork``, no children) so the policy pack can read it: its ``network``, the UDP
    ``listenPort``, each product's endpoint address and the ``breakGlass`` state (``enabled``,
    ``reason``, ``expires`` as YYYY-MM-DD or None)."""
    import pulumi

    props = {"network": network, "listenPort": listen_port, "endpoints": dict(endpoints),
             "breakGlass": dict(break_glass)}
    component = pulumi.ComponentResource("platform:components:ManagementNetwork", name, props)
    component.register_outputs(props)
    return component
