"""Base classes and small value types shared by every config model.

Address rules (each checked where the field is declared, so the error names that field):

- A CIDR must be written with its prefix (``10.40.0.0/24``); a bare address where a range is
  expected is an error, not a silent ``/32``. Host bits must be zero.
- "Private" means RFC 1918 for IPv4 (10/8, 172.16/12, 192.168/16; DigitalOcean VPC ranges
  must lie there: https://docs.digitalocean.com/products/networking/vpc/details/limits/) and
  RFC 4193 unique local addresses for IPv6 (fc00::/7).
- "Public" means not private, not shared address space (100.64/10, RFC 6598), not loopback,
  link-local, multicast, unspecified or reserved. The documentation ranges (RFC 5737
  192.0.2/24, 198.51.100/24, 203.0.113/24; RFC 3849 2001:db8::/32) count as public: the
  committed stacks use them as stand-ins for real addresses.
- Admin CIDRs are public and at most one site wide: IPv4 /24 or longer, IPv6 /48 or longer.
  /24 and /48 are the longest prefixes routed between networks on the internet (RIPE-399 and
  the BGP filtering practice it documents; RFC 6177 gives an end site a /48), so a broader
  admin range is more than one organisation's egress and opens SSH to strangers.
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict

from validation.formats import hostname_problem

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$"
ADMIN_PREFIX_MIN = {4: 24, 6: 48}
"""Broadest admin CIDR per IP version (see the module docstring for the source)."""

_NOT_PUBLIC = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "::/127", "::ffff:0:0/96", "fc00::/7",
    "fe80::/10", "ff00::/8")]
_PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")]


class StrictModel(BaseModel):
    """Rejects unknown keys, so a typo in a stack file is an error rather than a silent default,
    and values of another type instead of converting them (pydantic's strict mode): ``"22"`` or
    ``22.0`` where an integer is expected, and ``true`` where a number is (lax mode reads ``true``
    as 1, so ``ssh_port: true`` would have been port 1). An integer is still a valid float.
    Fields whose values a stack file can only write as text (dates, enumerations) opt out per
    field with ``Strict(False)``: :data:`IsoDate`, :data:`IsoDateTime`."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, strict=True)


IsoDate = Annotated[datetime.date, Strict(False)]
"""A day written as ISO 8601 text in a stack file (``2026-12-06``)."""

IsoDateTime = Annotated[datetime.datetime, Strict(False)]
"""An instant written as ISO 8601 text in a stack file (``2026-12-06T02:00:00Z``)."""


def is_private(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """Inside RFC 1918 (IPv4) or RFC 4193 (IPv6) space."""
    return any(network.version == p.version and network.subnet_of(p) for p in _PRIVATE)


def is_public(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """Overlaps no private, shared, loopback, link-local, multicast or reserved range."""
    return not any(network.version == p.version and network.overlaps(p) for p in _NOT_PUBLIC)


def _cidr(value: str) -> str:
    if "/" not in value:
        raise ValueError("must be a CIDR with its prefix, such as 10.40.0.0/24 or 203.0.113.7/32 "
                         "(a bare address is not taken as a range)")
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            base = ipaddress.ip_network(value, strict=False)
            raise ValueError(f"has host bits set: a range starts at its network address; write {base}") from None
        raise ValueError("must be a CIDR such as 203.0.113.7/32 (not an IPv4 or IPv6 network)") from None
    return str(network)


def _private_cidr(value: str) -> str:
    network = ipaddress.ip_network(_cidr(value))
    if not is_private(network):
        raise ValueError("must be a private range (RFC 1918: inside 10.0.0.0/8, 172.16.0.0/12 or "
                         "192.168.0.0/16; IPv6: fc00::/7)")
    return str(network)


def docker_subnet(longest: int, needs: str):
    """A Docker network's subnet in a stack file: a private IPv4 range (the hosts' Docker networks
    and their packet filter, iptables, are IPv4 only) of at least ``/longest``, which ``needs``
    explains (what the program derives from it). Checked before any arithmetic on it, so an IPv6
    /64 never reaches a derivation that would walk its hosts."""
    def check(value: str) -> str:
        network = ipaddress.ip_network(_private_cidr(value))
        if network.version != 4:
            raise ValueError("must be an IPv4 range: the hosts' Docker networks and their packet filter "
                             "(iptables) are IPv4 only; use a private IPv4 range such as 172.31.251.0/24")
        if network.prefixlen > longest:
            raise ValueError(f"/{network.prefixlen} is too small: {needs}; use a /{longest} or larger "
                             f"(e.g. {ipaddress.ip_network((int(network.network_address) >> (32 - longest) << (32 - longest), longest))})")
        return str(network)
    return Annotated[str, AfterValidator(check)]


def _host_cidr(value: str) -> str:
    network = ipaddress.ip_network(_cidr(value))
    if network.num_addresses != 1:
        raise ValueError(f"must be a single host (/{network.max_prefixlen}), such as 1.1.1.1/32")
    return str(network)


def _public_cidr_for_admins(value: str) -> str:
    network = ipaddress.ip_network(_cidr(value))
    bound = ADMIN_PREFIX_MIN[network.version]
    if network.prefixlen < bound:
        raise ValueError(
            f"an admin CIDR broader than /{bound} opens SSH to much of the internet; list your "
            "office or VPN egress addresses (for example 203.0.113.7/32)")
    if not is_public(network):
        raise ValueError("admin CIDRs are public egress addresses of an office or VPN; a private, "
                         "shared or reserved range never reaches a public host's SSH")
    return str(network)


def _address(value: str) -> str:
    if "/" in value:
        raise ValueError("must be a single address without a prefix, such as 10.40.0.12")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address such as 10.40.0.12") from None


def _private_address(value: str) -> str:
    address = ipaddress.ip_address(_address(value))
    if not is_private(ipaddress.ip_network(address)):
        raise ValueError("must be a private address (RFC 1918 or fc00::/7)")
    return str(address)


def _public_address(value: str) -> str:
    address = ipaddress.ip_address(_address(value))
    if not is_public(ipaddress.ip_network(address)):
        raise ValueError("must be a public address (not private, shared, loopback, link-local or reserved)")
    return str(address)


Cidr = Annotated[str, AfterValidator(_cidr)]
PrivateCidr = Annotated[str, AfterValidator(_private_cidr)]
HostCidr = Annotated[str, AfterValidator(_host_cidr)]
AdminCidr = Annotated[str, AfterValidator(_public_cidr_for_admins)]
PrivateAddress = Annotated[str, AfterValidator(_private_address)]
PublicAddress = Annotated[str, AfterValidator(_public_address)]
ResourceName = Annotated[str, Field(pattern=NAME_PATTERN)]


def _hostname(value: str) -> str:
    problem = hostname_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Hostname = Annotated[str, AfterValidator(_hostname)]


BootstrapUser = Annotated[str | None, Field(
    pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
    description="existing sudo user (not root) that accepts the deploy key; set it and the first run "
                "creates the deploy user; unset, the deploy user must exist")]
