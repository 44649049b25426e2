"""A service whose validator reads its plain files and its secrets together (nginx -t of an mTLS
terminator opens the certificates its config names), delivered for the first time, with no
container yet: the two delivery scripts run in the order ``service_directories`` gives them, on a
real dockerd (tests/test_host_delivery.py's fixture). The first group is committed unjudged,
saying so; the second is judged with the first in a throwaway container of the service's image,
and a bad half is refused there. (The lab found the gap: with each group judged alone, every
Pencom node's first converge failed on nginx -t.)
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from components.service_files import HostFile, Reload, delivery_order, render_service_script
from tests.isolation import tool_image
from tests.test_host_delivery import _docker, dockerd  # noqa: F401 - dockerd is a fixture

IMAGE = "platform-test/validator:1"
CONF, CERT, KEY = "/etc/demo/app.conf", "/etc/demo/tls/cert.pem", "/etc/demo/tls/key.pem"
# As nginx -t does: the config must be sound, and every file it names must be there.
SHELL = os.path.realpath(shutil.which("sh") or "/bin/sh")
VALIDATE = (SHELL, "-c", f"grep -q '^good' {CONF} && test -s {CERT} && grep -qx key {KEY}")


def _files(conf: str) -> list[HostFile]:
    return [HostFile(CONF, conf), HostFile(CERT, "certificate\n"), HostFile(KEY, "key\n", mode="0400")]


def _scripts(tmp_path, files: list[HostFile], reload: Reload) -> list[tuple[str, str]]:
    """Each group's script, in delivery order, rendered as ``service_directories`` renders them
    (the contents are plain strings here)."""
    return [(kind, render_service_script("lab", str(tmp_path / "srv"), "demo", group, [f.content for f in group],
                                         reload, textfile_dir=str(tmp_path / "textfile"), service_files=files))
            for kind, group in delivery_order(files)]


def _run(tmp_path, dockerd, name: str, script: str) -> subprocess.CompletedProcess:  # noqa: F811
    path = tmp_path / f"{name}.sh"
    path.write_text(script)
    return subprocess.run(["bash", str(path)], capture_output=True, text=True,
                          env={**os.environ, "DOCKER_HOST": dockerd.host}, timeout=300)


@pytest.fixture
def validator_image(dockerd):  # noqa: F811
    imported = subprocess.run(dockerd.cli("import", "-", IMAGE),
                              input=tool_image(SHELL, shutil.which("grep")),
                              capture_output=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    return IMAGE


@pytest.mark.fast
def test_the_secrets_are_delivered_before_the_files_that_name_them():
    from synth.state import State
    from tests.conftest import synth_once

    assert [kind for kind, _ in delivery_order(_files("good\n"))] == ["secrets", "files"]
    state = State(synth_once("staging"))
    commands = {r["name"]: r for r in state.of_type("command:remote:Command")}
    pairs = [(name, name.replace("-secrets-", "-files-", 1)) for name in commands if "-secrets-" in name]
    pairs = [(secrets, files) for secrets, files in pairs if files in commands]
    # Pencom's mTLS terminators (a config naming its certificates) are among them.
    assert {"pencom-staging-app-secrets-mtls-gateway",
            "pencom-staging-edge-secrets-api-gateway-mtls"} <= dict(pairs).keys()
    for secrets, files in pairs:
        assert commands[secrets]["urn"] in state.all_dependencies(commands[files]), f"{files} runs before {secrets}"


@pytest.mark.realtool
def test_a_first_delivery_is_judged_whole_once_both_halves_are_on_the_host(tmp_path, dockerd, validator_image):  # noqa: F811
    reload = Reload(validate=VALIDATE, signal="HUP", image=validator_image)
    served = tmp_path / "srv" / "files" / "demo"

    # A config the validator refuses: the secrets go first, unjudged (the config is not there to
    # judge them with); the config is then judged with them, refused and not committed.
    (secrets_kind, secrets), (files_kind, bad) = _scripts(tmp_path, _files("bad\n"), reload)
    assert (secrets_kind, files_kind) == ("secrets", "files")
    first = _run(tmp_path, dockerd, "secrets-demo", secrets)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "its other files are not on the host yet" in first.stderr
    assert (served / KEY.lstrip("/")).read_text() == "key\n"
    refused = _run(tmp_path, dockerd, "files-demo", bad)
    assert refused.returncode == 1 and "rejected:" in refused.stderr, refused.stdout + refused.stderr
    assert "Error response from daemon" not in refused.stderr, "refused by Docker, not by the validator"
    assert not (served / CONF.lstrip("/")).exists(), "a refused config was committed"

    # A sound config: judged with the secrets already there, in a throwaway container, committed.
    _, good = _scripts(tmp_path, _files("good\n"), reload)[1]
    accepted = _run(tmp_path, dockerd, "files-demo", good)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "not on the host yet" not in accepted.stderr
    assert (served / CONF.lstrip("/")).read_text() == "good\n"
    assert _docker(dockerd, "ps", "-aq") == "", "the throwaway validator was left behind"

    # Once whole, a change of either half alone is judged with the other: a bad key is refused.
    emptied = [HostFile(CONF, "good\n"), HostFile(CERT, "certificate\n"), HostFile(KEY, "not a key\n", mode="0400")]
    _, secrets = _scripts(tmp_path, emptied, reload)[0]
    refused = _run(tmp_path, dockerd, "secrets-demo", secrets)
    assert refused.returncode == 1 and "rejected:" in refused.stderr, refused.stdout + refused.stderr
    assert (served / KEY.lstrip("/")).read_text() == "key\n"
