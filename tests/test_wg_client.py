"""An operator's WireGuard client config (``scripts/wg_client.py``, issue #22 part 2): made
from the stack file's peer and the stack output ``management``, never holding a private key;
bad input is one message naming the key path, exit 2. ``tests/test_wireguard_real.py`` runs
the file through ``wg-quick`` and brings a tunnel up with it."""

from __future__ import annotations

import io
import ipaddress
import json
import subprocess
import sys

import pytest

from synth.engine import PROJECT_ROOT
from tests.conftest import synth_once

pytestmark = pytest.mark.fast

SCRIPT = PROJECT_ROOT / "scripts" / "wg_client.py"
RUNNER_KEY = "mvoUm/YykKfYv9cY/uDSUcA60HTMbM2VXotwYAxcOkQ="
"""The staging deploy runner's public key, as Pulumi.staging.yaml declares it."""
OTHER_KEY = "QJKpf8AA3kUUN9j4XYtLlsxUi13Qcy013y6c45KxXok="


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """The staging capture's stack outputs, as `pulumi stack output --json` prints them."""
    path = tmp_path_factory.mktemp("outputs") / "staging.json"
    path.write_text(json.dumps(synth_once("staging")["outputs"]))
    return path


sys.path.insert(0, str(SCRIPT.parent))
import wg_client  # noqa: E402


@pytest.fixture
def run(capsys, monkeypatch):
    """``wg_client.main`` in this process (a subprocess costs seconds of imports each):
    (exit code, stdout, stderr); argparse's own exit counts as its code."""

    def call(*args: str, stdin: str | bytes = "") -> subprocess.CompletedProcess:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
        try:
            code = wg_client.main(list(args))
        except SystemExit as exc:
            code = exc.code
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)

    return call


def test_the_command_runs_as_documented(outputs):
    result = subprocess.run([sys.executable, str(SCRIPT), "staging", "--name", "deploy-runner", "--outputs",
                             str(outputs)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("# deploy-runner"), result.stderr


def _sections(text: str) -> list[dict[str, str]]:
    sections = []
    for line in text.splitlines():
        if line.startswith("["):
            sections.append({"": line})
        elif " = " in line and not line.startswith("#"):
            key, value = line.split(" = ", 1)
            sections[-1][key] = value
    return sections


def test_the_client_config_has_the_peers_address_and_every_endpoint(outputs, run):
    result = run("staging", "--name", "deploy-runner", "--outputs", str(outputs))
    assert result.returncode == 0, result.stderr
    interface, *peers = _sections(result.stdout)
    assert interface == {"": "[Interface]", "Address": "10.98.0.16/24",
                         "PostUp": "wg set %i private-key /etc/wireguard/wg-staging.key"}
    management = json.loads(outputs.read_text())["management"]
    expected = {e["publicKey"]: e for e in management["endpoints"]}
    assert len(peers) == len(expected) == 4
    network = ipaddress.ip_network("10.98.0.0/24")
    for peer in peers:
        endpoint = expected[peer["PublicKey"]]
        assert peer["Endpoint"] == endpoint["endpoint"]
        # The tunnel carries the management network only: each endpoint's one address.
        assert peer["AllowedIPs"] == f"{endpoint['address']}/32"
        assert ipaddress.ip_network(peer["AllowedIPs"]).subnet_of(network)
        assert peer["PersistentKeepalive"] == "25"
    assert "PrivateKey" not in result.stdout


def test_the_whole_stack_output_document_may_come_on_stdin_and_the_key_is_checked(outputs, run):
    result = run("staging", "--name", "deploy-runner", "--public-key", RUNNER_KEY,
                  "--key-file", "/home/ops/.config/wg/staging.key", "--outputs", "-", stdin=outputs.read_text())
    assert result.returncode == 0, result.stderr
    assert "PostUp = wg set %i private-key /home/ops/.config/wg/staging.key\n" in result.stdout


def test_a_key_that_is_not_the_declared_one_is_refused_without_echoing_it(outputs, run):
    result = run("staging", "--name", "deploy-runner", "--public-key", OTHER_KEY, "--outputs", str(outputs))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: --public-key is not the key declared at "
                                    "platform:environment.management.peers[0] (deploy-runner).public_key")
    assert OTHER_KEY not in result.stderr and "Traceback" not in result.stderr


def test_no_private_key_is_taken_on_the_command_line(outputs, run):
    result = run("staging", "--name", "deploy-runner", "--private-key", OTHER_KEY, "--outputs", str(outputs))
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--name", "alice"], "error: platform:environment.management.peers: no peer named 'alice' "
                          "(peers: deploy-runner); add one"),
    (["--name", "deploy-runner", "--key-file", "/tmp/k; curl x|sh"], "error: --key-file is not an absolute path"),
    (["--name", "deploy-runner", "--key-file", "wg.key"], "error: --key-file is not an absolute path"),
])
def test_bad_arguments_are_one_error_exit_2(outputs, run, args, message):
    result = run("staging", *args, "--outputs", str(outputs))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _kro(m: dict) -> dict:
    return next(e for e in m["endpoints"] if e["product"] == "kro")


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("endpoints"), "has no `endpoints`"),
    (lambda m: m.update(endpoints=[e for e in m["endpoints"] if e["product"] != "giv"]),
     "management.endpoints has no entry for giv"),
    (lambda m: _kro(m).update(address="10.98.0.9"), "management.endpoints[0] (kro).address '10.98.0.9'"),
    (lambda m: m.update(network="10.99.0.0/24"), "differs from platform:environment.management"),
    (lambda m: _kro(m).update(publicKey="nope"), "management.endpoints[0] (kro).publicKey is not a"),
    (lambda m: _kro(m).update(endpoint="203.0.113.5:51821"), "its port is not 51820"),
    (lambda m: _kro(m).update(endpoint="a b:51820"), "is not ADDRESS:PORT"),
])
def test_stale_or_broken_outputs_are_one_error_exit_2(outputs, run, tmp_path, edit, message):
    result = _run_on_edited_outputs(outputs, run, tmp_path, edit)
    assert result.returncode == 2 and result.stdout == ""
    assert message in result.stderr and "Traceback" not in result.stderr


def _run_on_edited_outputs(outputs, run, tmp_path, edit):
    """The script run for the deploy runner on the stack output ``management`` as ``edit`` left it."""
    document = json.loads(outputs.read_text())["management"]
    edit(document)
    path = tmp_path / "management.json"
    path.write_text(json.dumps(document))
    return run("staging", "--name", "deploy-runner", "--outputs", str(path))


def test_outputs_that_are_not_json_and_a_failing_pulumi(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("{not json")
    with pytest.raises(wg_client.UsageError, match=r"--outputs .*: not JSON"):
        wg_client.read_outputs("staging", str(path))
    with pytest.raises(wg_client.ToolError, match="`pulumi stack output management --stack staging` failed"):
        wg_client.read_outputs("staging", None, pulumi="false")


@pytest.mark.parametrize("data,message", [
    (b'{"management": {"network": "\xff\xfe"}}', "not UTF-8 text (byte 0xff at offset 28)"),
    (b"[" * 100000 + b"]" * 100000, "JSON nested too deeply to be a stack output"),
])
@pytest.mark.parametrize("where", ["file", "stdin"])
def test_outputs_that_are_not_utf8_or_nested_too_deeply_are_one_error(run, tmp_path, data, message, where):
    """A UnicodeDecodeError and a RecursionError were tracebacks."""
    path = tmp_path / "out.json"
    path.write_bytes(data)
    source = str(path) if where == "file" else "-"
    result = run("staging", "--name", "deploy-runner", "--outputs", source, stdin=data)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"error: --outputs {source}: {message}; give the output of `pulumi stack output " \
                            "management --json`\n", result.stderr


def test_two_endpoints_for_one_product_are_refused_naming_both(outputs, run, tmp_path):
    document = json.loads(outputs.read_text())["management"]
    document["endpoints"].append({**_kro(document), "publicKey": OTHER_KEY})
    last = len(document["endpoints"]) - 1
    path = tmp_path / "management.json"
    path.write_text(json.dumps(document))
    result = run("staging", "--name", "deploy-runner", "--outputs", str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"error: management.endpoints[{last}] and management.endpoints[0] are both for 'kro': "
                             "each product has one endpoint; `pulumi up` to rewrite the output\n"), result.stderr


def test_a_bad_stack_file_is_its_key_path_exit_2(outputs, run, tmp_path):
    path = tmp_path / "Pulumi.staging.yaml"
    path.write_text((PROJECT_ROOT / "Pulumi.staging.yaml").read_text().replace(RUNNER_KEY, "nope"))
    result = run("staging", "--stack-file", str(path), "--name", "deploy-runner", "--outputs", str(outputs))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: platform:environment.management.peers[0] (deploy-runner).public_key: "
                                    "is not a WireGuard key"), result.stderr


def test_a_directory_as_the_stack_file_is_named_as_synth_names_it(outputs, run, tmp_path):
    """Was an IsADirectoryError traceback."""
    result = run("staging", "--stack-file", str(tmp_path), "--name", "deploy-runner", "--outputs", str(outputs))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"error: --stack-file {tmp_path} is a directory; give the stack file itself "
                             f"(e.g. {tmp_path / 'Pulumi.staging.yaml'})\n"), result.stderr


@pytest.mark.parametrize("edit, message", [
    (lambda m: _kro(m).update(product=["kro"]),
     "error: management.endpoints[0].product must be a product name, got a list of 1 item: the output is "
     "malformed; `pulumi up` to rewrite it\n"),
    (lambda m: _kro(m).update(product={"name": "kro"}),
     "error: management.endpoints[0].product must be a product name, got an object with keys name: the output "
     "is malformed; `pulumi up` to rewrite it\n"),
    (lambda m: m["endpoints"].insert(0, ["kro"]),
     "error: management.endpoints[0] is not an object (product, endpoint, address, publicKey): the output is "
     "malformed; `pulumi up` to rewrite it\n"),
])
def test_a_malformed_endpoint_is_one_error_naming_the_field(outputs, run, tmp_path, edit, message):
    """A list as the product was `TypeError: unhashable type`, exit 1."""
    result = _run_on_edited_outputs(outputs, run, tmp_path, edit)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == message, result.stderr


def test_the_renderer_refuses_an_address_outside_the_network():
    from components import wireguard

    peer = wireguard.Peer("alice", RUNNER_KEY, "10.98.0.17")
    outside = wireguard.RemoteEndpoint("kro", "203.0.113.5", 51820, "10.97.0.1", OTHER_KEY)
    with pytest.raises(ValueError, match="10.97.0.1 is outside the management network 10.98.0.0/24"):
        wireguard.render_client_conf(peer, "10.98.0.0/24", [outside], "/etc/wireguard/wg.key")
    inside = wireguard.RemoteEndpoint("kro", "2001:db8::5", 51820, "10.98.0.1", OTHER_KEY)
    conf = wireguard.render_client_conf(peer, "10.98.0.0/24", [inside], "/etc/wireguard/wg.key")
    assert "Endpoint = [2001:db8::5]:51820\n" in conf
