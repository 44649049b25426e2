"""The exposure probes' own logic (rehearsal/checks/access.py) without a lab: what they read from
the jail the stack writes, from a container's mounts and from the SSH client's refusal."""

from __future__ import annotations

import pytest

from rehearsal.checks import access, datastores
from rehearsal.checks.probes import BoxContainer
from components.hostsetup import render_fail2ban_jail


pytestmark = pytest.mark.fast


def test_the_jail_the_stack_writes_gives_maxretry_and_ignoreip():
    jail = render_fail2ban_jail(("10.200.0.1/32",))
    assert access.written_jail({"/etc/fail2ban/jail.local": {"content": jail}}) == jail
    assert access.MAXRETRY.search(jail)[1] == "5"
    assert access.IGNOREIP.search(jail)[1].split() == ["127.0.0.1/8", "::1", "10.200.0.1/32"]
    assert access.written_jail({}) is None


def test_the_servers_method_list_is_read_from_the_refusal():
    stderr = "deploy@10.200.0.11: Permission denied (publickey).\r\n"
    assert access.DENIED.search(stderr)[1] == "publickey"
    assert access.DENIED.search("root@h: Permission denied (publickey,password,keyboard-interactive).")[1].split(",") == [
        "publickey", "password", "keyboard-interactive"]


def test_a_ca_path_in_a_container_maps_to_its_box_path_through_the_longest_bind():
    c = BoxContainer("web", "web", "app", 1, {"n": ("172.20.0.5", 24)},
                     mounts={"/run/platform": "/srv/x/files/web", "/run/platform/tls": "/srv/x/tls",
                             "/data": "/srv/x/data"})
    assert datastores._host_path(c, "/run/platform/ca.crt") == "/srv/x/files/web/ca.crt"
    assert datastores._host_path(c, "/run/platform/tls/ca.crt") == "/srv/x/tls/ca.crt"
    assert datastores._host_path(c, "/etc/ssl/ca.crt") is None


def test_a_database_host_is_an_address_or_a_running_service():
    pg = BoxContainer("v-postgres-1", "postgres", "data", 2, {"n": ("172.20.0.9", 24)})
    assert datastores._resolve([pg], "postgres") == "172.20.0.9"
    assert datastores._resolve([pg], "10.201.0.13") == "10.201.0.13"
    assert datastores._resolve([pg], "redis") is None


def test_a_verify_full_client_names_the_stack_address_the_certificate_carries():
    # Pencom's URLs name the data node by its address; the lab rewrote it, the certificate not.
    stack = {"10.201.0.13": "10.41.0.13"}.get
    assert datastores.server_name("10.201.0.13", stack) == "10.41.0.13"
    assert datastores.server_name("10.203.0.77", stack) == "10.203.0.77"  # no stack address: as given
    assert datastores.server_name("postgres", stack) == "postgres"
    assert datastores.server_name("db.kro.internal", stack) == "db.kro.internal"


class _BanLab:
    """A lab whose fail2ban lists the source at once and whose ban action refuses it only after
    ``lands_after`` more probes (None: never)."""

    def __init__(self, lands_after):
        self.lands_after, self.probes, self.commands = lands_after, 0, []

    def netns_argv(self, argv):
        return ["admin", *argv]

    def exec(self, box, argv, timeout=30):
        import subprocess
        self.commands.append(argv)
        out = "Status for the jail: sshd\n`- Banned IP list:\t10.200.0.254\n" if "status" in argv else "-N f2b-sshd\n"
        return subprocess.CompletedProcess(argv, 0, out.encode(), b"")

    def reaches(self, site):
        if site[0] == "admin":
            return True
        self.probes += 1
        return self.lands_after is None or self.probes <= self.lands_after


def _ban_probe(monkeypatch, lab):
    from types import SimpleNamespace
    monkeypatch.setattr(access, "_nc", lambda site, address, port: lab.reaches(site))
    monkeypatch.setattr(access, "_ssh", lambda *a, **k: None)
    clock = [0.0]
    monkeypatch.setattr(access.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(access.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    host = SimpleNamespace(name="ops", address="10.41.0.5", port=22, ssh_opts=())
    [check] = access.fail2ban_checks(lab, host, render_fail2ban_jail(()), ["outside"])
    return check


def test_a_ban_action_that_lands_after_the_listing_is_awaited(monkeypatch):
    # The first probe (reachability) and five more reach sshd: the ban lands seconds after fail2ban lists it.
    lab = _BanLab(lands_after=6)
    check = _ban_probe(monkeypatch, lab)
    assert check.status == "pass", check.detail
    assert "after 5 s" in check.detail
    assert ["fail2ban-client", "set", "sshd", "unbanip", "10.200.0.254"] in lab.commands


def test_a_listed_ban_that_never_refuses_fails_and_shows_the_chain(monkeypatch):
    lab = _BanLab(lands_after=None)
    check = _ban_probe(monkeypatch, lab)
    assert check.status == "fail"
    assert "refused False" in check.detail and "f2b-sshd" in check.detail
    assert ["fail2ban-client", "set", "sshd", "unbanip", "10.200.0.254"] in lab.commands
