"""Collisions: one value claimed twice, within a product or across the products of a stack.

Every finding names the repeated value and both places. Reserved container names are derived
from the code that adds those containers (the ingress, the monitoring stack), not kept by hand.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from components import monitoring as mon
from components.containers import HOST_DIRECTORIES
from components.ingress import Ingress, IngressRoute, nginx_spec
from stacks.management import network_fits
from validation.rules import Finding, Skip, each

Loc = tuple[Any, ...]


def duplicates(claims: Iterable[tuple[Loc, Any]], what: str, path: Callable[[Loc], str]) -> Iterator[Finding]:
    """A finding at every claim after the first of a value, naming both places."""
    first: dict[Any, Loc] = {}
    for loc, value in claims:
        if value is None:
            continue
        if value in first:
            yield Finding(loc, f"{what} {_fmt(value)} is also claimed by {path(*first[value])}; "
                               "each must be unique")
        else:
            first[value] = loc


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return ":".join(str(v) for v in value)
    return str(value)


def program_containers(monitoring: bool) -> dict[str, str]:
    """Names of the containers the program adds to a host, and which part adds them."""
    ingress = Ingress(routes=[IngressRoute(host="a.example.com", service="x", port=1)], acme_email="a@example.com")
    names = {nginx_spec("x", "/x", ingress).name: "the ingress"}
    if monitoring:
        config = mon.MonitoringConfig()
        for spec in [*mon.server_specs(config, "/x"), *mon.exporter_specs(config, publish=False)]:
            names[spec.name] = "the monitoring stack"
    return names


def reserved_names(services: Sequence[Any], field: str, reserved: Mapping[str, str]) -> Iterator[Finding]:
    for index, spec in each(services):
        name = getattr(spec, "name", None)
        # A host directory's name has its own error (components.containers.HOST_DIRECTORIES).
        if name in reserved and name not in HOST_DIRECTORIES:
            yield Finding((field, index, "name"), f"{name!r} is the name of a container {reserved[name]} adds; "
                                                  "rename the service")


DOCKER_DEFAULT_BRIDGE = "172.17.0.0/16"
"""docker0's subnet on every host (Docker's default ``bip``)."""


def stack_collisions(views: Mapping[str, Any], path_for: Callable[[str], Callable[[Loc], str]],
                     products: Mapping[str, Any], management: Any = None) -> list[str]:
    """Across the products of a stack: public hostnames, R2 bucket names per account, and
    addresses of on-prem hosts (each runs its own ingress on 80 and 443); and the management
    network (``management``, the environment's possibly partial ``Management``) apart from every
    network a product claims and docker0's. ``views`` maps a product name to its (possibly
    partial) config, ``products`` a product name to its ``ProductDefinition``, whose ``claims``
    lists what it takes."""
    networks: list[tuple[str, Loc, str]] = []
    hostnames: list[tuple[str, Loc, str]] = []
    buckets: list[tuple[str, Loc, tuple[str, str]]] = []
    hosts: list[tuple[str, Loc, str]] = []
    for product, view in views.items():
        claims = products[product].claims
        if claims is None:
            continue
        try:
            found = claims(view)
        except (Skip, AttributeError, TypeError):
            continue
        hostnames += [(product, loc, h) for loc, h in found.get("hostnames", [])]
        buckets += [(product, loc, b) for loc, b in found.get("buckets", [])]
        hosts += [(product, loc, a) for loc, a in found.get("ingress_addresses", [])]
        networks += [(product, loc, n) for loc, n in found.get("networks", []) if n]
    problems = list(management_overlaps(management, networks, path_for))
    for product in views:
        own = [(loc, h) for p, loc, h in hostnames if p == product]
        problems += [f"{path_for(product)(loc)}: {message}" for loc, message in slug_collisions(own, path_for(product))]
    for claims, what in ((hostnames, "hostname"), (buckets, "R2 bucket (account, name)"),
                         (hosts, "ingress address (80/443)")):
        first: dict[Any, tuple[str, Loc]] = {}
        for product, loc, value in claims:
            if value in first and first[value][0] != product:
                other_product, other_loc = first[value]
                shown = value[1] if isinstance(value, tuple) else value
                problems.append(f"{path_for(product)(loc)}: {what} {shown} is also claimed by "
                                f"{path_for(other_product)(other_loc)}; each must be unique in a stack")
            first.setdefault(value, (product, loc))
    return problems


def readable(claims: Iterable[tuple[Loc, Callable[[], Any]]]) -> list[tuple[Loc, Any]]:
    """(loc, value) of each claim whose value a partial config holds: a field that did not
    validate raises Skip (its own error says why) and is left out, the others still count."""
    found = []
    for loc, read in claims:
        try:
            found.append((loc, read()))
        except (Skip, AttributeError, TypeError):
            continue
    return found


def management_overlaps(management: Any, networks: Sequence[tuple[str, Loc, str]],
                        path_for: Callable[[str], Callable[[Loc], str]]) -> Iterator[str]:
    """A problem at ``environment.management.network`` for each network it overlaps: a VPC, a
    private network, a Docker subnet the program creates (``networks``: (product, loc, CIDR)) or
    docker0's. An overlap routes a peer's replies, or a container's traffic, into the wrong
    interface."""
    try:
        network = getattr(management, "network", None)
    except Skip:
        return
    try:
        own = ipaddress.ip_network(network, strict=False) if isinstance(network, str) else None
    except ValueError:
        own = None  # the model's error says what is wrong with it
    if own is None or not network_fits(own):
        return  # its own problem comes first
    where = path_for("environment")(("management", "network"))
    others = [("docker0's default subnet on every host", DOCKER_DEFAULT_BRIDGE)]
    others += [(path_for(product)(loc), cidr) for product, loc, cidr in networks]
    for what, cidr in others:
        try:
            other = ipaddress.ip_network(cidr, strict=False) if isinstance(cidr, str) else None
        except ValueError:
            other = None
        if other is None:
            continue
        if other.version == own.version and other.overlaps(own):
            yield (f"{where}: {own} overlaps {what} ({cidr}): a peer's replies would go into that network; "
                   "choose a private range apart from every network of the stack")


def wal_collision(cluster: str) -> str:
    """The finding on a database named like the WAL archive job (``stacks.wiring.WAL_LABEL``) of
    the Postgres cluster at key path ``cluster``: both would be the backup job ``<stack>-wal``,
    its units, metrics and bucket prefix."""
    return (f"wal is the label of the WAL archive job of {cluster} (point-in-time recovery): both would be "
            "the backup job <stack>-wal, with one set of units, metrics and bucket objects; rename the database")


def resource_label(hostname: str) -> str:
    """A hostname as it names resources: the DNS record and uptime check (``.`` becomes ``-``)
    and the nginx upstream (``.`` and ``-`` become ``_``): dots and hyphens read alike."""
    return hostname.replace(".", "-")


def slug_collisions(claims: Iterable[tuple[Loc, str]], path: Callable[[Loc], str]) -> Iterator[tuple[Loc, str]]:
    """(loc, message) at every hostname after the first that differs from an earlier one but names
    the same resources (``resource_label``): ``a-b.example.com`` and ``a.b-example.com``."""
    first: dict[str, tuple[Loc, str]] = {}
    for loc, host in claims:
        label = resource_label(host)
        if label in first and first[label][1] != host:
            other_loc, other = first[label]
            yield loc, (f"hostname {host} names the same DNS record, uptime check and nginx upstream "
                        f"({label}) as {other} at {path(other_loc)} (dots and hyphens read alike); rename one")
        first.setdefault(label, (loc, host))


def r2_bucket_problem(name: str) -> str | None:
    """R2 bucket names: 3-63 characters, lower-case letters, digits and hyphens, starting and
    ending with a letter or digit (https://developers.cloudflare.com/r2/buckets/create-buckets/)."""
    import re

    if not 3 <= len(name) <= 63:
        return f"bucket name {name} has {len(name)} characters; R2 allows 3 to 63"
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", name):
        return f"bucket name {name} may hold only a-z, 0-9 and inner hyphens (R2)"
    return None


def global_names(environment: Any, views: Mapping[str, Any], products: Mapping[str, Any]) -> list[tuple[str, str, Loc, Any]]:
    """What a stack names outside itself, which no other stack may name too: ``(what, top key,
    loc, value)``. From each product's ``claims`` (``hostnames``: public hostnames and their DNS
    records; ``buckets``: R2 buckets as (account, name); ``spaces_buckets``; ``apps``: App
    Platform app names; ``ingress_addresses`` and ``host_addresses``: a machine's addresses, for a
    machine belongs to one stack) and the environment's management (WireGuard) network.
    ``environment`` and ``views`` may be partial (``validation.rules.partial``); a product whose
    claims cannot be read from its view is left out. The one definition of "global" that
    ``other_stacks`` and tests/test_environment_isolation.py use."""
    found: list[tuple[str, str, Loc, Any]] = []
    network = getattr(getattr(environment, "management", None), "network", None)
    if network is not None:
        found.append((MANAGEMENT_NETWORK, "environment", ("management", "network"), str(network)))
    for product, view in views.items():
        claims = products[product].claims
        if claims is None:
            continue
        try:
            claimed = claims(view)
        except (Skip, AttributeError, TypeError):
            continue
        for kind, what in GLOBAL_KINDS.items():
            found += [(what, product, loc, value) for loc, value in claimed.get(kind, []) if value is not None]
    return found


MANAGEMENT_NETWORK = "management network"
GLOBAL_KINDS = {"hostnames": "hostname", "buckets": "R2 bucket", "spaces_buckets": "Spaces bucket",
                "apps": "App Platform app", "ingress_addresses": "host address", "host_addresses": "host address"}
"""A product's ``claims`` kinds that are global, and what a finding calls them."""
