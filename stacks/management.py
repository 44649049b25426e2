"""The stack's management plane (``environment.management``): the WireGuard network every
host's SSH answers from, its peers (engineers, the deploy runner), and break-glass, the one
documented way to admit SSH from ``admin_cidrs`` instead. Models (the boundary), their rules,
and the plain values the products build from (``ssh_sources``, ``endpoint``, ``connect_address``).

Each product's entry host is an endpoint with a fixed address in the network
(``GATEWAY_OFFSETS``): Pencom's edge node (its internal nodes are reached through it), KRO's
droplet, GIV's ops droplet, V-EdFinance's VPS. Products stay independent: a stack that holds
one product still has its own endpoint, and no product's SSH depends on another's host.
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import Iterator

from pydantic import Field, field_validator

from components import wireguard
from stacks.production import is_production_name
from validation.fields import IsoDate, PrivateAddress, PrivateCidr, ResourceName, StrictModel
from validation.rules import Finding, RuleContext, each, rule

GATEWAY_OFFSETS = {"kro": 1, "giv": 2, "pencom": 3, "vedfinance": 4}
"""Each product's endpoint address: the network's address plus this offset, stable whatever the
stack holds (an engineer's client config does not change when a product is added)."""
RESERVED_ADDRESSES = 16
"""The network's first 16 addresses are the endpoints'; peers take addresses from there on."""
BREAK_GLASS_MAX_DAYS = 7
"""In production, break-glass expires within a week of the day it is written."""


class WireGuardPeer(StrictModel):
    """One peer of the management network: an engineer's device or the deploy runner."""

    name: ResourceName = Field(description="who it is, e.g. alice-laptop or deploy-runner (a comment in wg0.conf)")
    public_key: str = Field(description="its WireGuard public key (`wg pubkey < private.key`: 44 characters "
                                        "of base64); the private key never leaves the device")
    address: PrivateAddress = Field(description="its one address in management.network, at or above the "
                                                "network's 17th address (the first 16 are the endpoints')")

    @field_validator("public_key")
    @classmethod
    def _key(cls, value: str) -> str:
        problem = wireguard.key_problem(value)
        if problem:
            raise ValueError(problem)
        return value.strip()


class BreakGlass(StrictModel):
    """SSH from ``environment.admin_cidrs`` on every host, besides the management network: for
    the first deploy of a host (its WireGuard endpoint does not exist yet) and for an outage of
    the management network. The deploy runner then connects to the hosts' public addresses."""

    enabled: bool = Field(default=False, description="admit SSH from admin_cidrs on every host (default off)")
    reason: str | None = Field(default=None, min_length=10,
                               description="why (a ticket or incident); required when enabled")
    expires: IsoDate | None = Field(
        default=None, description="the last day it may stay on (YYYY-MM-DD); required when enabled in "
                                  f"production, at most {BREAK_GLASS_MAX_DAYS} days ahead")


class Management(StrictModel):
    """The management network: WireGuard on each product's entry host, SSH only from it."""

    network: PrivateCidr = Field(default="10.99.0.0/24",
                                 description="the WireGuard network (IPv4, /16 to /27); each stack its own, apart "
                                             "from every other network of the stack")
    listen_port: int = Field(default=wireguard.DEFAULT_LISTEN_PORT, gt=1023, lt=65536,
                             description="UDP port every endpoint listens on")
    peers: list[WireGuardPeer] = Field(default_factory=list,
                                       description="who may reach SSH: engineers' devices and the deploy runner; "
                                                   "a certificate from the SSH CA is still needed to log in")
    break_glass: BreakGlass = Field(default_factory=BreakGlass,
                                    description="SSH from admin_cidrs as well (off by default; never in "
                                                "committed production stack files)")


def network_fits(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """Whether ``net`` can be the management network: IPv4, /16 to /27. A /28 holds the 16
    endpoint addresses and nothing else: no peer would fit."""
    return net.version == 4 and 16 <= net.prefixlen <= 27


@rule(Management)
def _network(m: Management, ctx: RuleContext) -> Iterator[Finding]:
    net = ipaddress.ip_network(m.network)
    if not network_fits(net):
        yield Finding(("network",), f"{m.network}: use an IPv4 network from /16 to /27 (room for the "
                      f"{RESERVED_ADDRESSES} endpoint addresses and the peers)")


@rule(Management)
def _peers(m: Management, ctx: RuleContext) -> Iterator[Finding]:
    """Each peer's key and address once, its address inside the network and above the endpoints'."""
    net = ipaddress.ip_network(m.network)
    seen_keys: dict[str, int] = {}
    seen_addresses: dict[str, int] = {}
    seen_names: dict[str, int] = {}
    for i, peer in each(m.peers):
        for seen, value, field, what in ((seen_keys, peer.public_key, "public_key", "key"),
                                         (seen_addresses, peer.address, "address", "address"),
                                         (seen_names, peer.name, "name", "name")):
            if value in seen:
                yield Finding(("peers", i, field), f"{value} is also the {what} of "
                              f"{ctx.where('peers', seen[value], field)}; each peer has its own {what}")
            else:
                seen[value] = i
        address = ipaddress.ip_address(peer.address)
        if address not in net:
            yield Finding(("peers", i, "address"), f"{peer.address} is outside management.network {net}")
        elif int(address) - int(net.network_address) < RESERVED_ADDRESSES or address == net.broadcast_address:
            first = net.network_address + RESERVED_ADDRESSES
            yield Finding(("peers", i, "address"), f"{peer.address} is reserved (the first {RESERVED_ADDRESSES} "
                          f"addresses of {net} are the endpoints', the last its broadcast); use {first} or above")


@rule(Management)
def _break_glass(m: Management, ctx: RuleContext) -> Iterator[Finding]:
    """Break-glass says why; in production it also says until when (at most a week ahead, not
    past), and with it off the network has a peer, or nobody (the deploy runner included)
    reaches SSH."""
    glass = m.break_glass
    production = _production(ctx)
    if glass.enabled and not glass.reason:
        yield Finding(("break_glass", "reason"), "is required when break_glass.enabled is true: say why "
                      "(a ticket or incident)")
    if glass.enabled and production:
        today = datetime.date.today()
        if glass.expires is None:
            yield Finding(("break_glass", "expires"), "is required in production when break_glass is enabled "
                          f"(a date at most {BREAK_GLASS_MAX_DAYS} days ahead)")
        elif glass.expires < today:
            yield Finding(("break_glass", "expires"), f"{glass.expires} has passed: set enabled: false (or a new "
                          "date, with a reason)")
        elif glass.expires > today + datetime.timedelta(days=BREAK_GLASS_MAX_DAYS):
            yield Finding(("break_glass", "expires"), f"{glass.expires} is more than {BREAK_GLASS_MAX_DAYS} "
                          "days ahead; break-glass is for an outage or a first deploy, not a standing path")
    if not glass.enabled and production and not m.peers:
        yield Finding(("peers",), "is empty, and break_glass is off: nobody, the deploy runner included, "
                      "could reach SSH; add the deploy runner's and the engineers' WireGuard keys")


def _production(ctx: RuleContext) -> bool:
    production = ctx.env("production")
    name = ctx.env("name")
    if production is not None:
        return bool(production)
    return isinstance(name, str) and is_production_name(name)


def endpoint_address(m: Management, product: str) -> str:
    """``product``'s endpoint address in the management network (``GATEWAY_OFFSETS``)."""
    return str(ipaddress.ip_network(m.network).network_address + GATEWAY_OFFSETS[product])


def endpoint(m: Management, product: str) -> wireguard.Endpoint:
    """``product``'s entry host as a WireGuard endpoint, admitting every peer."""
    return wireguard.Endpoint(address=endpoint_address(m, product), network=m.network,
                              listen_port=m.listen_port,
                              peers=tuple(wireguard.Peer(p.name, p.public_key, p.address) for p in m.peers))


def ssh_sources(m: Management, admin_cidrs) -> tuple[str, ...]:
    """Where an entry host's SSH answers from: the management network, and ``admin_cidrs`` only
    with break-glass on."""
    return (m.network, *(admin_cidrs if m.break_glass.enabled else ()))


def public_ssh_sources(m: Management, admin_cidrs) -> tuple[str, ...]:
    """The public sources a cloud firewall admits to SSH: ``admin_cidrs`` with break-glass on,
    none otherwise (the tunnel's packets reach sshd behind the cloud firewall)."""
    return tuple(admin_cidrs) if m.break_glass.enabled else ()


def endpoint_output(m: Management, product: str, public_address, public_key) -> dict:
    """The stack output a peer's config needs for ``product``'s endpoint: ``endpoint``
    (``public_address:listen_port``, an Input), the endpoint's ``address`` in the network (its
    peers' ``AllowedIPs``) and its WireGuard ``publicKey``."""
    import pulumi

    return {"endpoint": pulumi.Output.concat(public_address, f":{m.listen_port}"),
            "address": endpoint_address(m, product), "publicKey": public_key}


def stack_output(m: Management, endpoints: dict) -> dict:
    """The stack output ``management``, what an operator's client config is made from
    (``scripts/wg_client.py``): the ``network`` (CIDR), its UDP ``listenPort`` and ``endpoints``,
    a list of each product's ``endpoint_output`` with its ``product`` (a list: product names as
    keys would read as the products' own outputs, some of which are secret). Nothing in it is
    secret, so ``pulumi stack output management`` shows it whole."""
    return {"network": m.network, "listenPort": m.listen_port,
            "endpoints": [{"product": p, **endpoints[p]} for p in sorted(endpoints, key=GATEWAY_OFFSETS.get)]}


def connect_address(m: Management, product: str, public_address):
    """The address the program's remote commands and Docker provider use for ``product``'s
    entry host: its endpoint address (the deploy runner is a peer), or ``public_address`` with
    break-glass on (a first deploy, before the endpoint exists)."""
    return public_address if m.break_glass.enabled else endpoint_address(m, product)
