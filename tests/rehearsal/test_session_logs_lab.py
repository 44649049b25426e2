"""Admin-session logs (issue #22, part 2) proven on the converged staging lab
(``staging_rehearsal``, tests/rehearsal/conftest.py), on Pencom's app node, which ships its
session records to the monitoring host (the edge node's collector, RFC 5425 on 6514).

An engineer's key is signed by the lab's SSH certificate authority (the stack's
``platform:ssh_ca_private_key`` as the rehearsal filled it) with ``scripts/ssh_cert.py`` for
the principal ``oncall``; the session logs in as ``ops`` the way the lab reaches internal
nodes (from the harness, the admin address under staging's break-glass, through the edge's
sshd: ``ProxyCommand ssh -W``, a certificate login on both hops) with a terminal, and each
command is typed at the shell's prompt as an engineer types it (pexpect). Piped typeahead
would not do: Debian's sudoers has ``use_pty``, so sudo relays the terminal into a pty of its
own and swallows every line typed ahead of it, and the shell then waits for ever (the
180 s hang of the first lab runs). The session runs a marker command, then tries to erase what
it did at the source: with sudo it deletes the node's local logs, rotates and vacuums the
journal, and tries to reach the monitoring host over SSH.

Asserted on the edge's ``/var/log/platform-sessions/``: sshd's login line naming the
certificate's key ID, and the marker command's record, both filed from the app node; both still
there after the erase attempt, which left the source without them and could not reach the
monitoring host.

A second certificate of the same key, valid for :data:`SHORT_VALIDITY_S` seconds, logs in to
the app node while it is valid; the same certificate is refused once its validity has ended,
and sshd's refusal is on the monitoring host too.

What a box cannot prove: kernel audit. ``auditctl -s`` is refused in a box (the kernel answers
audit requests from the initial PID namespace only; a box is a container), so auditd is left
disabled there and no execve is recorded by the kernel. Then the marker's record is written the
way audisp-syslog hands records to rsyslog (``logger -p local6.info -t audisp-syslog``, from the
session, as ``ops``): the shipping is proven, the kernel's capture of the command is not, and the
test says so. On a host where ``auditctl -s`` answers, the test requires the kernel's own
EXECVE record of the marker instead.
"""

from __future__ import annotations

import io
import re
import secrets
import subprocess
import time
from pathlib import Path

import pexpect
import pytest

from tests.rehearsal.ops_proofs import engineer_certificate, shipped, split_files

pytestmark = pytest.mark.rehearsal

EDGE, APP = "pencom-staging-edge", "pencom-staging-app"
COLLECTED = "/var/log/platform-sessions"
SSH = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
       "-o", "ConnectTimeout=10", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes"]


def session_input(marker: str, edge_private: str, emulate_audit: bool) -> list[str]:
    """What the engineer types, a command per prompt: the marker command, the audit hand-off
    when the kernel cannot record it, then the erase attempt (sudo, as root can on the node) and
    a try at the monitoring host."""
    lines = ["set +o history", f"/usr/bin/printf '%s\\n' {marker}"]
    if emulate_audit:
        lines.append(f'logger -p local6.info -t audisp-syslog "type=EXECVE msg=audit(lab): argc=3 '
                     f'a0=\\"/usr/bin/printf\\" a1=\\"%s\\\\n\\" a2=\\"{marker}\\" (emulated: no kernel audit in a box)"')
    lines += ["sleep 3",  # rsyslog's queue has sent it by now; the erase comes after, as an intruder's would
              "sudo -n rm -f /var/log/syslog /var/log/auth.log /var/log/messages /var/log/user.log"
              " /var/log/audit/audit.log",
              "sudo -n systemctl kill -s HUP rsyslog",
              "sudo -n journalctl --rotate --vacuum-time=1s >/dev/null 2>&1",
              f"ssh -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=no ops@{edge_private} true"
              " </dev/null >/dev/null 2>&1; echo edge-ssh-exit=$?",
              # sudo logs its command line: the marker goes in split in two quoted halves, so the
              # count's own log line does not hold it (audit's own log, where there is one, would).
              f"sudo -n bash -c 'grep -rlF -- \"{marker[:4]}\"\"{marker[4:]}\" /var/log --exclude-dir=audit"
              " 2>/dev/null | wc -l' | sed 's/^/local-copies=/'"]
    return lines


PROMPT = "lab-session-ready> "
# Terminal control sequences (CSI, and OSC such as the window title) of the shell's output.
TERMINAL_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def type_session(argv: list[str], lines: list[str], *, timeout: float = 60) -> dict:
    """Logs in with ``argv`` (an ssh command) on a terminal, types each of ``lines`` once the
    shell's prompt is back, then ``exit``. Returns ``{"status": ssh's exit status or None,
    "transcript": what the terminal showed, control sequences removed, "error": None or why the
    session did not end (a prompt that never came back within ``timeout`` s)}``."""
    child = pexpect.spawn(argv[0], argv[1:], timeout=timeout, encoding="utf-8", codec_errors="replace")
    shown = io.StringIO()
    child.logfile_read = shown
    error = None
    try:
        child.expect(r"\$ ")  # the login shell's own prompt
        # Typed in two quoted halves, so that the echo of this line is not the prompt itself.
        child.sendline(f"PS1='{PROMPT[:4]}''{PROMPT[4:]}'")
        child.expect_exact(PROMPT)
        for line in lines:
            child.sendline(line)
            child.expect_exact(PROMPT)
        child.sendline("exit")
        child.expect(pexpect.EOF)
    except (pexpect.TIMEOUT, pexpect.EOF) as exc:
        error = f"{type(exc).__name__} waiting for the prompt after {len(shown.getvalue())} bytes"
    finally:
        child.close(force=True)
    return {"status": child.exitstatus, "transcript": TERMINAL_CONTROL.sub("", shown.getvalue()), "error": error}


def login_argv(lab, edge, app, key: Path, certificate: Path, *, jump_certificate: Path | None = None) -> list[str]:
    """ssh to ``app`` as ``ops`` through ``edge`` (``ProxyCommand ssh -W``), in the lab's
    namespace, offering ``certificate`` to the app node and ``jump_certificate`` (default the
    same) to the edge."""
    jump = " ".join([*SSH, "-i", str(key), "-o", f"CertificateFile={jump_certificate or certificate}",
                     "-p", str(edge.port), "-W", "%h:%p", f"ops@{edge.address}"])
    return lab.netns_argv(["ssh", *SSH, "-i", str(key), "-o", f"CertificateFile={certificate}",
                           "-o", f"ProxyCommand=ssh {jump}", "-p", str(app.port), f"ops@{app.address}"])


def collected(lab, needles: list[str], *, within_s: float = 60) -> dict[str, list[str]]:
    """The collector's lines holding each needle, polled until every needle is there or
    ``within_s`` s have passed."""
    found: dict = {}
    deadline = time.monotonic() + within_s
    while True:
        dump = lab.exec(EDGE, ["bash", "-c", f"tail -v -n +1 {COLLECTED}/*.log"], timeout=60).stdout.decode(errors="replace")
        found = shipped(split_files(dump), needles)
        if all(found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(2)


def run_session(held, work: Path) -> dict:
    """The whole proof on a held staging lab (``work``: a private directory for the keys)."""
    lab = held.lab
    app, edge = held.lab_capture.hosts[APP], held.lab_capture.hosts[EDGE]
    identity = f"lab-session-{secrets.token_hex(4)}@example.com"
    key, certificate = engineer_certificate(held, work, identity)
    audit = lab.exec(APP, ["auditctl", "-s"], timeout=30)
    marker = f"lab-marker-{secrets.token_hex(6)}"
    started = time.monotonic()
    login = type_session(login_argv(lab, edge, app, key, certificate),
                         session_input(marker, edge.private_address or edge.address, audit.returncode != 0))
    found = collected(lab, [marker, identity])
    seconds = round(time.monotonic() - started, 1)
    return {"login": login, "marker": marker, "identity": identity, "found": found,
            "audit": (audit.returncode, (audit.stdout + audit.stderr).decode(errors="replace").strip()),
            "app_address": app.private_address or app.address, "seconds": seconds,
            "expiry": short_certificate(held, work, key, certificate)}


SHORT_VALIDITY_S = 40
REFUSAL = "Certificate invalid: expired"  # sshd (auth2-pubkey.c) on a certificate past its validity


def short_certificate(held, work: Path, key: Path, certificate: Path) -> dict:
    """Signs ``key`` again, as ``scripts/ssh_cert.py`` does but valid for
    :data:`SHORT_VALIDITY_S` s (the script's floor is an hour), logs in to the app node with it,
    waits out its validity, and logs in again with the same certificate (the edge hop keeps
    ``certificate``, so the refusal is the app node's). Returns both results and what the
    collector holds of the refusal."""
    lab = held.lab
    app, edge = held.lab_capture.hosts[APP], held.lab_capture.hosts[EDGE]
    identity = f"lab-short-{secrets.token_hex(4)}@example.com"
    ca = work / "ca"
    ca.touch(mode=0o600)
    ca.write_text(held.memory.secrets["platform:ssh_ca_private_key"].strip() + "\n")
    short = work / "short.pub"
    short.write_bytes(Path(f"{key}.pub").read_bytes())
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", identity, "-n", "oncall",
                    "-V", f"-5m:+{SHORT_VALIDITY_S}s", "-z", str(secrets.randbelow(2**62)), str(short)],
                   check=True, capture_output=True, timeout=30)
    ca.unlink()
    signed_at = time.monotonic()
    argv = login_argv(lab, edge, app, key, work / "short-cert.pub", jump_certificate=certificate) + ["id", "-un"]
    valid = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    time.sleep(max(0.0, SHORT_VALIDITY_S + 3 - (time.monotonic() - signed_at)))
    # sshd's refusal line names no key: this attempt's is the one that was not there before it.
    before = collected(lab, [REFUSAL], within_s=0)[REFUSAL]
    expired = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    deadline = time.monotonic() + 30
    while (after := collected(lab, [REFUSAL], within_s=0)[REFUSAL]) == before and time.monotonic() < deadline:
        time.sleep(2)
    return {"valid": (valid.returncode, valid.stdout.strip(), valid.stderr[-400:]),
            "expired": (expired.returncode, expired.stdout.strip(), expired.stderr[-400:]),
            "refusal": [line for line in after if line not in before]}


@pytest.fixture(scope="module")
def session(staging_rehearsal, tmp_path_factory):
    assert staging_rehearsal.report.error is None, staging_rehearsal.report.text()
    work = tmp_path_factory.mktemp("session")
    work.chmod(0o700)
    return run_session(staging_rehearsal, work)


def test_the_admin_session_logs_in_with_a_short_lived_certificate(session):
    login = session["login"]
    assert login["error"] is None and login["status"] == 0, (login["error"], login["status"], login["transcript"][-1500:])
    # The command's own output line (the terminal also echoes what was typed, which holds more).
    ran = any(line.strip() == session["marker"] for line in login["transcript"].splitlines())
    assert ran, login["transcript"][-1500:]


def test_the_session_and_its_command_are_recorded_on_the_monitoring_host(session):
    found = session["found"]
    print(session["audit"], session["seconds"], found)
    assert found[session["identity"]], f"sshd's login line (key ID {session['identity']}) was not shipped: {found}"
    assert any("Accepted publickey for ops" in line for line in found[session["identity"]]), found
    records = found[session["marker"]]
    assert records, f"the marker command's record was not shipped: {found}"
    # Filed under the sender's address: the app node's, not a name the sender claims.
    assert all(line.startswith(f"{COLLECTED}/{session['app_address']}.log: ") for line in records), records
    if session["audit"][0] == 0:
        assert any("type=EXECVE" in line and "emulated" not in line for line in records), \
            f"auditd runs here, so the kernel's own EXECVE record must be shipped: {records}"
    else:
        # The gap, stated: the kernel refuses audit in a box, the record is the hand-off's emulation.
        assert all("emulated" in line for line in records), records


def test_the_account_cannot_erase_the_shipped_record_from_the_source_host(session):
    out = session["login"]["transcript"]
    exits = re.findall(r"edge-ssh-exit=(\d+)", out)
    copies = re.findall(r"local-copies=(\d+)", out)
    assert exits and int(exits[-1]) != 0, f"the admin account reached the monitoring host over SSH: {out[-1500:]}"
    assert copies and int(copies[-1]) == 0, f"the erase attempt left local copies (the probe proves nothing): {out[-1500:]}"
    # Re-read after the session ended: what was shipped is still there.
    assert session["found"][session["marker"]] and session["found"][session["identity"]], session["found"]


def test_the_same_certificate_is_refused_once_its_validity_has_ended(session):
    expiry = session["expiry"]
    assert expiry["valid"][:2] == (0, "ops"), expiry
    assert expiry["expired"][0] == 255 and expiry["expired"][1] == "", expiry
    assert "Permission denied" in expiry["expired"][2], expiry
    # sshd's reason, shipped from the app node like the session's own lines.
    assert any(line.startswith(f"{COLLECTED}/{session['app_address']}.log: ") for line in expiry["refusal"]), expiry
