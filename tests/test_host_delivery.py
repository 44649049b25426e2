"""The host-delivery primitive: a service's files in their own directory, mounted as a
directory, and a change validated, applied to the running service and committed, or rolled back.

The rendered script runs for real with bash and Debian's docker client against a real dockerd
(in a network namespace of its own): Prometheus runs in a container that mounts the service's
host directory as ``service_mounts`` says; ``promtool`` in that container judges the new files
through ``docker exec``, ``docker kill -s HUP`` reloads them, read back from Prometheus' HTTP API
inside the container. A server without a reload signal is restarted by ``docker restart`` and
starts on the new file.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from components import prometheus as prom
from components.service_files import HostFile, Reload, reload_for, render_service_script, service_mounts
from tests.conftest import require_root, require_tool
from tests.isolation import borrowed_usr_image, tool_image

IMAGE = "platform-test/borrowed-usr:1"



@pytest.fixture
def dockerd(tmp_path):
    """Debian's dockerd in a network namespace of its own, with the borrowed-/usr image; yields
    the ``DockerDaemon`` and tears it down (also on failure)."""
    for tool, why in [("dockerd", "Debian package docker.io"), ("ip", "Debian package iproute2"),
                      ("nsenter", "util-linux")]:
        require_tool(tool, why)
    require_root("a Docker daemon in a network namespace")
    from rehearsal.netns import DockerDaemon, Namespace, unmount_under

    tag = secrets.token_hex(3)
    namespace = Namespace(f"hd-{tag}")
    run_dir = Path(tempfile.mkdtemp(prefix=f"hd-{tag}-", dir="/run"))
    data_dir = Path(tempfile.mkdtemp(prefix=f"host-delivery-{tag}-", dir="/var/tmp"))
    daemon = DockerDaemon(namespace, data_dir / "docker", run_dir / "d", "10.214.77.1/24")
    try:
        namespace.create()
        daemon.start()
        imported = subprocess.run(daemon.cli("import", "-", IMAGE),
                                  input=borrowed_usr_image(writable=("tmp", "data"), extra_dirs=("data",)),
                                  capture_output=True, timeout=120)
        assert imported.returncode == 0, imported.stderr
        yield daemon
    finally:
        daemon.remove_all_containers()
        daemon.stop()
        namespace.delete()
        unmount_under(data_dir)
        subprocess.run(["rm", "-rf", str(data_dir), str(run_dir)], check=False)


def _docker(daemon, *args: str, check: bool = True) -> str:
    proc = subprocess.run(daemon.cli(*args), capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def _run_container(daemon, service: str, mounts, argv: list[str]) -> str:
    """A container labelled as the program labels its containers, with ``mounts`` (what
    ``service_mounts`` gives) and the build machine's /usr read-only."""
    volumes = [a for m in mounts for a in ("-v", f"{m.host_path}:{m.container_path}:{'ro' if m.read_only else 'rw'}")]
    return _docker(daemon, "run", "-d", "--network", "none", "--label", "platform.stack=lab",
                   "--label", f"platform.service={service}", "-v", "/usr:/usr:ro", *volumes, IMAGE, *argv).strip()


def _config_files(targets: list[str], rules: str | None = None) -> list[HostFile]:
    config = prom.render_prometheus_config(prom.ScrapeTargets(services={"app": targets}), scrape_interval="1s")
    return [HostFile("/etc/prometheus/prometheus.yml", config),
            HostFile("/etc/prometheus/rules/platform.yml", rules if rules is not None else prom.render_rules())]


def _config(daemon, cid: str) -> str:
    """The configuration the Prometheus in ``cid`` runs, or "" while it is not ready."""
    out = _docker(daemon, "exec", cid, "curl", "-s", "-m", "5", "http://127.0.0.1:9090/api/v1/status/config",
                  check=False)
    try:
        return json.loads(out)["data"]["yaml"]
    except (ValueError, KeyError):
        return ""


def _changes(text: str) -> int:
    return int(re.search(r"platform-setup: (\d+) changes", text).group(1))


def _reloads(daemon, cid: str) -> int:
    """How often Prometheus (which logs to stderr) loaded its configuration."""
    logs = subprocess.run(daemon.cli("logs", cid), capture_output=True, text=True, timeout=60)
    return (logs.stdout + logs.stderr).count("Completed loading of configuration file")


@pytest.mark.realtool
def test_a_config_change_reaches_the_running_prometheus_and_a_rejected_one_is_rolled_back(tmp_path, dockerd):
    require_tool("prometheus", "Debian package prometheus")
    require_tool("promtool", "Debian package prometheus")
    require_tool("curl", "Debian package curl")
    data_dir = tmp_path / "srv"
    reload = reload_for("prom/prometheus:v2.55.1")
    assert reload.signal == "HUP" and reload.validate[0] == "promtool"
    mounted = data_dir / "files" / "prometheus" / "etc" / "prometheus"
    env = {**os.environ, "DOCKER_HOST": dockerd.host}
    mounts = []

    def run(files: list[HostFile]) -> subprocess.CompletedProcess:
        scripts, found = _render_sync(data_dir, files, reload)
        mounts[:] = found
        assert [(m.host_path, m.container_path, m.read_only) for m in found] == [(str(mounted), "/etc/prometheus", True)]
        path = tmp_path / "files-prometheus.sh"
        path.write_text(scripts["files-prometheus"])
        return subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env, timeout=120)

    # No container yet: the files are validated in a throwaway container of the service's image
    # (here one holding this machine's promtool, under the image's name), and nothing is told.
    imported = subprocess.run(dockerd.cli("import", "-", reload.image), input=tool_image(shutil.which("promtool")),
                              capture_output=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    refused = run(_config_files(["127.0.0.1:1111"], rules="groups:\n- name: x\n  rules:\n  - alert: A\n    expr: up ==\n"))
    assert refused.returncode == 1 and "rejected:" in refused.stderr, refused.stdout + refused.stderr
    assert not (mounted / "prometheus.yml").exists(), "an invalid file was committed while no container ran"
    first = run(_config_files(["127.0.0.1:1111"]))
    assert first.returncode == 0 and _changes(first.stdout) == 2, first.stdout + first.stderr
    assert _docker(dockerd, "ps", "-aq") == "", "the throwaway validator was left behind"
    cid = _run_container(dockerd, "prometheus", mounts, [
        "/usr/bin/prometheus", "--config.file=/etc/prometheus/prometheus.yml",
        "--storage.tsdb.path=/data", "--web.listen-address=127.0.0.1:9090"])
    assert _until(lambda: "127.0.0.1:1111" in _config(dockerd, cid), timeout=60), _docker(dockerd, "logs", cid)
    started = _docker(dockerd, "inspect", "-f", "{{.State.StartedAt}}", cid)

    # A new target: written, validated by promtool in the container, and Prometheus reloads it.
    second = run(_config_files(["127.0.0.1:2222"]))
    assert second.returncode == 0 and _changes(second.stdout) == 1, second.stdout + second.stderr
    assert _until(lambda: "127.0.0.1:2222" in _config(dockerd, cid)), _config(dockerd, cid)
    reloads = _reloads(dockerd, cid)
    assert reloads == 2, reloads  # the start and one SIGHUP

    # Rules promtool rejects: nothing is signalled, the previous files are back, the run fails.
    broken = run(_config_files(["127.0.0.1:3333"], rules="groups:\n- name: x\n  rules:\n  - alert: A\n    expr: up ==\n"))
    assert broken.returncode == 1
    assert "rejected:" in broken.stderr and "the previous version is back in place" in broken.stderr
    assert "127.0.0.1:2222" in (mounted / "prometheus.yml").read_text()
    assert (mounted / "rules" / "platform.yml").read_text() == prom.render_rules()
    assert _reloads(dockerd, cid) == reloads
    assert "127.0.0.1:2222" in _config(dockerd, cid)

    # The cause removed: the next run applies the change, and a run after it has nothing to do.
    fixed = run(_config_files(["127.0.0.1:3333"]))
    assert fixed.returncode == 0 and _changes(fixed.stdout) == 1, fixed.stdout + fixed.stderr
    assert _until(lambda: "127.0.0.1:3333" in _config(dockerd, cid))
    again = run(_config_files(["127.0.0.1:3333"]))
    assert again.returncode == 0 and _changes(again.stdout) == 0
    # Reloaded, never restarted: the same process since the start.
    assert _docker(dockerd, "inspect", "-f", "{{.State.StartedAt}}", cid) == started


@pytest.mark.realtool
def test_a_server_without_a_reload_signal_is_restarted_onto_the_new_file(tmp_path, dockerd):
    data_dir = tmp_path / "srv"
    env = {**os.environ, "DOCKER_HOST": dockerd.host}

    def run(value: str) -> subprocess.CompletedProcess:
        files = [HostFile("/etc/demo/value.conf", value)]
        script = render_service_script("lab", str(data_dir), "demo", files, [value], Reload(),
                                       textfile_dir=str(tmp_path / "textfile"))
        (tmp_path / "files-demo.sh").write_text(script)
        return subprocess.run(["bash", str(tmp_path / "files-demo.sh")], capture_output=True, text=True,
                              env=env, timeout=120)

    assert run("first\n").returncode == 0
    mounts = service_mounts(str(data_dir), "demo", [HostFile("/etc/demo/value.conf", "")])
    # The server reads its file once, at start (as a datastore reads its certificate).
    cid = _run_container(dockerd, "demo", mounts, ["/usr/bin/sh", "-c", "cat /etc/demo/value.conf; exec sleep 600"])
    assert _until(lambda: "first" in _docker(dockerd, "logs", cid))
    started = _docker(dockerd, "inspect", "-f", "{{.State.StartedAt}}", cid)
    changed = run("second\n")
    assert changed.returncode == 0 and _changes(changed.stdout) == 1, changed.stdout + changed.stderr
    assert _until(lambda: "second" in _docker(dockerd, "logs", cid))
    assert _docker(dockerd, "inspect", "-f", "{{.State.StartedAt}}", cid) != started
    assert _docker(dockerd, "inspect", "-f", "{{.State.Running}}", cid).strip() == "true"
    assert _changes(run("second\n").stdout) == 0


def _until(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)
    return True


def _render_sync(data_dir: Path, files: list[HostFile], reload: Reload):
    """The script of the service's plain files and its mounts, by the functions
    service_directories renders with (the contents are plain strings here)."""
    script = render_service_script("lab", str(data_dir), "prometheus", files, [f.content for f in files], reload)
    return {"files-prometheus": script}, service_mounts(str(data_dir), "prometheus", files)


WRITTEN = re.compile(r"^if put_file (\S+) ", re.M)


@pytest.fixture(scope="module")
def staging():
    from synth.state import State
    from tests.conftest import synth_once

    return State(synth_once("staging", reveal_secrets=True)), State(synth_once("staging"))


@pytest.mark.fast
def test_every_delivered_file_reaches_its_container_through_a_directory_mount(staging):
    revealed, _ = staging
    scripts = {c["name"]: c["inputs"]["stdin"] for c in revealed.of_type("command:remote:Command")
               if re.search(r"-(files|secrets)-", c["name"])}
    assert scripts, "the stack delivers files"
    written = {path for text in scripts.values() for path in WRITTEN.findall(text)}
    mounted = [(c["name"], v) for c in revealed.of_type("docker:index/container:Container")
               for v in c["inputs"].get("volumes") or []]
    # No single-file mount: a replaced file would never reach the container.
    assert not [(name, v["hostPath"]) for name, v in mounted if v["hostPath"] in written]
    # Every delivered file lies below a read-only directory mount of some container, or is a
    # file only host jobs read (the backup's CA files).
    below = lambda path: any(path.startswith(v["hostPath"].rstrip("/") + "/") and v.get("readOnly")
                             for _, v in mounted)
    unmounted = sorted(p for p in written if not below(p))
    assert all("/files/backup/" in p for p in unmounted), unmounted


@pytest.mark.fast
def test_a_config_diff_stays_readable_and_secret_files_travel_apart(staging):
    _, masked = staging
    stdin = {c["name"]: c["inputs"]["stdin"] for c in masked.of_type("command:remote:Command")}
    config = stdin["kro-staging-files-alertmanager"]
    assert config != "[secret]" and "alertmanager.yml" in config
    assert "smtp_password" not in WRITTEN.findall(config)
    assert stdin["kro-staging-secrets-alertmanager"] == "[secret]"
    assert stdin["kro-staging-files-prometheus"] != "[secret]"
    # The data node's keys are secrets (their certificate travels with them: one commit, one
    # restart on a matching pair); its CA and pg_hba.conf are not.
    assert stdin["pencom-staging-data-secrets-postgres"] == "[secret]"
    assert "ca.crt" in stdin["pencom-staging-data-files-postgres"]
    assert "pg_hba.conf" in stdin["pencom-staging-data-files-postgres"]
    assert "server.crt" not in stdin["pencom-staging-data-files-postgres"]


@pytest.mark.fast
@pytest.mark.parametrize("image, apply", [
    ("prom/prometheus:v2.55.1", 'docker kill -s HUP "$cid" >/dev/null'),
    ("prom/alertmanager:v0.27.0", 'docker kill -s HUP "$cid" >/dev/null'),
    # squid is not PID 1 in Ubuntu's image (its entrypoint script is, and ignores SIGHUP).
    ("ubuntu/squid:6.6-24.04_edge", 'docker exec "$cid" squid -k reconfigure -f /etc/squid/squid.conf >/dev/null'),
    ("postgres:17.2-alpine", 'docker restart "$cid" >/dev/null'),
    ("prom/blackbox-exporter@sha256:" + "0" * 64, 'docker kill -s HUP "$cid" >/dev/null')])
def test_each_server_is_told_the_way_it_reloads(image, apply):
    assert reload_for(image).commands()[1] == apply


@pytest.mark.realtool
def test_delivered_certificates_report_their_expiry_and_the_alert_fires_before_it(tmp_path):
    openssl = require_tool("openssl", "Debian package openssl")
    promtool = require_tool("promtool", "Debian package prometheus")
    require_root("put_file sets owners; needs root")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "10", "-subj", "/CN=postgres", "-keyout", str(tmp_path / "k"), "-out", str(tmp_path / "c")],
                   check=True, capture_output=True)
    cert = (tmp_path / "c").read_text()
    files = [HostFile("/run/platform/tls/server.crt", cert), HostFile("/run/platform/tls/server.conf", "x\n")]
    textfile = tmp_path / "textfile"
    script = render_service_script("lab", str(tmp_path / "srv"), "postgres", files, [cert, "x\n"], Reload(),
                                   textfile_dir=str(textfile))
    (tmp_path / "s.sh").write_text(script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    first = subprocess.run(["bash", str(tmp_path / "s.sh")], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    metric = (textfile / "certificates-lab-files-postgres.prom").read_text()
    end = subprocess.run([openssl, "x509", "-enddate", "-noout", "-in", str(tmp_path / "c")],
                         capture_output=True, text=True, check=True).stdout.split("=", 1)[1].strip()
    expected = int(subprocess.run(["date", "-d", end, "+%s"], capture_output=True, text=True, check=True).stdout)
    delivered = tmp_path / "srv" / "files" / "postgres" / "run" / "platform" / "tls" / "server.crt"
    assert metric == f'platform_certificate_expiry_timestamp_seconds{{path="{delivered}"}} {expected}\n'
    assert (textfile / "certificates-lab-files-postgres.prom").stat().st_mode & 0o777 == 0o644
    again = subprocess.run(["bash", str(tmp_path / "s.sh")], capture_output=True, text=True, env=env)
    assert _changes(again.stdout) == 0, again.stdout

    # The rendered rule, judged by promtool: 25 days left is quiet, 20 days left fires.
    (tmp_path / "rules.yml").write_text(prom.render_rules())
    (tmp_path / "test.yml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m",
                   "input_series": [
                       {"series": 'platform_certificate_expiry_timestamp_seconds{path="/a",instance="data"}',
                        "values": f"{25 * 86400}x180"},
                       {"series": 'platform_certificate_expiry_timestamp_seconds{path="/b",instance="data"}',
                        "values": f"{20 * 86400}x180"}],
                   "alert_rule_test": [{"eval_time": "2h", "alertname": "InternalCertificateExpiring",
                                        "exp_alerts": [{"exp_labels": {"severity": "critical", "path": "/b",
                                                                       "instance": "data"},
                                                        "exp_annotations": {"summary": (
                                                            "the certificate /b on data expires within 21 days: "
                                                            "converge the stack to deliver the re-issued one")}}]}]}]}))
    result = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
