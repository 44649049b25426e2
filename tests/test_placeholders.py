"""Placeholders: the offline synth warns about them, a real deploy refuses them before any
resource is registered."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stacks.errors import ConfigError
from stacks.placeholders import OFFLINE_SYNTH, find
from synth.capture import Capture
from synth.engine import PROJECT_ROOT, program_from_main

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("value, placeholder", [
    ("198.51.100.10/32", True), ("192.0.2.1", True), ("203.0.113.21", True),
    ("2001:db8::1", True), ("2001:DB8:10::/48", True),
    ("api.ehub.pencom.example", True), ("ops@pencom.example", True), ("www.example.com", True),
    ("https://example.org/x", True), ("host.test", True), ("PLACEHOLDER-zone-id", True),
    ("4f3e2d1c0b9a88776655443322110fed", True), ("3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa", True),
    ("103.54.153.248", False), ("10.41.0.11", False), ("1.198.51.100", False), ("2001:dba::1", False),
    ("krotrust.com", False), ("myexample.com", False), ("api.example.company.io", False),
    ("require('http').get('http://127.0.0.1:3000/health')", False),
])
def test_placeholder_rules(value, placeholder):
    assert bool(find({"x": value})) is placeholder


def test_paths_name_the_key_and_the_fix():
    found = find({"environment": '{"admin_cidrs": ["10.0.0.0/8", "198.51.100.10/32"]}',
                  "pencom": {"nodes": {"edge": {"public_address": "203.0.113.21"}}}})
    assert [p.path for p in found] == ["platform:environment.admin_cidrs[1]",
                                       "platform:pencom.nodes.edge.public_address"]
    assert "office or VPN egress CIDR" in found[0].message()
    assert "node's real public address" in found[1].message()


def _openssh_private_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode()


def _run_as_deploy(stack: str) -> tuple[Capture, Exception | None]:
    """The program as a real `pulumi up` would run it: the synth's offline flag switched off."""
    from synth import run

    main = program_from_main()

    def program():
        OFFLINE_SYNTH.set(False)
        main()

    capture = Capture(project="platform", stack=stack)
    file = run.load_stack_file(run.stack_file_path(stack), stack, "platform")
    run.with_placeholder_secrets(file)
    # An operator deploying for real has set a real SSH CA key: a real deploy checks that key's
    # shape (an offline placeholder is refused as not an OpenSSH key) before the placeholders.
    file.config["platform:ssh_ca_private_key"] = _openssh_private_key()
    try:
        run.run_program(program, stack=stack, config=file.config, secret_keys=file.secret_keys,
                        capture=capture)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return capture, exc
    return capture, None


def test_a_real_deploy_refuses_placeholders_before_registering_anything():
    capture, error = _run_as_deploy("staging")
    assert isinstance(error, ConfigError), error
    text = str(error)
    assert "platform:environment.admin_cidrs[0]: '198.51.100.10/32' is a placeholder" in text
    assert "platform:kro.backup.cloudflare_account_id" in text
    assert "platform:pencom.nodes.edge.public_address" in text
    assert "synth-placeholder" not in text, "secret values are never read"
    assert [r for r in capture.resources if r["type"] != "pulumi:pulumi:Stack"] == []


def test_the_synth_warns_with_the_same_list_and_succeeds(tmp_path):
    result = subprocess.run([sys.executable, "-m", "synth", "staging"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "placeholder values that a real `pulumi up` refuses" in result.stderr
    assert "platform:environment.admin_cidrs[0]: '198.51.100.10/32' is a placeholder" in result.stderr
