"""The lab's probe positions (rehearsal/checks/probes.py) without a lab: the container a probe
enters, the addresses it gives, the provider firewall it renders (checked by the real
iptables-restore when it is here), and how the matrix picks a site per target host."""

from __future__ import annotations

import json
import subprocess
from types import SimpleNamespace

import pytest

from rehearsal import overlay
from rehearsal.checks import probes
from rehearsal.checks import reachability as rm
from tests.conftest import require_root, require_tool


def _inspect(name, service, tier, pid, networks, running=True):
    return {"Name": f"/{name}", "State": {"Running": running, "Pid": pid if running else 0},
            "Config": {"Labels": {"platform.service": service, "platform.tier": tier}},
            "NetworkSettings": {"Networks": {n: {"IPAddress": ip, "IPPrefixLen": 24} for n, ip in networks.items()}}}


DOC = json.dumps([
    _inspect("kro-staging-nginx-1", "nginx", "edge", 101, {"kro-staging": "172.20.0.2"}),
    _inspect("kro-staging-prometheus-1", "prometheus", "mgmt", 102, {"kro-staging": "172.20.0.3"}),
    _inspect("kro-staging-backend-1", "backend", "app", 103, {"kro-staging": "172.20.0.4"}),
    _inspect("kro-staging-admin-frontend-1", "admin-frontend", "app", 104, {"kro-staging": "172.20.0.5"}),
    _inspect("stopped", "frontend", "app", 0, {"kro-staging": "172.20.0.6"}, running=False),
    _inspect("hostnet", "agent", "mgmt", 106, {"host": ""}),
])


@pytest.mark.fast
def test_inspect_keeps_running_containers_with_an_address():
    found = probes.parse_inspect(DOC)
    assert [c.name for c in found] == ["kro-staging-nginx-1", "kro-staging-prometheus-1", "kro-staging-backend-1",
                                       "kro-staging-admin-frontend-1"]
    assert found[2].addresses == {"kro-staging": ("172.20.0.4", 24)} and found[2].subnets == ["172.20.0.0/24"]


@pytest.mark.fast
def test_the_container_probe_is_an_app_container_when_the_host_runs_one():
    found = probes.parse_inspect(DOC)
    assert probes.probe_container(found).name == "kro-staging-admin-frontend-1"
    assert probes.probe_container([c for c in found if c.tier != "app"]).name == "kro-staging-nginx-1"
    assert probes.probe_container([c for c in found if c.tier == "mgmt"]).name == "kro-staging-prometheus-1"
    assert probes.probe_container([]) is None


@pytest.mark.fast
def test_probe_addresses_are_outside_the_admin_address_and_every_box():
    assert probes.INTERNET_PROBE in [str(a) for a in overlay.PUBLIC.hosts()]
    assert probes.INTERNET_PROBE != str(overlay.HARNESS)
    assert probes.INTERNET_WEB in [str(a) for a in overlay.INTERNET.hosts()]
    assert probes.neighbour_address("10.201.0.0/24", 3) == "10.201.0.203"


@pytest.mark.fast
def test_a_lab_adapter_gives_container_web_and_direct_addresses_and_sites_per_host():
    lab = SimpleNamespace(netns="ns", networks={"public": "10.200.0.0/24"}, harness_docker_host="unix:///x",
                          boxes={"kro-staging": SimpleNamespace(addresses={"public": "10.200.0.11"})})
    topo = rm.Topology({"kro-staging": rm.Host("kro-staging", "kro", "edge", ("public",), (), frozenset(), frozenset())}, ())
    lp = probes.LabProbes(lab, {"kro-staging": ("kro", ("public",))})
    lp.containers["kro-staging"] = probes.parse_inspect(DOC)
    lp.box_pids["kro-staging"] = 4242
    lp.neighbours["kro-staging"] = "ns-nb0"
    lp.internet = "ns-inet"
    config = {"platform:pencom": {"egress": {"direct": [{"name": "oracle-ecrs", "cidrs": ["10.50.8.20/32"], "port": 1521}]}}}
    address_of = rm.lab_address_of(lab, topo, probes=lp, stack_config=config,
                                   translate=lambda a: {"10.50.8.20": "10.203.0.7"}.get(a, a))
    assert address_of(rm.Target("kro-staging", "container", 8080, service="kro-staging-backend")) == "172.20.0.4"
    assert address_of(rm.Target("kro-staging", "container", 8080, service="kro-staging-nothing")) is None
    assert address_of(rm.Target("kro-staging", "internet", 443)) == probes.INTERNET_WEB
    assert address_of(rm.Target("kro-staging", "direct:oracle-ecrs", 1521, service="oracle-ecrs")) == "10.203.0.7"
    assert address_of(rm.Target("kro-staging", "public", 443)) == "10.200.0.11"

    no_pid = SimpleNamespace(returncode=1, stdout="")
    sites = rm.lab_probe_sites(lab, topo, probes=lp, run=lambda *a, **k: no_pid)
    # The internet probe runs in a namespace of its own (from the harness namespace the daemon
    # masquerades it to the gateway, the admin address); the admin probe leaves from the gateway.
    assert sites["internet"].argv_prefix == ("nsenter", "--net=/run/netns/ns-inet") and sites["internet"].source is None
    assert sites["admin"].source == "10.200.0.1"
    assert sites["containers:kro-staging"].argv_prefix == (
        "nsenter", "--net=/proc/4242/root/proc/104/ns/net")
    assert sites["neighbour@kro-staging"].argv_prefix == ("nsenter", "--net=/run/netns/ns-nb0")
    assert "neighbour" not in sites and "host:kro-staging" not in sites

    tried = []

    def run(argv, **kwargs):
        tried.append(argv)
        return subprocess.CompletedProcess(argv, 1, "", "")

    cell = rm.Expectation("neighbour", rm.Target("kro-staging", "public", 443), True, "edge")
    [observation] = rm.probe_matrix([cell], sites, address_of, run=run)
    assert tried == [["nsenter", "--net=/run/netns/ns-nb0", *rm.nc_argv("10.200.0.11", 443)]]
    assert observation.status == "fail"


@pytest.mark.fast
def test_a_container_on_two_networks_is_probed_at_its_address_on_the_probe_containers_network():
    """KRO's nginx joins the backend's own network (172.31.250.240/28, whose addresses sort
    first); the matrix's "its own bridge" cell from ``containers:H`` (an app container on the
    host's network) must aim at nginx's address there, which the bridge lock lets through."""
    lp = probes.LabProbes(SimpleNamespace(), {})
    lp.containers["kro-staging"] = probes.parse_inspect(json.dumps([
        _inspect("kro-staging-nginx-1", "nginx", "edge", 101,
                 {"kro-staging": "172.31.251.130", "kro-staging-backend": "172.31.250.242"}),
        _inspect("kro-staging-backend-1", "backend", "app", 103, {"kro-staging-backend": "172.31.250.243"}),
        _inspect("kro-staging-admin-frontend-1", "admin-frontend", "app", 104, {"kro-staging": "172.31.251.131"})]))
    assert probes.probe_container(lp.containers["kro-staging"]).name == "kro-staging-admin-frontend-1"
    assert lp.container_address("kro-staging", "kro-staging-nginx") == "172.31.251.130"
    assert lp.container_address("kro-staging", "kro-staging-backend") == "172.31.250.243"


FIREWALL = [{"protocol": "tcp", "sourceAddresses": ["0.0.0.0/0", "::/0"], "portRange": "443"},
            {"protocol": "tcp", "sourceAddresses": ["198.51.100.10/32"], "portRange": "22"},
            {"protocol": "udp", "sourceAddresses": ["10.0.0.0/8"], "portRange": "60000-61000"},
            {"protocol": "icmp", "sourceAddresses": ["0.0.0.0/0"]}]


@pytest.mark.fast
def test_the_droplet_firewall_admits_its_rules_sources_and_drops_the_rest():
    rules = probes.droplet_firewall_rules(FIREWALL, translate=lambda s: s.replace("198.51.100.10", "10.200.0.1"))
    chain = probes.FIREWALL_CHAIN
    assert rules.splitlines() == [
        "*mangle", f":{chain} - [0:0]", f"-F {chain}",
        f"-A {chain} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN",
        f"-A {chain} -p tcp --dport 443 -s 0.0.0.0/0 -j RETURN",
        f"-A {chain} -p tcp --dport 22 -s 10.200.0.1/32 -j RETURN",
        f"-A {chain} -p udp --dport 60000:61000 -s 10.0.0.0/8 -j RETURN",
        f"-A {chain} -p icmp -s 0.0.0.0/0 -j RETURN",
        f"-A {chain} -j DROP", f"-I PREROUTING -i eth+ -j {chain}", "COMMIT"]


@pytest.mark.realtool
def test_the_droplet_firewall_restores_into_a_namespace_and_applies_once(tmp_path):
    require_tool("iptables-restore", "Debian package iptables")
    require_tool("unshare", "util-linux")
    require_root("a network namespace of its own")
    rules = probes.droplet_firewall_rules(FIREWALL)
    script = (f"printf '%s' \"$RULES\" | sh -c '{probes.APPLY_FIREWALL}' && "
              f"printf '%s' \"$RULES\" | sh -c '{probes.APPLY_FIREWALL}' && iptables -t mangle -S PREROUTING")
    result = subprocess.run(["unshare", "--net", "sh", "-c", script], env={"RULES": rules, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(f"-j {probes.FIREWALL_CHAIN}") == 1, result.stdout


@pytest.mark.fast
def test_a_droplet_firewall_comes_from_the_capture_through_the_overlay():
    state = {"resources": [{"type": "digitalocean:index/firewall:Firewall", "name": "kro-staging-firewall",
                            "inputs": {"inboundRules": FIREWALL[1:2]}},
                           {"type": "digitalocean:index/droplet:Droplet", "name": "kro-staging", "inputs": {}}]}
    found = rm.lab_firewalls(state, lambda s: s.replace("198.51.100.10", "10.200.0.1"))
    assert list(found) == ["kro-staging"] and "-s 10.200.0.1/32" in found["kro-staging"]


@pytest.mark.fast
@pytest.mark.parametrize("errors,detail", [
    ({"neighbour@kro-staging": "veth: busy"}, "no probe site for this position: veth: busy"),
    ({}, "no probe site for this position"),
])
def test_a_not_proven_cell_names_what_the_lab_could_not_set_up(errors, detail):
    cell = rm.Observation("neighbour", rm.Target("kro-staging", "public", 443), "", True, None, "edge",
                          "no probe site for this position")
    assert rm._unset_up(cell, errors).detail == detail
