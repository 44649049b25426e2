"""What every policy module shares: resource type tokens, proxy-safe traversal, the catalog,
waivers, and the two constructors that register a policy with its metadata and its cases.

Policies receive their properties as plain dicts from the offline runner and as pulumi-policy's
unknown-checking proxies (``Mapping``/``Sequence``, not ``dict``/``list``) under
``pulumi preview --policy-pack``. Every traversal here tests the abstract types.

Unknown values (``policy.rules.unknowns``): a check sees the proxies through ``known_view``, so a
scan over every input (``for key in props``, ``walk_strings``) passes over an unknown value and
judges the known ones, while a field the check reads (``props["image"]``, ``str()`` of a list
item) still raises ``UnknownValueError``, now naming the resource URN and the field; the analyzer
reports that as "can't run policy ... during preview" (advisory) after the violations found so far.
"""

from __future__ import annotations

import datetime
import fnmatch
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional

from policy.rules.globs import too_broad
from policy.rules.unknowns import UnknownItem, known_view, raise_skipped, unknown_guard
from pulumi_policy import (EnforcementLevel, PolicyConfigSchema, ReportViolation,
                           ResourceValidationArgs, ResourceValidationPolicy, Severity,
                           StackValidationArgs, StackValidationPolicy)

from validation.fields import ADMIN_PREFIX_MIN

PACK_NAME, PACK_VERSION = "platform-guardrails", "0.1.0"
MANDATORY, ADVISORY = EnforcementLevel.MANDATORY, EnforcementLevel.ADVISORY
CRITICAL, HIGH, MEDIUM, LOW = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW
TIERS = ("edge", "app", "data", "mgmt")
WEB_PORTS = {80, 443}
# Ports that must never face the internet, with what listens there.
SENSITIVE_PORTS = {
    22: "SSH", 5432: "Postgres", 25060: "managed Postgres", 25061: "managed Valkey/Redis",
    27017: "MongoDB", 6379: "Redis", 9000: "MinIO", 9001: "MinIO console", 3306: "MySQL",
    9090: "Prometheus", 9093: "Alertmanager", 9100: "node-exporter", 9115: "blackbox exporter",
    8080: "cAdvisor", 2375: "Docker API", 2376: "Docker API", 3000: "Grafana/Node debug",
    9229: "Node.js inspector", 5005: "JVM debugger", 6060: "Go pprof", 15672: "RabbitMQ admin",
}
DATA_PORTS = {5432, 25060, 25061, 27017, 6379, 9000, 9001, 3306}
SECRET_MASK = "[secret]"

DO = "digitalocean:index/"
T_FIREWALL = DO + "firewall:Firewall"
T_DROPLET = DO + "droplet:Droplet"
T_CLUSTER = DO + "databaseCluster:DatabaseCluster"
T_DB_FIREWALL = DO + "databaseFirewall:DatabaseFirewall"
T_LB = DO + "loadBalancer:LoadBalancer"
T_SPACES = DO + "spacesBucket:SpacesBucket"
T_SPACES_POLICY = DO + "spacesBucketPolicy:SpacesBucketPolicy"
T_SPACES_CORS = DO + "spacesBucketCorsConfiguration:SpacesBucketCorsConfiguration"
T_SPACES_KEY = DO + "spacesKey:SpacesKey"
T_APP = DO + "app:App"
T_DNS = DO + "dnsRecord:DnsRecord"
T_UPTIME = DO + "uptimeCheck:UptimeCheck"
T_UPTIME_ALERT = DO + "uptimeAlert:UptimeAlert"
T_MONITOR_ALERT = DO + "monitorAlert:MonitorAlert"
T_CONTAINER = "docker:index/container:Container"
T_IMAGE = "docker:index/remoteImage:RemoteImage"
T_COMMAND = "command:remote:Command"
T_MINIO_BUCKET = "minio:index/s3Bucket:S3Bucket"
T_MINIO_VERSIONING = "minio:index/s3BucketVersioning:S3BucketVersioning"
T_MINIO_POLICY = "minio:index/s3BucketPolicy:S3BucketPolicy"
T_MINIO_IAM_POLICY = "minio:index/iamPolicy:IamPolicy"
T_R2 = "cloudflare:index/r2Bucket:R2Bucket"
T_R2_LIFECYCLE = "cloudflare:index/r2BucketLifecycle:R2BucketLifecycle"
T_R2_LOCK = "cloudflare:index/r2BucketLock:R2BucketLock"
T_R2_DOMAIN = "cloudflare:index/r2CustomDomain:R2CustomDomain"
T_R2_MANAGED_DOMAIN = "cloudflare:index/r2ManagedDomain:R2ManagedDomain"
T_CF_ZONE_SETTING = "cloudflare:index/zoneSetting:ZoneSetting"
T_CF_ACCOUNT_TOKEN = "cloudflare:index/accountToken:AccountToken"
T_CF_API_TOKEN = "cloudflare:index/apiToken:ApiToken"
T_CF_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
T_R2_BACKUP = "platform:components:R2Backup"
T_ONPREM = "platform:components:OnPremVps"
T_SESSION_ARCHIVE = "platform:components:SessionArchive"
T_MANAGEMENT = "platform:components:ManagementNetwork"
WIREGUARD_PORT = 51820
"""The management network's UDP port when no ManagementNetwork component says otherwise."""


def wireguard_ports(args) -> set[int]:
    """The management network's UDP ports in the stack (``platform:components:ManagementNetwork``
    ``listenPort``); the default when the stack has none, or for a resource policy (no stack)."""
    found = set()
    for item in by_type(args, T_MANAGEMENT) if hasattr(args, "resources") else ():
        port = integer(item.props.get("listenPort"))
        if port:
            found.add(port)
    return found or {WIREGUARD_PORT}


def is_wireguard_rule(protocol: Any, range_: Optional[tuple[int, int]], ports: set[int]) -> bool:
    """A UDP rule for exactly the management network's port: the one non-web port an entry host
    opens to the internet (WireGuard answers no packet without a peer's key)."""
    return str(protocol) == "udp" and range_ is not None and range_[0] == range_[1] and range_[0] in ports


@dataclass(frozen=True)
class PolicyInfo:
    """Catalog facts the SDK object does not hold: the policy's category, the anchor checks it
    implements (scanner check IDs, benchmark sections, URLs) and what fixes a violation."""

    category: str
    sources: tuple[str, ...]
    fix: str

    @property
    def anchor(self) -> str:
        return "; ".join(self.sources)


@dataclass
class Case:
    """A compliant state and mutations of it that each break the policy, with the exact
    messages the policy must report for each. ``config`` is the policy config both use."""

    compliant: dict
    mutations: list[tuple[dict, list[str]]]
    config: dict = field(default_factory=dict)


POLICIES: list = []
CATALOG: dict[str, PolicyInfo] = {}
CASES: dict[str, Case] = {}


# --- proxy-safe helpers -----------------------------------------------------------------------

def is_text(value: Any) -> bool:
    return isinstance(value, str)


def is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def items(value: Any) -> list:
    """A Sequence value as a list (``[]`` for None or anything else). Raises UnknownValueError
    for a value unknown during preview (an ``UnknownItem``), which is not "no items"."""
    UnknownItem.refuse(value)
    return list(value) if is_list(value) else []


def mapping(value: Any) -> Mapping:
    """A Mapping value as is (``{}`` for anything else); raises UnknownValueError for an
    ``UnknownItem``, which is not "no settings"."""
    UnknownItem.refuse(value)
    return value if isinstance(value, Mapping) else {}


def integer(value: Any) -> Any:
    """A whole number as an int: the analyzer deserialises every protobuf number to float
    (``80.0``), the offline runner keeps JSON ints; anything else is returned as is (an
    ``UnknownItem`` raises UnknownValueError)."""
    UnknownItem.refuse(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def walk_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string leaf with its path (``envs[0]``, ``spec.services[1].envs[2].value``)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key in value:
            yield from walk_strings(value[key], f"{path}.{key}" if path else str(key))
    elif is_list(value):
        for index, item in enumerate(value):
            yield from walk_strings(item, f"{path}[{index}]")


def network(text: Any) -> Optional[ipaddress._BaseNetwork]:
    try:
        return ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError:
        return None


INTERNAL_RANGES = [ipaddress.ip_network(n) for n in
                   ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")]


def is_internal(parsed: ipaddress._BaseNetwork) -> bool:
    """Inside RFC 1918, CGNAT or IPv6 ULA space (documentation ranges count as public)."""
    return any(parsed.version == r.version and parsed.subnet_of(r) for r in INTERNAL_RANGES)


def is_world(cidr: Any) -> bool:
    """A source (or destination) so broad it means "the internet": ``any``, and any range not
    internal (``is_internal``) that is wider than one site, IPv4 shorter than /24 or IPv6
    shorter than /48 (validation.fields.ADMIN_PREFIX_MIN, the bound the config boundary puts on
    admin CIDRs: RIPE-399, RFC 6177)."""
    if str(cidr).strip() == "any":
        return True
    parsed = network(cidr)
    return parsed is not None and not is_internal(parsed) and parsed.prefixlen < ADMIN_PREFIX_MIN[parsed.version]


def port_range(text: Any) -> Optional[tuple[int, int]]:
    """DigitalOcean port_range: "22", "8000-9000", "1-65535" or "all"."""
    if text is None:
        return None
    text = str(text).strip()
    if text in ("all", "0", ""):
        return (1, 65535)
    low, _, high = text.partition("-")
    try:
        return (int(low), int(high or low))
    except ValueError:
        return None


def ports_in(ranges: Iterable[tuple[int, int]], ports: Iterable[int]) -> list[int]:
    ranges = list(ranges)
    return sorted(p for p in ports if any(low <= p <= high for low, high in ranges))


def firewall_tier(name: Any) -> Optional[str]:
    suffix = str(name or "").rsplit("-", 1)[-1]
    return suffix if suffix in TIERS else None


def labels_of(props: Mapping) -> dict[str, str]:
    return {str(mapping(l).get("label")): str(mapping(l).get("value"))
            for l in items(props.get("labels"))}


def stdin_of(props: Mapping) -> str:
    value = props.get("stdin")
    return value if isinstance(value, str) else ""


def name_of(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def by_type(args: StackValidationArgs, *types: str) -> list:
    return [r for r in args.resources if r.resource_type in types]


# --- config: production and waivers -----------------------------------------------------------

WAIVERS_PROPERTY = {"type": "array", "items": {"type": "object", "properties": {
    "name": {"type": "string"}, "reason": {"type": "string"},
    "expires": {"type": "string", "description": "YYYY-MM-DD; after it the waiver excuses nothing"},
    "resources": {"type": "array", "items": {"type": "string"},
                  "description": "resource names (glob) or flow names the waiver excuses"}},
    "required": ["name", "reason", "expires"]}}
PRODUCTION_PROPERTY = {"type": "boolean",
                       "description": "platform:environment.production of the stack"}
MISSING_PRODUCTION = ("the policy config does not say whether this stack is production; set "
                      "\"production\" from platform:environment.production in policy/config.<stack>.json")


def production(config: Mapping) -> Optional[bool]:
    value = config.get("production")
    return value if isinstance(value, bool) else None


def today() -> datetime.date:
    return datetime.datetime.now(datetime.timezone.utc).date()


WAIVER_MAX_DAYS = 180
"""Longest a waiver may run from today: the committed waivers are renewed twice a year, so an
exception is looked at again at least that often (a 2031 or 9999 date is a permanent hole)."""


def _waiver(config: Mapping, subjects: Iterable[str], marks: Iterable[str]) -> Optional[Mapping]:
    """The first waiver whose ``resources`` globs match a subject (resource or flow name), or
    whose name is a mark (a UFW line's ``# waiver: NAME``). A waiver's name alone never matches
    a resource, and a glob ``too_broad`` refuses matches nothing."""
    subjects, marks = [s for s in subjects if s], {m for m in marks if m}
    for waiver in items(config.get("waivers")):
        waiver = mapping(waiver)
        globs = [str(g) for g in items(waiver.get("resources")) if not too_broad(str(g))]
        if waiver.get("name") in marks or any(fnmatch.fnmatchcase(s, g) for g in globs for s in subjects):
            return waiver
    return None


def waived(message: str, config: Mapping, subjects: Iterable[str], marks: Iterable[str] = ()) -> Optional[str]:
    """The message to report after waivers: None when a valid, unexpired waiver covers one of
    ``subjects`` (or is named by one of ``marks``); the message with the waiver's defect when
    it is expired, incomplete or runs more than WAIVER_MAX_DAYS from today."""
    waiver = _waiver(config, subjects, marks)
    if waiver is None:
        return message
    name, reason, expires = waiver.get("name"), waiver.get("reason"), waiver.get("expires")
    if not str(reason or "").strip() or not expires:
        return f"{message} (waiver {name} names no reason or expiry date, so it excuses nothing)"
    try:
        until = datetime.date.fromisoformat(str(expires))
    except ValueError:
        return f"{message} (waiver {name} expires {expires!r}, which is not a YYYY-MM-DD date)"
    if until < today():
        return f"{message} (waiver {name} expired on {expires})"
    if (until - today()).days > WAIVER_MAX_DAYS:
        return (f"{message} (waiver {name} expires {expires}, more than {WAIVER_MAX_DAYS} days ahead, "
                "so it excuses nothing)")
    return None


def _schema(extra: Optional[Mapping]) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties={"waivers": WAIVERS_PROPERTY, **(extra or {})})


# --- constructors -----------------------------------------------------------------------------

Check = Callable[[Mapping, ResourceValidationArgs], Iterable[str]]
StackCheck = Callable[[StackValidationArgs], Iterable[tuple]]


def _register(policy, category: str, sources: Sequence[str], fix: str, cases: Case) -> None:
    assert policy.name not in CATALOG, policy.name
    CATALOG[policy.name] = PolicyInfo(category=category, sources=tuple(sources), fix=fix)
    CASES[policy.name] = cases
    POLICIES.append(policy)


def resource_policy(name: str, description: str, *, level: EnforcementLevel, severity: Severity,
                    category: str, sources: Sequence[str], fix: str, types: Sequence[str],
                    check: Check, cases: Case, config: Optional[Mapping] = None) -> None:
    """Register a policy run on each resource of ``types``; ``check(props, args)`` yields
    messages. A waiver in the policy's config excuses a resource by name."""

    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if args.resource_type not in types:
            return
        settings = args.get_config() or {}
        props = known_view(args.props, args.urn)
        with unknown_guard(args.urn):
            for message in check(props, args):
                shown = waived(message, settings, [args.name])
                if shown is not None:
                    report(shown, args.urn)
        raise_skipped(props)

    _register(ResourceValidationPolicy(name=name, description=description, enforcement_level=level,
                                       severity=severity, validate=validate,
                                       config_schema=_schema(config)),
              category, sources, fix, cases)


def stack_policy(name: str, description: str, *, level: EnforcementLevel, severity: Severity,
                 category: str, sources: Sequence[str], fix: str, check: StackCheck, cases: Case,
                 config: Optional[Mapping] = None, waivable: bool = True) -> None:
    """Register a policy over the whole stack; ``check(args)`` yields ``(message, urn)``,
    ``(message, urn, flow)`` or ``(message, urn, flow, mark)``: a waiver excuses the resource or
    the flow its ``resources`` globs name, or the finding whose mark (a UFW line's
    ``# waiver: NAME``) is its name. ``waivable=False``: the policy's waivers are a register
    the check reads, never an excuse for its own findings."""

    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        settings = (args.get_config() or {}) if waivable else {}
        for resource in args.resources:
            resource.props = known_view(resource.props, resource.urn)
        for found in check(args):
            message, urn = found[0], found[1]
            subjects = [name_of(urn or ""), *found[2:3]]
            shown = waived(message, settings, subjects, found[3:])
            if shown is not None:
                report(shown, urn)
        raise_skipped(*(resource.props for resource in args.resources))

    _register(StackValidationPolicy(name=name, description=description, enforcement_level=level,
                                    severity=severity, validate=validate,
                                    config_schema=_schema(config)),
              category, sources, fix, cases)
