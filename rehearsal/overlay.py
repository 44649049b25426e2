"""The rehearsal overlay: every IPv4 address in what the stack sends to a host is rewritten to a
lab address, on structured values (every string inside the captured inputs), before anything
reaches a box. Nothing is sent to an address the lab does not own.

Lab networks (the harness namespace holds the first address of each, its gateway):

- ``public`` 10.200.0.0/24: internet-facing hosts (on-prem public addresses, droplets); the
  harness connects from its gateway 10.200.0.1, which stands for the stack's ``admin_cidrs``.
- ``<product>-private`` 10.201+i.0.0/24: each private network the stack declares (Pencom's),
  translated host part for host part (10.41.0.12 -> 10.201.0.12).
- ``internet`` 10.203.0.0/24: every other address the stack names (DNS resolvers, an Oracle
  server, ...), one lab address each; no box answers there unless a probe is put there.
- ``management`` 10.204.0.0/24: the stack's WireGuard management network
  (``platform:components:ManagementNetwork``), host part for host part. It must not share a
  range with ``internet``: wg-quick routes the whole management network to wg0, and the lab's
  DNS, ACME and S3 stand-ins live in ``internet``.

Kept as they are, because they never leave a host: loopback, ``0.0.0.0``, Docker's embedded DNS
``127.0.0.11``, and the private pools Docker allocates bridges from (172.16.0.0/12,
192.168.0.0/16). Any other address is translated; an address that cannot be translated (a lab
network full) raises ``OverlayError``, so nothing unknown is ever sent.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from rehearsal.capture import Host, StackCapture, Step

PUBLIC = ipaddress.ip_network("10.200.0.0/24")
INTERNET = ipaddress.ip_network("10.203.0.0/24")
MANAGEMENT = ipaddress.ip_network("10.204.0.0/24")
MANAGEMENT_NETWORK = "platform:components:ManagementNetwork"
PRIVATE_BASE = ipaddress.ip_network("10.201.0.0/16")
HARNESS = PUBLIC.network_address + 1
KEPT = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "0.0.0.0/32", "172.16.0.0/12", "192.168.0.0/16")]
# The namespace's own service address (rehearsal.netns.SERVICE_ADDRESS, not imported: the
# overlay stays free of the lab's process code), where the managed databases' stand-ins listen.
SERVICES = ipaddress.ip_network("100.64.0.1/32")
LAB = [PUBLIC, INTERNET, MANAGEMENT, PRIVATE_BASE, SERVICES]
VPC = "digitalocean:index/vpc:Vpc"
# An IPv4 address, optionally with a prefix length, not part of a longer dotted run (versions).
ADDRESS = re.compile(r"(?<![\d.])(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})(/\d{1,2})?(?![\d.]*\d)")


class OverlayError(Exception):
    """An address in the capture that the overlay cannot place in a lab network."""


@dataclass
class Overlay:
    """``hosts``: stack address -> lab address; ``networks``: stack network -> lab network
    (same prefix length, host part kept); ``lab_networks``: lab network name -> CIDR."""

    hosts: dict[str, str] = field(default_factory=dict)
    networks: dict[str, str] = field(default_factory=dict)
    lab_networks: dict[str, str] = field(default_factory=dict)
    _next_external: int = 2

    def address(self, text: str, prefix: Optional[str] = None) -> str:
        """The lab form of one address (``prefix`` like ``/24`` kept)."""
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return text + (prefix or "")
        suffix = prefix or ""
        if prefix and prefix != "/32":
            network = ipaddress.ip_network(text + prefix, strict=False)
            mapped = self.networks.get(str(network))
            if mapped:
                lab = ipaddress.ip_network(mapped)
                if ip == network.network_address or lab.prefixlen != network.prefixlen:
                    return mapped
                # An interface address (10.98.0.1/24) keeps its host part in a network mapped
                # host part for host part (the management network's wg0 addresses).
                return f"{lab.network_address + (int(ip) - int(network.network_address))}/{network.prefixlen}"
            if network.prefixlen == 0 or any(network.subnet_of(k) for k in KEPT if k.prefixlen <= network.prefixlen):
                return text + suffix
            if network.num_addresses > 1 and str(network) == text + prefix and network.prefixlen < 24:
                # A broad literal range (e.g. 10.0.0.0/8) names no machine: kept as is.
                return text + suffix
        if text in self.hosts:
            return self.hosts[text] + suffix
        for stack_net, lab_net in self.networks.items():
            net = ipaddress.ip_network(stack_net)
            if ip in net:
                lab = ipaddress.ip_network(lab_net)
                return str(lab.network_address + (int(ip) - int(net.network_address))) + suffix
        if any(ip in k for k in KEPT) or any(ip in n for n in LAB):
            return text + suffix
        return self._external(text) + suffix

    def _external(self, text: str) -> str:
        if self._next_external >= INTERNET.num_addresses - 1:
            raise OverlayError(f"no lab address left in {INTERNET} for {text}")
        lab = str(INTERNET.network_address + self._next_external)
        self._next_external += 1
        self.hosts[text] = lab
        return lab

    def stack_address(self, lab_address: str) -> Optional[str]:
        """The stack address that ``lab_address`` stands for (the inverse of :meth:`address` for
        one host address), or None when the lab address stands for none. A certificate the
        capture issued carries the stack's addresses, so a client that verifies it names the
        stack's (``host=<stack address> hostaddr=<lab address>`` in libpq). The harness address
        stands for every admin CIDR: it has no single stack address (None)."""
        if lab_address == str(HARNESS):
            return None
        named = sorted(stack for stack, lab in self.hosts.items() if lab == lab_address)
        if named:
            return named[0]
        ip = ipaddress.ip_address(lab_address)
        for stack_net, lab_net in sorted(self.networks.items()):
            lab = ipaddress.ip_network(lab_net)
            if lab.num_addresses > 1 and ip in lab:
                return str(ipaddress.ip_network(stack_net).network_address + (int(ip) - int(lab.network_address)))
        return None

    def text(self, value: str) -> str:
        return ADDRESS.sub(lambda m: self.address(m.group(1), m.group(2)), value)

    def value(self, value: Any) -> Any:
        """A deep copy of ``value`` (dicts, lists, strings) with every address rewritten; keys
        too (a map keyed by address)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(k) if isinstance(k, str) else k: self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value


def plan(capture: StackCapture, admin_cidrs: Iterable[str] = ()) -> Overlay:
    """The overlay for ``capture``: each product's private network (the /24 of a host's private
    address, or of a host reached through a jump host) to ``<product>-private``; every other
    host address, hosts in order of name, to ``public`` from .10; every DigitalOcean VPC range of
    the stack to the service address of the namespace (its managed databases' stand-ins);
    ``admin_cidrs`` to the harness's own public address (it is where SSH comes from)."""
    overlay = Overlay(lab_networks={"public": str(PUBLIC), "internet": str(INTERNET)})
    products = sorted({h.product for h in capture.hosts.values()})
    for index, product in enumerate(products):
        for host in sorted(capture.hosts.values(), key=lambda h: h.name):
            if host.product != product:
                continue
            private = [a for a in (host.private_address,) if a and a != host.address]
            if host.bastion is not None:
                private.append(host.address)
            for address in private:
                net = str(ipaddress.ip_network(f"{address}/24", strict=False))
                if net not in overlay.networks:
                    count = len(overlay.networks)
                    lab = f"{PRIVATE_BASE.network_address + (count << 8)}/24"
                    overlay.networks[net] = lab
                    overlay.lab_networks[f"{product}-private"] = lab
    number = 10
    for host in sorted(capture.hosts.values(), key=lambda h: h.name):
        if host.address not in overlay.hosts and not _in_private(overlay, host.address):
            overlay.hosts[host.address] = str(PUBLIC.network_address + number)
            number += 1
    # A DigitalOcean VPC's range holds the managed databases a host talks to (a container egress
    # lock admits it by range); in the lab they are stand-ins on the service address.
    for resource in (capture.state or {}).get("resources", []):
        if resource.get("type") == VPC and resource.get("inputs", {}).get("ipRange"):
            overlay.networks[str(ipaddress.ip_network(resource["inputs"]["ipRange"]))] = str(SERVICES)
    for resource in (capture.state or {}).get("resources", []):
        network = resource.get("inputs", {}).get("network") if resource.get("type") == MANAGEMENT_NETWORK else None
        if network:
            stack_net = ipaddress.ip_network(network, strict=False)
            if stack_net.prefixlen < MANAGEMENT.prefixlen:
                raise OverlayError(f"management network {network} is wider than the lab's {MANAGEMENT}")
            overlay.networks[str(stack_net)] = f"{MANAGEMENT.network_address}/{stack_net.prefixlen}"
    for cidr in admin_cidrs:
        net = ipaddress.ip_network(cidr, strict=False)
        if net.prefixlen == 32:
            overlay.hosts[str(net.network_address)] = str(HARNESS)
        else:
            overlay.networks[str(net)] = f"{HARNESS}/32"
    return overlay


def _in_private(overlay: Overlay, address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(n) for n in overlay.networks)


def apply(capture: StackCapture, overlay: Overlay) -> StackCapture:
    """A copy of ``capture`` with every step's inputs, every host's addresses, user-data and
    SSH options rewritten to lab addresses."""
    hosts = {}
    for name, h in capture.hosts.items():
        hosts[name] = Host(**{**h.__dict__,
                              "address": overlay.text(h.address),
                              "private_address": overlay.text(h.private_address) if h.private_address else None,
                              "docker_host": overlay.text(h.docker_host) if h.docker_host else None,
                              "ssh_opts": overlay.value(h.ssh_opts),
                              "user_data": overlay.text(h.user_data) if h.user_data else None})
    steps = [Step(**{**s.__dict__, "inputs": overlay.value(s.inputs)}) for s in capture.steps]
    return StackCapture(stack=capture.stack, hosts=hosts, steps=steps, products=capture.products,
                        database_hosts=capture.database_hosts)


def addresses_in(value: Any) -> set[str]:
    """Every IPv4 address (without prefix) inside ``value``'s strings and keys."""
    found: set[str] = set()
    if isinstance(value, str):
        found |= {m.group(1) for m in ADDRESS.finditer(value)}
    elif isinstance(value, dict):
        for k, v in value.items():
            found |= addresses_in(k) | addresses_in(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            found |= addresses_in(v)
    return found


def is_lab_or_local(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in n for n in LAB) or any(ip in k for k in KEPT)
