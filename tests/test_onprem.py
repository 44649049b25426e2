"""OnPremVps: exceptions to the tier model are named waivers, visible in the plan and the policy."""

from __future__ import annotations

import pulumi
import pytest

from components import hostsetup, tiers
from components.onprem import OnPremVps, OnPremVpsArgs
from policy.offline import evaluate
from policy.rules import POLICIES

ROLE = tiers.HostRole(tier=tiers.Tier.DATA, ssh_cidrs=("10.0.0.1/32",), service_ports=(5432,),
                      peer_cidrs=("10.0.0.2/32",))
GATEWAY = tiers.InboundRule(5432, cidrs=("10.0.0.1/32",), reason="external-gateway reads compliance")


def test_a_rule_outside_the_tier_model_needs_a_named_waiver(run_component):
    def build():
        OnPremVps("vps3", OnPremVpsArgs(address="10.0.0.3", private_key=pulumi.Output.secret("k"),
                                        role=ROLE, extra_rules=[GATEWAY]))

    with pytest.raises(ValueError, match="need a named waiver"):
        run_component(build)


def test_the_waiver_is_on_the_ufw_line_and_in_the_plan(run_component):
    def build():
        OnPremVps("vps3", OnPremVpsArgs(address="10.0.0.3", private_key=pulumi.Output.secret("k"),
                                        role=ROLE, extra_rules=[GATEWAY],
                                        waivers={GATEWAY.reason: "gateway-reads-compliance"}))

    state = run_component(build)
    ufw = state.named("vps3-setup-ufw")["inputs"]["stdin"]
    line = next(l for l in ufw.splitlines() if "from 10.0.0.1/32 to any port 5432" in l)
    assert line.endswith("# waiver: gateway-reads-compliance")
    assert "ufw default deny incoming" in ufw
    # The script runs UFW first, before anything that could lock the program out.
    setup = [r["name"] for r in state.of_type("command:remote:Command")]
    assert state.named("vps3-setup-ufw")["urn"] in state.all_dependencies(state.named("vps3-setup-docker"))
    assert "vps3-setup-sshd" in setup


def test_a_world_open_ufw_rule_is_caught_unless_waived():
    rules = [tiers.InboundRule(5432, cidrs=("0.0.0.0/0",), reason="oops")]
    stdin = hostsetup.render_ufw_commands(rules)
    document = {"resources": [{"urn": "urn:pulumi:prod::platform::command:remote:Command::x", "type": "command:remote:Command",
                               "name": "x", "custom": True, "inputs": {"stdin": stdin}, "dependencies": []}]}
    reach = [p for p in POLICIES if p.name == "platform-stack-configure-tier-reachability"]
    assert [v["message"] for v in evaluate(document, policies=reach)] == [
        "internet -> x (unknown tier) on 5432 through UFW breaks the tier model"]


def test_a_bootstrap_user_creates_the_deploy_user_first(run_component):
    def build():
        OnPremVps("vps9", OnPremVpsArgs(address="10.0.0.9", private_key=pulumi.Output.secret("k"), role=ROLE,
                                        bootstrap_user="ubuntu"))

    state = run_component(build, reveal_secrets=True)
    user = state.named("vps9-setup-user")
    assert user["inputs"]["connection"]["user"] == "ubuntu"
    assert "useradd --create-home --shell /bin/bash deploy" in user["inputs"]["stdin"]
    assert "authorized_keys 0600 deploy:deploy" in user["inputs"]["stdin"]
    assert state.named("vps9-setup-ufw")["inputs"]["connection"]["user"] == "deploy"
    assert user["urn"] in state.all_dependencies(state.named("vps9-setup-ufw"))
    assert "AllowUsers deploy ubuntu" in state.named("vps9-setup-sshd")["inputs"]["stdin"]


@pytest.mark.parametrize("user", ["root", "deploy"])
def test_root_or_deploy_as_bootstrap_user_is_refused(run_component, user):
    def build():
        OnPremVps("vps9", OnPremVpsArgs(address="10.0.0.9", private_key=pulumi.Output.secret("k"), role=ROLE,
                                        bootstrap_user=user))

    with pytest.raises(ValueError, match="bootstrap_user"):
        run_component(build)
