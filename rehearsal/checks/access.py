"""Live probes of the exposure invariants (issue #16, DESIGN.md "Tier model" and "TLS invariants"),
with real clients from the lab's probe positions (``rehearsal.checks.probes``). Each returns
``rehearsal.report.Check`` items for the host's report; a probe that cannot be tried is "not
proven" with the reason, never a pass.

- **SSH** (``ssh_checks``, OpenSSH's client): key login as the deploy user works from the admin
  address (through the bastion for internal nodes); the server offers no password or
  keyboard-interactive method (the list in "Permission denied (...)" is the server's own); root
  is refused although root holds the key (a hoster's image, DigitalOcean's metadata); from the
  internet probe the key login does not get through.
- **fail2ban** (``fail2ban_checks``): from a source outside ``ignoreip`` that reaches sshd,
  ``maxretry`` failed logins (an invalid user with a throwaway key) get the source into
  ``fail2ban-client status sshd``, and its next connection is refused while the admin address
  still connects; the source is unbanned afterwards. Where no such source reaches sshd (UFW or
  the cloud firewall admit only addresses fail2ban ignores) the ban is "not proven" and says so.
- **TLS ingress**: ``rehearsal.checks.tlsprobes``.
- **Data-tier TLS** (``postgres_checks``, ``psql``; ``redis_checks``, ``redis-cli --tls`` for every
  ``rediss://`` URL, the same three probes): each ``DATABASE_URL`` with
  ``sslmode=verify-full`` that a container is handed connects from inside that container's network
  namespace, with the CA file it mounts; the same connection fails against another CA and in
  plaintext (``sslmode=disable``).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from rehearsal.checks.probes import INTERNET_PROBE, BoxContainer, LabProbes

Site = Sequence[str]
"""An argv prefix that puts a client at a probe position (``nsenter --net=...``)."""
from rehearsal.report import FAIL, NOT_PROVEN, PASS, Check

SSH_OPTIONS = ("-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=8", "-o", "IdentitiesOnly=yes",
               "-o", "LogLevel=ERROR")
DENIED = re.compile(r"Permission denied \(([^)]*)\)")
MAXRETRY = re.compile(r"^\s*maxretry\s*=\s*(\d+)", re.M)
IGNOREIP = re.compile(r"^\s*ignoreip\s*=\s*(.+)$", re.M)


def _check(name: str, ok: Optional[bool], detail: str = "") -> Check:
    return Check(name, NOT_PROVEN if ok is None else PASS if ok else FAIL, detail.strip()[-400:])


def _at(site: Site, argv: Sequence[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """A client that has not finished after ``timeout`` seconds failed (exit 124, as timeout(1)):
    a ban that lands mid-connection leaves ssh waiting on a peer that no longer answers."""
    try:
        return subprocess.run([*site, *argv], capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, 124, "", f"timed out after {timeout:.0f} s")


def _admin(lab) -> Site:
    """The harness namespace: what it sends to a box leaves from the gateway, the admin address."""
    return lab.netns_argv([])


def _nc(site: Site, address: str, port: int) -> bool:
    return _at(site, ["nc", "-z", "-n", "-w", "3", address, str(port)]).returncode == 0


def _ssh(site: Site, key: Path, user: str, address: str, *, port: int = 22, jump: Optional[str] = None,
         extra: Sequence[str] = (), timeout: float = 60) -> subprocess.CompletedProcess:
    argv = ["ssh", *SSH_OPTIONS, "-i", str(key), "-p", str(port)]
    if jump:
        target, _, jump_port = jump.rpartition(":") if jump.count(":") else (jump, "", "22")
        argv += ["-o", f"ProxyCommand=ssh {' '.join(SSH_OPTIONS)} -i {key} -p {jump_port or 22} -W %h:%p {target}"]
    return _at(site, [*argv, *extra, f"{user}@{address}", "true"], timeout=timeout)


def _jump(host) -> Optional[str]:
    return next((o.split("=", 1)[1] for o in host.ssh_opts if o.startswith("ProxyJump=")), None)


def ssh_checks(lab, host, key: Path, outside: Optional[Site] = None) -> list[Check]:
    """``host``: a lab capture's ``rehearsal.capture.Host`` (lab addresses); ``key``: its private
    key file; ``outside``: the internet probe's site (``LabProbes.internet_site``)."""
    jump = _jump(host)
    checks = []
    admin = _admin(lab)
    login = _ssh(admin, key, host.user, host.address, port=host.port, jump=jump)
    where = "through the bastion" if jump else "from the admin address"
    checks.append(_check(f"live ssh: key login as {host.user} {where}", login.returncode == 0,
                         f"exit {login.returncode}: {login.stderr}"))
    password = _ssh(admin, key, host.user, host.address, port=host.port, jump=jump,
                    extra=("-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive",
                           "-o", "NumberOfPasswordPrompts=0"))
    methods = DENIED.search(password.stderr)
    offered = set(methods.group(1).split(",")) if methods else None
    checks.append(_check("live ssh: the server offers no password or keyboard-interactive login",
                         None if offered is None else not offered & {"password", "keyboard-interactive"},
                         f"exit {password.returncode}, methods offered: {sorted(offered or ())}: {password.stderr}"))
    root = _ssh(admin, key, "root", host.address, port=host.port, jump=jump)
    checks.append(_check("live ssh: root is refused (root holds the key)",
                         root.returncode != 0 and "Permission denied" in root.stderr,
                         f"exit {root.returncode}: {root.stderr}"))
    if not jump and outside:
        far = _ssh(outside, key, host.user, host.address, port=host.port)
        checks.append(_check(f"live ssh: key login from the internet ({INTERNET_PROBE}) does not get through",
                             far.returncode != 0, f"exit {far.returncode}: {far.stderr}"))
    return checks


def fail2ban_checks(lab, host, jail: str, outside: Site, *, source: str = INTERNET_PROBE) -> list[Check]:
    """``jail``: the jail file the stack writes (its ``maxretry`` and ``ignoreip``); ``outside``:
    the site whose address is ``source``."""
    maxretry = int((MAXRETRY.search(jail) or [None, "5"])[1])
    ignore = (IGNOREIP.search(jail) or [None, ""])[1].strip()
    name = f"live fail2ban: {maxretry} failed logins from {source} get it banned, and the ban refuses it"
    if _jump(host) or not _nc(outside, host.address, host.port):
        return [_check(name, None, f"no source outside fail2ban's ignoreip ({ignore}) reaches sshd on "
                                   f"{host.address}: the firewall admits SSH only from addresses fail2ban ignores")]
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "stranger"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
        for _ in range(maxretry + 1):
            _ssh(outside, key, "lab-probe-stranger", host.address, port=host.port, timeout=20)
        banned, status = False, ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not banned:
            status = lab.exec(host.name, ["fail2ban-client", "status", "sshd"], timeout=30).stdout.decode(errors="replace")
            banned = source in status.split("Banned IP list:", 1)[-1]
            if not banned:
                time.sleep(1)
        refused = not _nc(outside, host.address, host.port) if banned else None
        admin = _nc(_admin(lab), host.address, host.port)
        checks.append(_check(name, banned and refused and admin,
                             f"banned {banned}, its connection refused {refused}, admin still connects {admin}: {status}"))
        lab.exec(host.name, ["fail2ban-client", "set", "sshd", "unbanip", source], timeout=30)
    return checks


def postgres_checks(lab, probes: LabProbes, host: str, other_ca: bytes,
                    stack_address: Callable[[str], Optional[str]] = lambda address: None) -> list[Check]:
    """Every verify-full ``DATABASE_URL`` a container of ``host`` is handed, tried from inside that
    container (``other_ca``: a CA that did not sign the server's certificate). ``stack_address``:
    the stack address a lab address stands for (``rehearsal.overlay.Overlay.stack_address``). The
    URL names the server by its lab address (the overlay rewrote it), but the certificate the
    capture issued carries the stack's: the client names the server as the stack does (libpq's
    ``host``, which verify-full matches against the certificate) and connects to the lab address
    (``hostaddr``), as the app does on the real network."""
    checks = []
    containers = probes.containers.get(host, [])
    for client in containers:
        url = client.env.get("DATABASE_URL", "")
        if "sslmode=verify-full" not in url:
            continue
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        server = parts.hostname or ""
        address = _resolve(containers, server) or _getent(lab, host, server)
        verified_name = server_name(server, stack_address)
        ca_host_path = _host_path(client, query.get("sslrootcert", ""))
        site = probes.container_site(host, client)
        name = f"live postgres from {client.service} ({server})"
        if not (address and ca_host_path and site):
            checks.append(_check(f"{name}: verify-full connects", None,
                                 f"server address {address}, CA file {ca_host_path}, site {site}"))
            continue
        ca = lab.exec(host, ["cat", ca_host_path], timeout=30)
        with tempfile.TemporaryDirectory() as tmp:
            own, other = Path(tmp) / "ca.crt", Path(tmp) / "other.crt"
            own.write_bytes(ca.stdout)
            other.write_bytes(other_ca)

            def psql(sslmode: str, root: Optional[Path]) -> subprocess.CompletedProcess:
                conninfo = (f"host={verified_name} hostaddr={address} port={parts.port or 5432} "
                            f"dbname={parts.path.lstrip('/')} user={unquote(parts.username or '')} sslmode={sslmode}"
                            + (f" sslrootcert={root}" if root else ""))
                env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": unquote(parts.password or ""), "PGCONNECT_TIMEOUT": "10"}
                return subprocess.run([*site, "psql", conninfo, "-XAtc", "select 1"], capture_output=True, text=True,
                                      timeout=60, env=env)

            good = psql("verify-full", own)
            wrong = psql("verify-full", other)
            plain = psql("disable", None)
        connected = good.stdout.strip() == "1"
        # A managed database is served by a stand-in at the lab's service address; none there is
        # the lab's gap, not the stack's.
        stand_in_missing = (not connected and address == getattr(lab, "service_address", None)
                            and "Connection refused" in good.stderr)
        checks += [
            _check(f"{name}: verify-full with the stack's CA connects", None if stand_in_missing else connected,
                   ("no managed-database stand-in listens in the lab: " if stand_in_missing else "") + good.stderr),
            _check(f"{name}: verify-full against another CA fails",
                   (wrong.returncode != 0 and "certificate verify failed" in wrong.stderr)
                   if good.stdout.strip() == "1" else None, wrong.stderr or wrong.stdout),
            # Refused only counts from a server that answered TLS (a closed port refuses everything).
            _check(f"{name}: plaintext (sslmode=disable) is refused",
                   (plain.returncode != 0) if good.stdout.strip() == "1" else None,
                   plain.stderr or f"plaintext connected: {plain.stdout.strip()}"),
        ]
    return checks


def redis_checks(lab, probes: LabProbes, host: str, other_ca: bytes,
                 stack_address: Callable[[str], Optional[str]] = lambda address: None) -> list[Check]:
    """Every ``rediss://`` ``REDIS_URL`` a container of ``host`` is handed, tried with
    ``redis_tls_checks`` from inside that container's network namespace. The CA is the file the
    container trusts: the URL's ``ssl_ca_certs`` or ``tlsCAFile`` parameter, else its
    ``NODE_EXTRA_CA_CERTS`` (Pencom's clients), read from the box through its bind. A plain
    ``redis://`` stays on the container's own network (policy ``redis-tls``) and is not tried."""
    checks = []
    containers = probes.containers.get(host, [])
    for client in containers:
        url = client.env.get("REDIS_URL", "")
        if not url.startswith("rediss://"):
            continue
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        ca_path = query.get("ssl_ca_certs") or query.get("tlsCAFile") or client.env.get("NODE_EXTRA_CA_CERTS", "")
        server = parts.hostname or ""
        address = _resolve(containers, server) or _getent(lab, host, server)
        ca_host_path = _host_path(client, ca_path)
        site = probes.container_site(host, client)
        name = f"live redis from {client.service} ({server})"
        if not (address and ca_host_path and site):
            checks.append(_check(f"{name}: TLS with the stack's CA connects", None,
                                 f"server address {address}, CA file {ca_path} -> {ca_host_path}, site {site}"))
            continue
        ca = lab.exec(host, ["cat", ca_host_path], timeout=30)
        with tempfile.TemporaryDirectory() as tmp:
            own, other = Path(tmp) / "ca.crt", Path(tmp) / "other.crt"
            own.write_bytes(ca.stdout)
            other.write_bytes(other_ca)
            tried = redis_tls_checks(site, name, address, parts.port or 6379, server_name(server, stack_address),
                                     unquote(parts.username or "default"), unquote(parts.password or ""), own, other)
        # A managed Valkey is served by a stand-in at the lab's service address; none there is
        # the lab's gap, not the stack's.
        if (tried[0].status == FAIL and address == getattr(lab, "service_address", None)
                and "Connection refused" in tried[0].detail):
            tried = [Check(c.name, NOT_PROVEN, f"no managed-database stand-in listens in the lab: {c.detail}")
                     for c in tried]
        checks += tried
    return checks


def redis_tls_checks(site: Site, name: str, address: str, port: int, sni: str, user: str, password: str,
                     own_ca: Path, other_ca: Path) -> list[Check]:
    """``redis-cli --tls`` from ``site``: ``PING`` verified against ``own_ca`` answers ``PONG``;
    the same against ``other_ca`` fails certificate verification; the same without TLS gets no
    ``PONG``. A ``PONG`` where none may come fails at once; a refusal passes only where the first
    connected (a closed port refuses everything), else it is not proven. The password goes in
    ``REDISCLI_AUTH``, never on the command line. redis-cli (hiredis) verifies the chain and sends
    ``sni`` but does not match the name: the name is not proven by it."""
    # redis-cli has no read timeout: a TLS server waits for the rest of a record sent in plaintext,
    # a plaintext one for the rest of a command sent as a ClientHello. No PONG in 8 s is a refusal.
    def ping(*tls: str, timeout: float = 8) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin:/bin", "REDISCLI_AUTH": password}
        return _at(site, ["redis-cli", "-h", address, "-p", str(port), "--user", user, "--no-auth-warning", *tls,
                          "PING"], timeout=timeout, env=env)

    good = ping("--tls", "--sni", sni, "--cacert", str(own_ca))
    connected = good.returncode == 0 and good.stdout.strip() == "PONG"
    wrong = ping("--tls", "--sni", sni, "--cacert", str(other_ca))
    plain = ping()

    def refused(got: subprocess.CompletedProcess, why: str = "") -> Optional[bool]:
        if got.stdout.strip() == "PONG":
            return False
        return (why in got.stdout + got.stderr) if connected else None

    return [
        _check(f"{name}: TLS with the stack's CA connects", connected, good.stderr or good.stdout),
        _check(f"{name}: TLS against another CA fails", refused(wrong, "certificate verify failed"),
               wrong.stderr or wrong.stdout),
        _check(f"{name}: plaintext is refused", refused(plain), (plain.stderr or plain.stdout) or "no answer"),
    ]


def server_name(server: str, stack_address: Callable[[str], Optional[str]]) -> str:
    """The name a verify-full client gives for ``server`` (a URL's host in the lab): the stack
    address behind a lab address, else ``server`` as it is (a DNS name, a container's name)."""
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", server):
        return stack_address(server) or server
    return server


def _resolve(containers: Sequence[BoxContainer], server: str) -> Optional[str]:
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", server):
        return server
    for c in containers:
        if c.service == server:
            return next(iter(sorted(ip for ip, _ in c.addresses.values())), None)
    return None


def _getent(lab, host: str, name: str) -> Optional[str]:
    """``name`` as the box resolves it (its /etc/hosts names the managed databases' stand-ins)."""
    found = lab.exec(host, ["getent", "ahostsv4", name], timeout=30)
    words = found.stdout.decode(errors="replace").split()
    return words[0] if found.returncode == 0 and words else None


def _host_path(container: BoxContainer, path: str) -> Optional[str]:
    """The box path behind ``path`` in the container (the longest bind that holds it)."""
    for destination in sorted(container.mounts, key=len, reverse=True):
        if path == destination or path.startswith(destination.rstrip("/") + "/"):
            return container.mounts[destination] + path[len(destination):]
    return None


def written_jail(files: Mapping[str, Mapping[str, str]]) -> Optional[str]:
    """The fail2ban jail the scripts write (``rehearsal.checks.written_files``), if any."""
    for path in ("/etc/fail2ban/jail.local",):
        if path in files:
            return files[path]["content"]
    return None
