"""What the checks expect, read from the captured scripts, and how the report judges a run."""

from __future__ import annotations

import pytest

from components import hostsetup
from rehearsal.capture import Step
from rehearsal.checks import directories, sshd_expectations, written_files
from rehearsal.report import FAIL, NOT_PROVEN, PASS, Check, HostReport, Report

pytestmark = pytest.mark.fast


def _step(name: str, script: str) -> Step:
    return Step(urn=name, name=name, kind="command", host="h", inputs={"stdin": script})


def test_written_files_are_read_from_the_scripts_last_writer_wins():
    first = _step("a", hostsetup.script(hostsetup.deliver_file("/etc/x.conf", "0640", "root:adm", "one\n"),
                                        hostsetup.directories_section([("/srv/d", "0750", "65534:65534")])))
    second = _step("b", hostsetup.script(hostsetup.deliver_file("/etc/x.conf", "0644", "root:root", "two",
                                                                on_change="systemctl restart x")))
    files = written_files([first, second])
    assert files["/etc/x.conf"] == {"mode": "644", "owner": "root:root", "content": "two\n", "step": "b"}
    assert directories([first, second]) == {"/srv/d": ("750", "65534:65534")}


def test_sshd_expectations_come_from_the_rendered_drop_in():
    policy = hostsetup.SshdPolicy(allow_users=("deploy", "ops"), allow_tcp_forwarding=True)
    script = hostsetup.script(hostsetup.sshd_section(policy))
    expected = {(k, v) for _, k, v in sshd_expectations(written_files([_step("s", script)]))}
    assert ("permitrootlogin", "no") in expected and ("passwordauthentication", "no") in expected
    assert ("allowusers", "deploy ops") in expected


def test_a_report_fails_on_any_failure_and_passes_only_with_two_clean_runs():
    report = Report(stack="s", hosts={"h": HostReport("h", "p", "onprem", "10.200.0.10")})
    ok = {"urn": "u", "name": "n", "host": "h", "kind": "command", "status": "ok", "seconds": 1.0,
          "exit_code": 0, "changes": 0, "changed": [], "error": None, "tail": []}
    report.add_results(1, [ok])
    assert not report.ok  # one run proves nothing
    report.add_results(2, [ok])
    report.hosts["h"].checks = [Check("a", PASS), Check("b", NOT_PROVEN, "no server")]
    assert report.ok
    report.hosts["h"].checks.append(Check("c", FAIL, "wrong mode"))
    assert not report.ok and "check failed: c: wrong mode" in report.text()
    report.hosts["h"].checks.pop()
    report.add_results(2, [{**ok, "status": "failed", "exit_code": 2, "error": "exit code 2", "tail": ["E: x"]}])
    assert not report.ok and "(exit code 2)" in report.text() and "| E: x" in report.text()
    second = Report(stack="s", hosts={"h": HostReport("h", "p", "onprem", "10.200.0.10")})
    second.add_results(1, [ok])
    second.add_results(2, [{**ok, "status": "changed", "changes": 1, "error": "second run changed 1 things"}])
    assert not second.ok and second.hosts["h"].runs[2]["failed"] == 1


def test_auditd_is_not_proven_only_where_the_kernel_refuses_audit():
    """The session-logging script leaves auditd disabled where kernel audit is refused (a
    container); the check says so instead of failing, and fails where audit works."""
    from types import SimpleNamespace

    from rehearsal.checks import check_services
    from rehearsal.report import FAIL, NOT_PROVEN

    def box(audit_rc: int):
        answers = {"systemctl is-enabled auditd": "disabled", "systemctl is-active auditd": "inactive"}

        def run(command):
            if command == "auditctl -s":
                return SimpleNamespace(rc=audit_rc, stdout="", stderr="Operation not permitted" if audit_rc else "")
            return SimpleNamespace(rc=0, stdout=answers.get(command, ""), stderr="")
        return SimpleNamespace(run=run)

    scripts = "if auditctl -s >/dev/null 2>&1; then\n  ensure_service_enabled auditd auditctl -s\nfi\n"
    refused, works = [], []
    check_services(box(1), scripts, refused)
    check_services(box(0), scripts, works)
    assert [(c.name, c.status) for c in refused] == [("unit auditd enabled and active", NOT_PROVEN)]
    assert "refuses audit" in refused[0].detail
    assert [(c.name, c.status) for c in works] == [("unit auditd enabled and active", FAIL)]


def test_wireguard_is_not_proven_only_where_the_box_has_no_wireguard_device():
    """The management-network script leaves wg-quick@wg0 disabled where the kernel has no
    WireGuard and there is no /dev/net/tun for wireguard-go; the check says so instead of
    failing, and fails where a device exists."""
    from types import SimpleNamespace

    from rehearsal.checks import check_services
    from rehearsal.report import FAIL, NOT_PROVEN

    def box(device_rc: int):
        answers = {"systemctl is-enabled wg-quick@wg0": "disabled", "systemctl is-active wg-quick@wg0": "inactive"}

        def run(command):
            if "/dev/net/tun" in command:
                return SimpleNamespace(rc=device_rc, stdout="", stderr="")
            return SimpleNamespace(rc=0, stdout=answers.get(command, ""), stderr="")
        return SimpleNamespace(run=run)

    scripts = "if wireguard_in_kernel || [ -c /dev/net/tun ]; then\n  ensure_service_enabled wg-quick@wg0 wg show wg0\nfi\n"
    missing, present = [], []
    check_services(box(1), scripts, missing)
    check_services(box(0), scripts, present)
    assert [(c.name, c.status) for c in missing] == [("unit wg-quick@wg0 enabled and active", NOT_PROVEN)]
    assert "no /dev/net/tun" in missing[0].detail
    assert [(c.name, c.status) for c in present] == [("unit wg-quick@wg0 enabled and active", FAIL)]
