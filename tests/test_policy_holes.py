"""Holes a new user's review found in the policy pack, each run the way an operator runs it
(``python -m synth check STATE --config policy/config.<stack>.json``) or on the committed
config: SSH from an admin CIDR in prod, waivers that switch the pack off, and /8 sources that
did not count as the internet."""

from __future__ import annotations

import copy
import datetime
import json
import subprocess
import sys

import pytest

from policy.offline import evaluate, load_policy_config
from policy.rules import POLICIES
from policy.rules.base import is_world
from policy.rules.fixtures import container, doc
from synth.engine import PROJECT_ROOT
from tests.conftest import synth_once

pytestmark = pytest.mark.fast

BY_NAME = {p.name: p for p in POLICIES}
SSH = "platform-ssh-configure-management-network-only"
ADMIN = "198.51.100.10/32"


def _named(state, name):
    return next(r for r in state["resources"] if r["name"] == name)


def _check(tmp_path, state, config_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    return subprocess.run([sys.executable, "-m", "synth", "check", str(path), "--config", str(config_path)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def prod_state():
    return synth_once("prod", reveal_secrets=True)


def test_prod_ssh_from_an_admin_cidr_is_a_mandatory_violation_with_the_committed_config(prod_state, tmp_path):
    state = copy.deepcopy(prod_state)
    _named(state, "kro-prod-firewall")["inputs"]["inboundRules"].append(
        {"protocol": "tcp", "portRange": "22", "sourceAddresses": [ADMIN]})
    ufw = _named(state, "pencom-prod-edge-setup-ufw")["inputs"]
    ufw["stdin"] += "\nufw allow from 198.51.100.10 to any port 22 proto tcp\n"
    result = _check(tmp_path, state, PROJECT_ROOT / "policy" / "config.prod.json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert (f"[mandatory] {SSH}: firewall kro-prod-edge admits SSH from {ADMIN}, outside the management "
            "network") in result.stdout
    assert f"[mandatory] {SSH}: UFW of pencom-prod-edge-setup-ufw admits SSH from 198.51.100.10" in result.stdout


@pytest.mark.parametrize("stack, expected", [("prod", True), ("staging", False)])
def test_the_committed_configs_say_whether_ssh_must_come_from_the_management_network(stack, expected):
    assert load_policy_config(stack)[SSH] == {"production": expected}


def _write(tmp_path, config):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(config))
    return path


def _unsafe_doc():
    return doc(container("kro-prod-backend", privileged=True))


SOON = str(datetime.date.today() + datetime.timedelta(days=30))
WAIVER = {"name": "temp", "reason": "migration in progress", "expires": SOON, "resources": ["kro-*-backend"]}


@pytest.mark.parametrize("config, problem", [
    ({"all": {"waivers": [{**WAIVER, "expires": "2031-12-01", "resources": ["*"]}]}},
     "all.waivers: a waiver under all would excuse every policy; declare it under the policy it excuses"),
    ({"docker-container-disallow-privileged": {"waivers": [{**WAIVER, "resources": ["*"]}]}},
     "docker-container-disallow-privileged.waivers[0].resources[0]: \"*\" matches every resource"),
    ({"docker-container-disallow-privileged": {"waivers": [{**WAIVER, "resources": ["*-*"]}]}},
     "docker-container-disallow-privileged.waivers[0].resources[0]: \"*-*\" matches every resource"),
    ({"docker-container-disallow-privileged": {"waivers": [{**WAIVER, "name": "kro-prod-backend", "resources": None}]}},
     "docker-container-disallow-privileged.waivers[0].resources: list the resource names or flows"),
    ({"docker-container-disallow-privileged": {"waivers": [{**WAIVER, "expires": "2031-12-01"}]}},
     "docker-container-disallow-privileged.waivers[0].expires: 2031-12-01 is more than 180 days from today"),
    ({"docker-container-disallow-privileged": {"waivers": [{**WAIVER, "expires": "9999-12-31"}]}},
     "docker-container-disallow-privileged.waivers[0].expires: 9999-12-31 is more than 180 days from today"),
    ({"docker-container-disallow-privileged": {"waivers": [{**WAIVER, "expires": "soon"}]}},
     "docker-container-disallow-privileged.waivers[0].expires: must be a date YYYY-MM-DD"),
])
def test_a_waiver_that_would_switch_the_pack_off_is_refused_with_exit_2(tmp_path, config, problem):
    result = _check(tmp_path, _unsafe_doc(), _write(tmp_path, config))
    assert result.returncode == 2, result.stdout + result.stderr
    assert problem in result.stderr and "Traceback" not in result.stderr
    assert "no violations" not in result.stdout


def test_a_waiver_naming_the_resources_within_180_days_is_accepted_and_excuses_them():
    from policy.offline import check_policy_config

    name = "docker-container-disallow-privileged"
    config = check_policy_config({name: {"waivers": [WAIVER]}}, "test")
    assert evaluate(_unsafe_doc(), {}, policies=[BY_NAME[name]]) != []
    assert evaluate(_unsafe_doc(), config, policies=[BY_NAME[name]]) == []


def test_at_run_time_a_waiver_excuses_nothing_by_name_everywhere_or_for_years():
    """Under ``pulumi preview`` no offline check runs: the waiver itself must not match."""
    name = "docker-container-disallow-privileged"
    base = "the container is privileged; it would own the host"

    def run(config):
        return [v["message"] for v in evaluate(_unsafe_doc(), {name: config}, policies=[BY_NAME[name]])]

    assert run({"waivers": [{**WAIVER, "name": "kro-prod-backend", "resources": []}]}) == [base]
    assert run({"waivers": [{**WAIVER, "resources": ["*"]}]}) == [base]
    assert run({"waivers": [{**WAIVER, "expires": "9999-12-31"}]}) == [
        f"{base} (waiver temp expires 9999-12-31, more than 180 days ahead, so it excuses nothing)"]
    assert run({"waivers": [WAIVER]}) == []


def test_the_register_of_ufw_waivers_excuses_none_of_its_own_findings():
    from policy.rules.fixtures import script

    name = "platform-waiver-configure-reason-and-expiry"
    state = doc(script("p-data-ufw", body="ufw allow proto tcp from 10.0.0.1/32 to any port 5432  # waiver: undeclared\n"))
    config = {"waivers": [{**WAIVER, "name": "x", "resources": ["p-data-ufw"]}]}
    assert [v["message"] for v in evaluate(state, {name: config}, policies=[BY_NAME[name]])] == [
        "p-data-ufw carries waiver undeclared, which the policy config does not declare"]


@pytest.mark.parametrize("source, world", [
    ("0.0.0.0/0", True), ("::/0", True), ("8.0.0.0/8", True), ("2000::/8", True), ("198.51.0.0/23", True),
    ("2001:db8::/47", True), ("198.51.100.0/24", False), ("2001:db8::/48", False), (ADMIN, False),
    ("10.0.0.0/8", False), ("fc00::/7", False), ("any", True), ("not-a-cidr", False)])
def test_the_internet_is_any_public_range_wider_than_the_admin_cidr_bound(source, world):
    assert is_world(source) is world


@pytest.mark.parametrize("source", ["8.0.0.0/8", "2000::/8"])
def test_staging_ssh_from_a_slash_8_is_ssh_from_the_internet(tmp_path, source):
    state = copy.deepcopy(synth_once("staging", reveal_secrets=True))
    _named(state, "kro-staging-firewall")["inputs"]["inboundRules"].append(
        {"protocol": "tcp", "portRange": "22", "sourceAddresses": [source]})
    violations = evaluate(state, load_policy_config("staging"))
    assert [(v["policy"], v["level"], v["message"]) for v in violations] == [
        ("digitalocean-firewall-disallow-public-non-web", "mandatory",
         "firewall kro-staging-edge opens port 22 to the internet; an edge firewall opens only 80 and 443"),
        ("digitalocean-firewall-disallow-public-admin-ports", "mandatory",
         "firewall kro-staging-edge opens SSH (22) to the internet; allow only admin CIDRs or internal peers"),
        ("platform-stack-configure-tier-reachability", "mandatory",
         "internet -> kro-staging-edge (edge) on 22: only the edge tier on 80/443 faces the internet")]
