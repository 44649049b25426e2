"""What the lab serves (``plan_services``): the names its DNS answers and where each stand-in
listens, derived from a lab capture. The services themselves: ``rehearsal.services``."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Optional

from rehearsal import overlay as overlay_mod
from rehearsal.netns import LabError

ACME_HOST = "acme-v02.api.letsencrypt.org"
"""certbot's default server is ``https://acme-v02.api.letsencrypt.org/directory``."""
ACME_DIRECTORY_URL = f"https://{ACME_HOST}/directory"
WEBHOOK_HOSTS = ("hooks.slack.com",)
R2_HOST = re.compile(r"\b[0-9a-f]{32}\.r2\.cloudflarestorage\.com\b")
SMARTHOST = re.compile(r"smtp_smarthost:\s*['\"]?([A-Za-z0-9.-]+):(\d+)")
CERTBOT = re.compile(r"certbot certonly\b(.*?)(?<!\\)\n", re.S)
CERTBOT_DOMAIN = re.compile(r"(?:^|\s)(?:-d|--domains?)[ =]([A-Za-z0-9.,*-]+)")
SERVER_NAME = re.compile(r"\bserver_name\s+([^;{}]+);")
DSTDOMAIN = re.compile(r"\bacl\s+\S+\s+dstdomain\s+([^\n]+)")
DNS_ALLOW = re.compile(r"ufw allow out proto (?:udp|tcp) to (\d+\.\d+\.\d+\.\d+)(?:/32)? port 53\b")
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")

ADDRESSES = {
    "resolver": "10.203.0.253",  # only when the stack declares no resolver
    "smtp": "10.203.0.252",
    "s3": "10.203.0.251",
    "acme": "10.203.0.250",
    "webhook": "10.203.0.249",
}
"""Where each service listens (``internet`` lab network, top end)."""
OUTSIDE_TOP = ipaddress.ip_address("10.203.0.239")
"""Names on the proxy allow-lists with no stand-in get 10.203.0.239 downwards: an address of the
lab's internet where nothing listens unless a probe is put there (a connection is refused)."""
PEBBLE_PORT, PEBBLE_MANAGEMENT_PORT = 14000, 15000
CERTIFICATE_VALIDITY_S = 90 * 24 * 3600
"""Let's Encrypt's certificate lifetime (pebble's default is five years)."""


class ServicesError(LabError):
    """A lab service could not be planned or started; the message names the service and cause."""


@dataclass(frozen=True)
class ServicePlan:
    """What the lab serves, derived from a lab capture (addresses already overlaid).

    ``zone``: DNS name -> IPv4 dnsmasq answers (every other name is NXDOMAIN). ``domains``:
    public hostname -> box name serving it. ``resolvers``: addresses dnsmasq listens on (the
    boxes' resolvers). ``s3_hosts``, ``smtp``: (host, port) pairs, ``webhook_hosts``: names the
    S3 server, SMTP sink and webhook receiver answer for. ``addresses``: service -> IPv4."""

    zone: Mapping[str, str]
    domains: Mapping[str, str] = field(default_factory=dict)
    resolvers: tuple[str, ...] = (ADDRESSES["resolver"],)
    s3_hosts: tuple[str, ...] = ()
    smtp: tuple[tuple[str, int], ...] = ()
    webhook_hosts: tuple[str, ...] = WEBHOOK_HOSTS
    addresses: Mapping[str, str] = field(default_factory=lambda: dict(ADDRESSES))
    unanswered: frozenset[str] = frozenset()
    """Names in ``zone`` at an address where no stand-in listens (proxy allow-list names)."""
    managed: tuple = ()
    """The managed databases the lab stands in for (``rehearsal.services.managed.ManagedDatabase``:
    ``managed_databases`` of the capture), served at ``SERVICE_ADDRESS``."""

    locked_buckets: tuple[tuple[str, int], ...] = ()
    """(bucket, days) the S3 stand-in creates with an object lock (``locked_buckets``)."""

    def with_locked_buckets(self, buckets: Iterable[tuple[str, int]]) -> "ServicePlan":
        """A copy whose S3 stand-in creates ``buckets`` ((name, days)) locked."""
        return replace(self, locked_buckets=tuple(buckets))

    def with_managed(self, databases) -> "ServicePlan":
        """A copy that also serves ``databases`` (``ManagedDatabase`` s)."""
        return replace(self, managed=tuple(databases))

    def with_names(self, names: Mapping[str, str]) -> "ServicePlan":
        """A copy whose zone also answers ``names`` (name -> IPv4): they replace an unanswered
        name's address, never a served domain's or a stand-in's."""
        added = {n.lower(): a for n, a in names.items()
                 if n.lower() not in self.zone or n.lower() in self.unanswered}
        return replace(self, zone={**self.zone, **added}, unanswered=self.unanswered - set(added))


def _texts(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _texts(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _texts(v)


def plan_services(lab_capture, *, extra_names: Optional[Mapping[str, str]] = None,
                  reserved: Iterable[str] = ()) -> ServicePlan:
    """The services for ``lab_capture`` (a ``StackCapture`` after ``overlay.apply``): every
    domain certbot asks for or nginx serves -> the address of its host; every R2 endpoint ->
    the S3 server; Let's Encrypt's host -> pebble's front; every smarthost -> the SMTP sink;
    the webhook hosts -> the receiver; every other name on the proxy's ``dstdomain`` lists ->
    an unanswered internet address. ``extra_names`` (name -> IPv4) are added as given (the apt
    mirror, registries and managed databases at ``SERVICE_ADDRESS``). ``reserved``: lab
    addresses already used (default: every address in the capture's inputs); a service address
    among them raises ServicesError. A domain served by two hosts raises ServicesError."""
    domains: dict[str, str] = {}
    s3: set[str] = set()
    smtp: set[tuple[str, int]] = set()
    proxied: set[str] = set()
    resolvers: set[str] = set()
    used = set(reserved)
    for host in lab_capture.hosts.values():
        used |= {a for a in (host.address, host.private_address) if a}
    for step in lab_capture.steps:
        for text in _texts(step.inputs):
            if not reserved:
                used |= overlay_mod.addresses_in(text)
            s3.update(m.group(0).lower() for m in R2_HOST.finditer(text))
            smtp.update((m.group(1).lower(), int(m.group(2))) for m in SMARTHOST.finditer(text))
            resolvers.update(m.group(1) for m in DNS_ALLOW.finditer(text))
            for m in DSTDOMAIN.finditer(text):
                # ".x" allows x's subdomains: their hosts come from elsewhere (R2's endpoints).
                proxied.update(d.lower() for d in m.group(1).split() if not d.startswith("."))
            served = [d for m in CERTBOT.finditer(text) for g in CERTBOT_DOMAIN.findall(m.group(1))
                      for d in g.split(",")]
            served += [n for m in SERVER_NAME.finditer(text) for n in m.group(1).split()]
            for name in served:
                name = name.lower().rstrip(".")
                if not DOMAIN.match(name):
                    continue  # "_", "localhost", "*.x", "$host"
                other = domains.setdefault(name, step.host)
                if other != step.host:
                    raise ServicesError(f"{name} is served by two hosts ({other}, {step.host}); "
                                        "the lab's DNS cannot answer both")
    addresses = dict(ADDRESSES)
    stand_ins = {a for k, a in addresses.items() if k != "resolver" or not resolvers}
    clash = sorted(stand_ins & used)
    if clash:
        raise ServicesError(f"lab service addresses {clash} are already used by the stack's "
                            f"overlaid addresses; move rehearsal.services.ADDRESSES")
    zone: dict[str, str] = {}
    outside = [a for a in (str(OUTSIDE_TOP - i) for i in range(200)) if a not in used]
    for name in sorted(proxied):
        if DOMAIN.match(name) and name not in zone:
            if not outside:
                raise ServicesError("no internet address left for the proxy allow-list names")
            zone[name] = outside.pop(0)
    zone.update({name: lab_capture.hosts[host].address for name, host in domains.items()})
    zone.update({name: addresses["s3"] for name in s3})
    zone.update({name: addresses["smtp"] for name, _ in smtp})
    zone[ACME_HOST] = addresses["acme"]
    zone.update({name: addresses["webhook"] for name in WEBHOOK_HOSTS})
    plan = ServicePlan(zone=zone, domains=domains,
                       resolvers=tuple(sorted(resolvers, key=ipaddress.ip_address))
                       or (addresses["resolver"],),
                       s3_hosts=tuple(sorted(s3)), smtp=tuple(sorted(smtp)), addresses=addresses,
                       unanswered=frozenset(n for n in zone if zone[n] not in stand_ins
                                            and n not in domains))
    return plan.with_names(extra_names or {})


R2_BUCKET_LOCK = "cloudflare:index/r2BucketLock:R2BucketLock"


def locked_buckets(state: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(bucket, days) of every ``R2BucketLock`` of a synth capture (``state``: the ``--json``
    document) with an enabled rule for every object (prefix ""), its ``Age`` in whole days (at
    least one). A lock of some prefixes only (a restic repository's) is not emulated: S3's
    object lock covers a whole bucket, and restic must delete its own lock files."""
    out = []
    for r in (state.get("resources") or []):
        if r.get("type") != R2_BUCKET_LOCK:
            continue
        inputs = r.get("inputs") or {}
        for rule in inputs.get("rules") or []:
            condition = rule.get("condition") or {}
            if rule.get("enabled") and rule.get("prefix", "") == "" and condition.get("type") == "Age":
                out.append((str(inputs["bucketName"]), max(1, int(condition["maxAgeSeconds"]) // 86400)))
    return sorted(set(out))
