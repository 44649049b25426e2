"""``rehearsal.restarts``: the services a change should restart, derived from the program's own
scripts (hand-made captures, and the real staging capture under the change drills' stack files),
and the comparison with what the boxes show, which must fail when an extra service restarts or
an expected one does not."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from components import hostsetup
from components.service_files import HostFile, Reload, render_service_script
from rehearsal import restarts
from rehearsal.capture import Host, StackCapture, Step

pytestmark = pytest.mark.fast

HOST = "app"


def _cap(*steps: Step) -> StackCapture:
    return StackCapture(stack="t", hosts={HOST: Host(name=HOST, product="p", kind="onprem", address="10.0.0.2",
                                                     user="deploy")}, steps=list(steps), products=["p"])


def _command(name: str, script: str) -> Step:
    return Step(urn=f"urn:{name}", name=name, kind="command", host=HOST, inputs={"stdin": script})


def _container(service: str, image: str) -> Step:
    return Step(urn=f"urn:c-{service}", name=f"c-{service}", kind="container", host=HOST,
                inputs={"image": image, "labels": [{"label": "platform.stack", "value": "t"},
                                                   {"label": "platform.service", "value": service}]})


def _fail2ban(ignore: tuple[str, ...] = ()) -> Step:
    return _command("fail2ban", hostsetup.script(hostsetup.fail2ban_section(ignore)))


def _service(service: str, reload: Reload, content: str) -> Step:
    script = render_service_script("t", "/srv/t", service, [HostFile("/etc/app/app.conf", "")], [content], reload)
    return _command(f"files-{service}", script)


def test_a_changed_host_file_restarts_the_unit_its_apply_names_and_nothing_else():
    before = _cap(_fail2ban(), _command("sshd", hostsetup.script(hostsetup.sshd_section(hostsetup.SshdPolicy()))))
    after = _cap(_fail2ban(("10.9.0.0/24",)), before.steps[1])
    assert restarts.expected_restarts(before, after) == {HOST: {"unit:fail2ban"}}
    assert restarts.expected_restarts(before, before) == {HOST: set()}


def test_a_reload_restarts_nothing():
    policy = hostsetup.SshdPolicy()
    before = _cap(_command("sshd", hostsetup.script(hostsetup.sshd_section(policy))))
    after = _cap(_command("sshd", hostsetup.script(hostsetup.sshd_section(hostsetup.SshdPolicy(max_auth_tries=4)))))
    assert restarts.expected_restarts(before, after) == {HOST: set()}


def test_a_service_file_restarts_its_container_only_when_its_reload_is_a_restart():
    signal, restart = Reload(signal="HUP"), Reload()
    before = _cap(_service("alertmanager", signal, "a: 1"), _service("postgres", restart, "ssl: on"))
    hup = _cap(_service("alertmanager", signal, "a: 2"), before.steps[1])
    assert restarts.expected_restarts(before, hup) == {HOST: set()}
    cert = _cap(before.steps[0], _service("postgres", restart, "ssl: off"))
    assert restarts.expected_restarts(before, cert) == {HOST: {"container:t/postgres"}}


def test_a_container_whose_inputs_changed_is_recreated_and_a_docker_restart_takes_its_part_of_units():
    unit = "[Unit]\nPartOf=docker.service\n[Service]\nType=oneshot\n"
    units = _command("units", hostsetup.script(hostsetup.deliver_file(
        "/etc/systemd/system/platform-docker-user.service", "0644", "root:root", unit,
        on_change="systemctl daemon-reload")))
    before = _cap(_container("api", "api:1"), _container("db", "pg:16"), units,
                  _command("docker", hostsetup.script(hostsetup.docker_section())))
    daemon = hostsetup.script(hostsetup.docker_section().replace('"max-file": "5"', '"max-file": "6"'))
    after = _cap(_container("api", "api:2"), before.steps[1], units, _command("docker", daemon))
    assert restarts.expected_restarts(before, after) == {
        HOST: {"container:t/api", "unit:docker", "unit:platform-docker-user"}}


def test_a_multi_line_apply_and_a_try_restart_are_read():
    script = hostsetup.script(hostsetup.deliver_file(
        "/etc/x.conf", "0644", "root:root", "x\n",
        on_change="systemctl daemon-reload &&\n  " + hostsetup.unit_apply("try-restart", "platform-wal-receive-a")))
    (apply, paths), = restarts.commits(script)
    assert paths == ["/etc/x.conf"] and "try-restart platform-wal-receive-a" in apply
    assert restarts.restarted_by(apply, script) == {"unit:platform-wal-receive-a"}


SNAPSHOT = """\
container|t|postgres|/t-postgres-1|aaa|2026-12-02T09:00:00Z
container|t|alertmanager|/t-am-1|bbb|2026-12-02T09:00:00Z
container|||/standin|ccc|2026-12-02T08:00:00Z
container|<no value>|<no value>|/eager_hopper|eee|2026-12-02T08:30:00Z
unit|fail2ban|inv1|Wed 2026-12-02 09:00:00 UTC
unit|docker|inv2|Wed 2026-12-02 09:00:00 UTC
unit|platform-wal-receive-t-wal.service|inv3|Wed 2026-12-02 09:00:00 UTC
unit|systemd-timesyncd||
"""


def _after(**edits: str) -> str:
    text = SNAPSHOT
    for old, new in edits.items():
        text = text.replace(old, new)
    return text


def test_the_snapshot_diff_names_restarted_recreated_and_reloaded_services():
    first = restarts.parse_snapshot(SNAPSHOT)
    assert "unit:systemd-timesyncd" not in first  # never ran here: nothing to compare
    assert restarts.changed(first, restarts.parse_snapshot(SNAPSHOT)) == set()
    restarted = _after(**{"aaa|2026-12-02T09:00:00Z": "aaa|2026-12-02T09:05:00Z"})
    recreated = _after(**{"/t-am-1|bbb": "/t-am-2|ddd"})
    unit = _after(inv1="inv9")
    assert restarts.changed(first, restarts.parse_snapshot(restarted)) == {"container:t/postgres"}
    assert restarts.changed(first, restarts.parse_snapshot(recreated)) == {"container:t/alertmanager"}
    assert restarts.changed(first, restarts.parse_snapshot(unit)) == {"unit:fail2ban"}
    # As the lab saw the receiver: its ".service" name and the apply's bare one are one key.
    receiver = _after(inv3="inv8")
    assert restarts.changed(first, restarts.parse_snapshot(receiver)) == {"unit:platform-wal-receive-t-wal"}
    # A backup unit's one-off tool container (no platform labels, a new one each start) is no
    # service of its own: the lab saw one as "container:<no value>/<no value>".
    assert not [k for k in first if "no value" in k or k == "container:standin"]
    tool = _after(**{"/eager_hopper|eee|2026-12-02T08:30:00Z": "/jolly_turing|fff|2026-12-02T09:05:00Z"})
    assert restarts.changed(first, restarts.parse_snapshot(tool)) == set()


def test_a_restarted_postgres_restarts_the_wal_receiver_that_streams_from_it():
    receiver = ("#!/bin/bash\npg_receivewal_() { docker run --rm -i --network \"container:$(docker ps -q "
                "--filter label=platform.service=postgres | head -n 1)\" img pg_receivewal \"$@\"; }\n")
    install = _command("wal-install", hostsetup.script(hostsetup.deliver_file(
        "/usr/local/sbin/platform-wal-receive-t-wal", "0755", "root:root", receiver)))
    before = _cap(_container("postgres", "postgres:17.2"), _container("redis", "redis:7"), install)
    assert restarts.expected_restarts(before, _cap(_container("postgres", "postgres:17.3"),
                                                   _container("redis", "redis:7"), install)) == {
        HOST: {"container:t/postgres", "unit:platform-wal-receive-t-wal"}}
    # Another container's restart leaves the receiver alone.
    assert restarts.expected_restarts(before, _cap(_container("postgres", "postgres:17.2"),
                                                   _container("redis", "redis:8"), install)) == {
        HOST: {"container:t/redis"}}


def test_the_comparison_fails_on_an_extra_restart_and_on_a_missing_one():
    expected = {HOST: {"container:t/postgres"}, "edge": set()}
    exact = restarts.compare(expected, {HOST: {"container:t/postgres"}, "edge": set()})
    assert exact[HOST]["extra"] == [] and exact[HOST]["missing"] == [] and "edge" not in exact
    extra = restarts.compare(expected, {HOST: {"container:t/postgres", "unit:fail2ban"}, "edge": {"unit:docker"}})
    assert extra[HOST]["extra"] == ["unit:fail2ban"] and extra["edge"]["extra"] == ["unit:docker"]
    missing = restarts.compare(expected, {HOST: set()})
    assert missing[HOST]["missing"] == ["container:t/postgres"] and missing[HOST]["extra"] == []


def test_the_platform_units_are_read_from_the_scripts_not_their_comments():
    cap = _cap(_fail2ban(), _command("sshd", hostsetup.script(hostsetup.sshd_section(hostsetup.SshdPolicy()))))
    assert restarts.platform_units([cap], HOST) == ["fail2ban", "ssh"]


def test_the_change_drills_expect_only_postgres_restarted_by_its_new_certificate():
    """The staging capture under each change drill's stack file, chained as the drills run: the
    derivation agrees with the hand-written cross-check in tests/rehearsal/test_drills.py."""
    from rehearsal.capture import CaptureMemory, capture
    from tests.rehearsal import test_drills

    memory = CaptureMemory()
    files = test_drills.stack_files(Path(tempfile.mkdtemp(prefix="restarts-")))
    products = ["vedfinance", "pencom"]  # the drills' hosts: V-EdFinance's VPS, Pencom's edge
    previous = capture("staging", products=products, memory=memory)
    for name, stack_file, reissue in test_drills.CHANGE_DRILLS:
        current = capture("staging", products=products, memory=memory, stack_file=files[stack_file],
                          reissue=reissue)
        expected = {h: s for h, s in restarts.expected_restarts(previous, current).items() if s}
        assert expected == test_drills.EXPECTED_RESTARTS[name], name
        previous = current
