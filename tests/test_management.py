"""The management plane (issue #22, part 2): the config boundary of ``environment.management``,
the rules it becomes (SSH only from the WireGuard network in prod, admin_cidrs only under
break-glass), and the hosts' wg0.conf as rendered."""

from __future__ import annotations

import datetime
import ipaddress
import re
import subprocess
import sys

import pytest
import yaml

from components import wireguard
from stacks import management
from stacks.config import validate_stack_config
from stacks.errors import ConfigError
from synth.engine import PROJECT_ROOT
from synth.state import State
from synth.stackfile import _as_config_string
from tests.conftest import synth_once

pytestmark = pytest.mark.fast

COMMAND = "command:remote:Command"
FIREWALL = "digitalocean:index/firewall:Firewall"
KEY = "QJKpf8AA3kUUN9j4XYtLlsxUi13Qcy013y6c45KxXok="
UFW_SSH = re.compile(r"^ufw allow proto tcp from (\S+) to any port 22 ")


def _document(stack: str) -> dict:
    return yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text())


def _problems(document: dict, stack: str) -> list[str]:
    raw = {k.split(":", 1)[1]: _as_config_string(v) for k, v in document["config"].items()}
    try:
        validate_stack_config(raw, check_secrets=False, stack=stack)
    except ConfigError as error:
        return error.problems
    return []


def _management(document: dict) -> dict:
    return document["config"]["platform:environment"]["management"]


def test_a_bad_peer_key_is_one_error_with_its_key_path_exit_2(tmp_path):
    document = _document("prod")
    _management(document)["peers"][0]["public_key"] = "not-a-key"
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(document))
    result = subprocess.run([sys.executable, "-m", "synth", "prod", "--stack-file", str(path)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("  - platform:environment.management.peers[0] (deploy-runner).public_key: ")
    assert "is not a WireGuard key" in lines[0]
    assert "nothing was registered" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("value,why", [
    (KEY[:-2] + "=", "44 characters"),
    ("!" * 43 + "=", "not base64"),
    ("A" * 42 + "==", "bytes, not 32"),
    ("A" * 43 + "=", "all-zero key"),
])
def test_key_format(value, why):
    assert why in wireguard.key_problem(value)
    assert wireguard.key_problem(KEY) is None


@pytest.mark.parametrize("mutate,path,message", [
    (lambda m: m["peers"].append({"name": "alice", "public_key": KEY, "address": "10.99.0.20"}),
     "platform:environment.management.peers[1] (alice).public_key", "is also the key of"),
    (lambda m: m["peers"].append({"name": "bob", "public_key": wireguard.public_key(KEY), "address": "10.99.0.16"}),
     "platform:environment.management.peers[1] (bob).address", "is also the address of"),
    (lambda m: m["peers"].__setitem__(0, dict(m["peers"][0], address="10.98.0.16")),
     "platform:environment.management.peers[0] (deploy-runner).address", "outside management.network 10.99.0.0/24"),
    (lambda m: m["peers"].__setitem__(0, dict(m["peers"][0], address="10.99.0.3")),
     "platform:environment.management.peers[0] (deploy-runner).address", "is reserved"),
    (lambda m: m.__setitem__("network", "10.96.0.0/12"),
     "platform:environment.management.network", "/16 to /27"),
    (lambda m: m.__setitem__("peers", []),
     "platform:environment.management.peers", "nobody, the deploy runner included"),
    (lambda m: m.__setitem__("break_glass", {"enabled": True, "expires": str(datetime.date.today())}),
     "platform:environment.management.break_glass.reason", "is required"),
    (lambda m: m.__setitem__("break_glass", {"enabled": True, "reason": "INC-42 gateway down"}),
     "platform:environment.management.break_glass.expires", "is required in production"),
    (lambda m: m.__setitem__("break_glass", {"enabled": True, "reason": "INC-42 gateway down",
                                             "expires": "2020-01-01"}),
     "platform:environment.management.break_glass.expires", "has passed"),
    (lambda m: m.__setitem__("break_glass", {"enabled": True, "reason": "INC-42 gateway down",
                                             "expires": str(datetime.date.today() + datetime.timedelta(days=30))}),
     "platform:environment.management.break_glass.expires", "more than 7 days ahead"),
])
def test_the_boundary_refuses_each_mistake_at_its_key(mutate, path, message):
    document = _document("prod")
    mutate(_management(document))
    problems = _problems(document, "prod")
    assert len(problems) == 1, problems
    assert problems[0].startswith(path + ":") and message in problems[0], problems


def test_a_network_that_only_holds_the_endpoints_is_refused():
    """A /28's 16 addresses are the endpoints' own: the peer is refused too, and the network
    error says which prefixes leave room."""
    document = _document("prod")
    _management(document)["network"] = "10.99.0.0/28"
    problems = _problems(document, "prod")
    assert ("platform:environment.management.network: 10.99.0.0/28: use an IPv4 network from /16 to /27 "
            "(room for the 16 endpoint addresses and the peers)") in problems, problems


def test_pencoms_networks_stay_apart_from_the_management_network():
    document = _document("prod")
    _management(document)["network"] = "10.40.0.0/24"
    _management(document)["peers"][0]["address"] = "10.40.0.16"
    problems = _problems(document, "prod")
    assert problems == ["platform:environment.management.network: 10.40.0.0/24 overlaps platform:pencom.internal_cidr "
                        "(10.40.0.0/24): a peer's replies would go into that network; choose a private range apart "
                        "from every network of the stack"], problems


def test_break_glass_within_a_week_with_a_reason_is_accepted_in_prod():
    document = _document("prod")
    _management(document)["break_glass"] = {"enabled": True, "reason": "first deploy of the endpoints",
                                            "expires": str(datetime.date.today() + datetime.timedelta(days=3))}
    assert _problems(document, "prod") == []


def test_committed_prod_keeps_break_glass_off_and_staging_says_why_it_is_on():
    prod = management.Management.model_validate(_management(_document("prod")))
    staging = management.Management.model_validate(_management(_document("staging")))
    assert not prod.break_glass.enabled and prod.peers
    assert staging.break_glass.enabled and staging.break_glass.reason
    assert not ipaddress.ip_network(prod.network).overlaps(ipaddress.ip_network(staging.network))


def _ssh_sources(state: State) -> dict[str, set[str]]:
    """Every UFW SSH source per setup script, and every DigitalOcean Firewall's port-22 sources."""
    found: dict[str, set[str]] = {}
    for command in state.of_type(COMMAND):
        for line in command["inputs"].get("stdin", "").splitlines():
            match = UFW_SSH.match(line.strip())
            if match:
                found.setdefault(command["name"], set()).add(match.group(1))
    for firewall in state.of_type(FIREWALL):
        for rule in firewall["inputs"]["inboundRules"]:
            if rule["portRange"] == "22":
                found.setdefault(firewall["name"], set()).update(rule.get("sourceAddresses", []))
    return found


def test_prod_admits_ssh_only_from_the_management_network_or_the_bastion():
    state = State(synth_once("prod"))
    network = ipaddress.ip_network(_management(_document("prod"))["network"])
    internal = ipaddress.ip_network(_document("prod")["config"]["platform:pencom"]["internal_cidr"])
    sources = _ssh_sources(state)
    assert sources, "no SSH rule found at all"
    for where, cidrs in sources.items():
        for cidr in cidrs:
            parsed = ipaddress.ip_network(cidr)
            assert parsed.subnet_of(network) or (parsed.num_addresses == 1 and parsed.subnet_of(internal)), \
                f"{where} admits SSH from {cidr}"
    assert not any(name.endswith("-firewall") for name in sources), "a cloud firewall admits SSH in prod"
    # Every entry host is an endpoint: Pencom's edge, KRO's droplet, GIV's ops droplet.
    keys = {r["name"] for r in state.of_type("random:index/randomBytes:RandomBytes")}
    assert keys == {"pencom-prod-edge-wg-key", "kro-prod-wg-key", "giv-prod-ops-wg-key"}


def test_staging_admits_admin_cidrs_under_its_break_glass():
    document = _document("staging")
    admin = set(document["config"]["platform:environment"]["admin_cidrs"])
    sources = _ssh_sources(State(synth_once("staging")))
    assert sources["pencom-staging-edge-setup-ufw"] == {_management(document)["network"], *admin}
    assert sources["vedfinance-staging-setup-ufw"] == {_management(document)["network"], *admin}


def test_the_wireguard_script_is_secret_and_holds_the_rendered_config():
    state = State(synth_once("prod", reveal_secrets=True))
    script = state.named("pencom-prod-edge-setup-wireguard", COMMAND)["inputs"]["stdin"]
    assert "ensure_packages wireguard-tools" in script
    assert "Address = 10.99.0.3/24" in script and "ListenPort = 51820" in script
    assert f"PublicKey = {KEY}\nAllowedIPs = 10.99.0.16/32" in script
    assert "wg-quick strip /etc/wireguard/wg0.conf" in script and "ensure_service_enabled wg-quick@wg0 wg_up" in script
    hidden = State(synth_once("prod")).named("pencom-prod-edge-setup-wireguard", COMMAND)
    assert "stdin" in hidden.get("secret_inputs", []) or "PrivateKey" not in str(hidden["inputs"])


def test_render_admits_each_peer_at_its_one_address():
    endpoint = wireguard.Endpoint(address="10.99.0.1", network="10.99.0.0/24", peers=(
        wireguard.Peer("a", KEY, "10.99.0.16"), wireguard.Peer("b", wireguard.public_key(KEY), "10.99.0.17")))
    text = wireguard.render_wg_conf(endpoint, KEY)
    assert text.count("[Peer]") == 2 and "AllowedIPs = 10.99.0.17/32" in text
    with pytest.raises(ValueError):
        wireguard.Endpoint(address="10.98.0.1", network="10.99.0.0/24", peers=())
