"""``scripts/pencom_tunnel.py``: the SSH tunnel the MinIO provider needs before ``pulumi up``
(the deploy workflow runs it for every stack). Its jump to the edge goes where the program's own
connections go, and a bad stack file is the config boundary's message, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from synth.engine import PROJECT_ROOT
from synth.state import State
from tests.conftest import synth_once

pytestmark = pytest.mark.fast

SCRIPT = PROJECT_ROOT / "scripts" / "pencom_tunnel.py"

sys.path.insert(0, str(SCRIPT.parent))
import pencom_tunnel  # noqa: E402


@pytest.fixture
def run(capsys):
    """``pencom_tunnel.main`` in this process: (exit code, stdout, stderr)."""

    def call(*args: str) -> subprocess.CompletedProcess:
        try:
            code = pencom_tunnel.main(list(args))
        except SystemExit as exc:
            code = exc.code
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)

    return call


def _storage_connection(stack: str) -> dict:
    """The connection the program's own commands on the storage node use (through the edge)."""
    state = State(synth_once(stack, reveal_secrets=True))
    connection = state.named(f"pencom-{stack}-storage-setup-sshd", "command:remote:Command")["inputs"]["connection"]
    return json.loads(connection) if isinstance(connection, str) else connection


@pytest.mark.parametrize("stack, jump", [("prod", "10.99.0.3"), ("staging", "203.0.113.21")])
def test_the_tunnel_jumps_through_the_edge_where_the_program_connects(run, stack, jump):
    """Prod keeps break-glass off, so its edge answers SSH only from the management network:
    the jump was the edge's public address (203.0.113.20), which the prod deploy job could not
    reach. Staging has break-glass on, so the program (and the tunnel) use the public address."""
    result = run(stack, "--print")
    assert result.returncode == 0, result.stderr
    command = result.stdout.split()
    connection = _storage_connection(stack)
    proxy = connection["proxy"]
    assert (proxy["user"], proxy["host"], proxy["port"]) == ("deploy", jump, 22)
    assert command[command.index("-J") + 1] == f"{proxy['user']}@{proxy['host']}:{proxy['port']}"
    assert command[-1] == f"{connection['user']}@{connection['host']}"
    assert command[command.index("-p") + 1] == str(connection["port"])


def test_the_command_runs_as_the_deploy_workflow_runs_it():
    result = subprocess.run([sys.executable, str(SCRIPT), "prod", "--print"], capture_output=True, text=True,
                            timeout=120, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
    assert " -J deploy@10.99.0.3:22 " in result.stdout


def _staging_with_pencom(value=None, **storage) -> str:
    """Pulumi.staging.yaml with ``platform:pencom`` set to ``value``, or its storage node edited."""
    document = yaml.safe_load((PROJECT_ROOT / "Pulumi.staging.yaml").read_text())
    if value is not None:
        document["config"]["platform:pencom"] = value
    document["config"]["platform:pencom"].get("nodes", {}).get("storage", {}).update(storage)
    return yaml.safe_dump(document)


@pytest.mark.parametrize("content, message", [
    (b"config:\n  platform:products: [\xff]\n", "{path}: not UTF-8 text (byte 30 is 0xff); save the file as UTF-8\n"),
    (b"- a\n", "{path} must be a YAML mapping with a 'config:' key\n"),
    (b"config: [1]\n", "{path}: 'config:' must be a mapping of key: value\n"),
    (b"config:\n\tplatform:products: []\n", "{path}:2:1: not valid YAML: found character '\\t' that cannot start "
                                          "any token\n"),
    (b"encryptionsalt: v1:abc\n", "platform:environment: required key is missing (an object with name, admin_cidrs, "
                                  "and optionally region and alerts)\n  - platform:products: required key is missing"),
    (_staging_with_pencom({}).encode(), "platform:pencom.internal_cidr: required key is missing"),
    (_staging_with_pencom(ssh_port=[22]).encode(), "platform:pencom.nodes.storage.ssh_port: Input should be a valid "
                                                   "integer, got a list of 1 item (SSH port)\n"),
])
def test_a_bad_stack_file_is_the_boundarys_message_exit_2(run, tmp_path, content, message):
    """Each was a traceback, exit 1 (UnicodeDecodeError, TypeError, KeyError, a ScannerError,
    a raw pydantic ValidationError)."""
    path = tmp_path / "Pulumi.staging.yaml"
    path.write_bytes(content)
    result = run("staging", "--stack-file", str(path), "--print")
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert result.stderr.startswith("error: " + message.format(path=path)), result.stderr
    if message.endswith("\n"):
        assert result.stderr == "error: " + message.format(path=path), result.stderr
    assert "Traceback" not in result.stderr and "validation error" not in result.stderr
    # One line per problem, each naming its key path.
    assert all(line.startswith(("error: ", "  - platform:")) for line in result.stderr.splitlines())


@pytest.mark.parametrize("args, message", [
    (["nosuch"], f"error: no stack file at {PROJECT_ROOT / 'Pulumi.nosuch.yaml'}; create it (see README, "
                 "'Adding a stack') or pass --stack-file PATH\n"),
    (["../prod"], "error: '../prod' is not a stack name: use letters, digits, '-', '_' and '.', starting with a "
                  "letter or digit (it names Pulumi.STACK.yaml in the project; give another file with --stack-file)\n"),
])
def test_a_missing_stack_or_a_bad_name_is_one_line(run, args, message):
    result = run(*args, "--print")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == message


def test_a_directory_as_the_stack_file_is_one_line(run, tmp_path):
    result = run("staging", "--stack-file", str(tmp_path), "--print")
    assert result.returncode == 2
    assert result.stderr == (f"error: --stack-file {tmp_path} is a directory; give the stack file itself "
                             f"(e.g. {tmp_path / 'Pulumi.staging.yaml'})\n")


def test_a_stack_without_pencom_needs_no_tunnel(run, tmp_path):
    document = yaml.safe_load((PROJECT_ROOT / "Pulumi.staging.yaml").read_text())
    config = document["config"]
    config["platform:products"] = [p for p in config["platform:products"] if p != "pencom"]
    del config["platform:pencom"]
    path = tmp_path / "Pulumi.staging.yaml"
    path.write_text(yaml.safe_dump(document))
    result = run("staging", "--stack-file", str(path), "--print")
    assert result.returncode == 0 and result.stdout == ""
    assert result.stderr == "stack staging holds no Pencom: no tunnel needed\n"


def test_a_stack_file_that_cannot_be_read_is_one_line(tmp_path):
    """A directory where ``Pulumi.<stack>.yaml`` should be (an OSError from read_text) was a
    traceback in every reader of the boundary."""
    from synth.stackfile import StackFileError

    (tmp_path / "Pulumi.yaml").write_text((PROJECT_ROOT / "Pulumi.yaml").read_text())
    (tmp_path / "Pulumi.staging.yaml").mkdir()
    with pytest.raises(StackFileError) as error:
        pencom_tunnel.tunnel_command("staging", None, tmp_path)
    assert str(error.value) == f"cannot read the stack file {tmp_path / 'Pulumi.staging.yaml'}: Is a directory"
