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
- **Data-tier TLS**: ``rehearsal.checks.datastores``.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

from rehearsal.checks.probes import INTERNET_PROBE

Site = Sequence[str]
"""An argv prefix that puts a client at a probe position (``nsenter --net=...``)."""
from rehearsal.report import FAIL, NOT_PROVEN, PASS, Check

SSH_OPTIONS = ("-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=8", "-o", "IdentitiesOnly=yes",
               "-o", "LogLevel=ERROR")
DENIED = re.compile(r"Permission denied \(([^)]*)\)")
MAXRETRY = re.compile(r"^\s*maxretry\s*=\s*(\d+)", re.M)
IGNOREIP = re.compile(r"^\s*ignoreip\s*=\s*(.+)$", re.M)


def verdict(name: str, ok: Optional[bool], detail: str = "") -> Check:
    """A ``Check``: pass for True, fail for False, not proven for None (the detail's last 400
    characters)."""
    return Check(name, NOT_PROVEN if ok is None else PASS if ok else FAIL, detail.strip()[-400:])


def run_at(site: Site, argv: Sequence[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
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
    return run_at(site, ["nc", "-z", "-n", "-w", "3", address, str(port)]).returncode == 0


def _ssh(site: Site, key: Path, user: str, address: str, *, port: int = 22, jump: Optional[str] = None,
         extra: Sequence[str] = (), timeout: float = 60) -> subprocess.CompletedProcess:
    argv = ["ssh", *SSH_OPTIONS, "-i", str(key), "-p", str(port)]
    if jump:
        target, _, jump_port = jump.rpartition(":") if jump.count(":") else (jump, "", "22")
        argv += ["-o", f"ProxyCommand=ssh {' '.join(SSH_OPTIONS)} -i {key} -p {jump_port or 22} -W %h:%p {target}"]
    return run_at(site, [*argv, *extra, f"{user}@{address}", "true"], timeout=timeout)


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
    checks.append(verdict(f"live ssh: key login as {host.user} {where}", login.returncode == 0,
                         f"exit {login.returncode}: {login.stderr}"))
    password = _ssh(admin, key, host.user, host.address, port=host.port, jump=jump,
                    extra=("-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive",
                           "-o", "NumberOfPasswordPrompts=0"))
    methods = DENIED.search(password.stderr)
    offered = set(methods.group(1).split(",")) if methods else None
    checks.append(verdict("live ssh: the server offers no password or keyboard-interactive login",
                         None if offered is None else not offered & {"password", "keyboard-interactive"},
                         f"exit {password.returncode}, methods offered: {sorted(offered or ())}: {password.stderr}"))
    root = _ssh(admin, key, "root", host.address, port=host.port, jump=jump)
    checks.append(verdict("live ssh: root is refused (root holds the key)",
                         root.returncode != 0 and "Permission denied" in root.stderr,
                         f"exit {root.returncode}: {root.stderr}"))
    if not jump and outside:
        far = _ssh(outside, key, host.user, host.address, port=host.port)
        checks.append(verdict(f"live ssh: key login from the internet ({INTERNET_PROBE}) does not get through",
                             far.returncode != 0, f"exit {far.returncode}: {far.stderr}"))
    return checks


def fail2ban_checks(lab, host, jail: str, outside: Site, *, source: str = INTERNET_PROBE) -> list[Check]:
    """``jail``: the jail file the stack writes (its ``maxretry`` and ``ignoreip``); ``outside``:
    the site whose address is ``source``."""
    maxretry = int((MAXRETRY.search(jail) or [None, "5"])[1])
    ignore = (IGNOREIP.search(jail) or [None, ""])[1].strip()
    name = f"live fail2ban: {maxretry} failed logins from {source} get it banned, and the ban refuses it"
    if _jump(host) or not _nc(outside, host.address, host.port):
        return [verdict(name, None, f"no source outside fail2ban's ignoreip ({ignore}) reaches sshd on "
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
        # fail2ban lists the address before its ban action has run (the first ban also creates
        # the f2b chain), so the refusal is awaited too, for as long as a ban action may take.
        refused, waited = None, time.monotonic()
        if banned:
            deadline = time.monotonic() + 30
            refused = not _nc(outside, host.address, host.port)
            while not refused and time.monotonic() < deadline:
                time.sleep(1)
                refused = not _nc(outside, host.address, host.port)
        waited = time.monotonic() - waited
        admin = _nc(_admin(lab), host.address, host.port)
        evidence = status
        if banned and not refused:
            # What the ban action did: its chain, and fail2ban's own account of the action.
            evidence = lab.exec(host.name, ["sh", "-c", "iptables -S f2b-sshd 2>&1; tail -n 12 /var/log/fail2ban.log "
                                            "2>&1"], timeout=30).stdout.decode(errors="replace")
        checks.append(verdict(name, banned and refused and admin,
                             f"banned {banned}, its connection refused {refused} (after {waited:.0f} s), "
                             f"admin still connects {admin}: {evidence}"))
        lab.exec(host.name, ["fail2ban-client", "set", "sshd", "unbanip", source], timeout=30)
    return checks


def written_jail(files: Mapping[str, Mapping[str, str]]) -> Optional[str]:
    """The fail2ban jail the scripts write (``rehearsal.checks.written_files``), if any."""
    for path in ("/etc/fail2ban/jail.local",):
        if path in files:
            return files[path]["content"]
    return None
