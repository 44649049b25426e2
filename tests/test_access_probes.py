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
