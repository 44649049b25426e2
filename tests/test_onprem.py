"""OnPremVps: exceptions to the tier model are named waivers, visible in the plan and the policy."""

from __future__ import annotations

import pulumi
import pytest

from components import hostsetup, tiers
from components.onprem import OnPremVps, OnPremVpsArgs
from policy.offline import evaluate
from policy.rules import POLICIES

pytestmark = pytest.mark.fast

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


def _synth_with_secret(path, key: str, value: str, preview: bool = False):
    """The synth of a stack file with ``key`` set as a secret to ``value`` (as `pulumi config set
    --secret` would), the other secrets filled with placeholders."""
    from synth.engine import program_from_main, run_program
    from synth.run import with_placeholder_secrets
    from synth.stackfile import load_stack_file

    file = load_stack_file(path, "staging", "platform")
    with_placeholder_secrets(file)
    file.config[key] = value
    if key not in file.secret_keys:
        file.secret_keys.append(key)
    return run_program(program_from_main(), stack="staging", config=file.config,
                       secret_keys=file.secret_keys, preview=preview)


def _keys() -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    openssh = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    return {
        "openssh": openssh,
        "pkcs8": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()).decode(),
        "passphrase": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                        serialization.BestAvailableEncryption(b"pw")).decode(),
        "garbage": "not-a-key-but-a-secret-value",
    }


@pytest.mark.parametrize("kind, fragment", [
    ("openssh", None),
    ("pkcs8", "is not an OpenSSH private key (this is a PEM key; convert it"),
    ("passphrase", "is protected by a passphrase"),
    ("garbage", "is not an OpenSSH private key"),
])
@pytest.mark.parametrize("preview", [False, True], ids=["up", "preview"])
def test_the_deploy_users_key_is_checked_before_registration_in_both_modes(
        stack_document, write_stack, kind, fragment, preview):
    """With a bootstrap user, the deploy user is created from the key's public half: the key is
    checked on its plain value at the boundary (never inside an apply, which a preview skips),
    with its key path, and never echoed."""
    from stacks.errors import ConfigError
    from tests.diff_catalog import product_document

    document = product_document("vedfinance")
    document["config"]["platform:vedfinance"]["host"]["bootstrap_user"] = "ubuntu"
    value = _keys()[kind]
    path = write_stack(document, "staging")
    key = "platform:vedfinance_ssh_private_key"
    if fragment is None:
        capture = _synth_with_secret(path, key, value, preview)
        assert any(r["name"] == "vedfinance-staging-setup-user" for r in capture.resources)
        return
    with pytest.raises(ConfigError) as caught:
        _synth_with_secret(path, key, value, preview)
    message = str(caught.value)
    assert "nothing was registered" in message
    assert f"platform:vedfinance_ssh_private_key: the deploy user's key {fragment}" in message
    assert value.strip() not in message and "PRIVATE KEY-----" not in message.split("convert it")[0]


def test_no_bootstrap_user_no_key_format_rule(stack_document, write_stack):
    """Without a bootstrap user the key only opens SSH connections, which take PEM keys too."""
    from tests.diff_catalog import product_document

    path = write_stack(product_document("vedfinance"), "staging")
    _synth_with_secret(path, "platform:vedfinance_ssh_private_key", _keys()["pkcs8"])
