"""The host-delivery primitive: a service's files in their own directory, mounted as a
directory, and a change validated, applied to the running service and committed, or rolled back.

The rendered script runs for real with bash against a real Prometheus on loopback: ``promtool``
judges the new files and SIGHUP reloads them, read back from Prometheus' HTTP API. ``docker`` is
a stand-in (no daemon here): ``ps`` names the one container, ``exec`` runs the command on the
host with the container's mounted directory mapped to its host directory (what the bind mount
does), and ``kill -s HUP`` signals the Prometheus process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from components import prometheus as prom
from components.service_files import HostFile, Reload, reload_for, render_service_script, service_mounts
from tests.conftest import require_root, require_tool
from tests.realtools import free_port, wait_for_port

FAKE_DOCKER = textwrap.dedent("""\
    #!/bin/bash
    # Stand-in for docker: one container, whose /etc/prometheus is $ROOT's mounted directory.
    case "$1" in
      ps) if [ -e "$FAKE/pid" ]; then echo 0123456789ab; fi ;;
      exec)
        shift 2
        args=()
        for a in "$@"; do args+=("${a//\\/etc\\/prometheus/$MOUNTED}"); done
        exec "${args[@]}" ;;
      kill) echo "kill $*" >>"$FAKE/calls"; kill -s "$3" "$(cat "$FAKE/pid")" ;;
      restart) echo "restart $*" >>"$FAKE/calls" ;;
      *) exit 1 ;;
    esac
    """)


def _config_files(targets: list[str], rules: str | None = None) -> list[HostFile]:
    config = prom.render_prometheus_config(prom.ScrapeTargets(services={"app": targets}), scrape_interval="1s")
    return [HostFile("/etc/prometheus/prometheus.yml", config),
            HostFile("/etc/prometheus/rules/platform.yml", rules if rules is not None else prom.render_rules())]


def _config(port: int) -> str:
    """The configuration Prometheus runs, or "" while it is not ready."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status/config", timeout=5) as response:
            return json.load(response)["data"]["yaml"]
    except OSError:
        return ""


def _changes(text: str) -> int:
    return int(re.search(r"platform-setup: (\d+) changes", text).group(1))


@pytest.mark.realtool
def test_a_config_change_reaches_the_running_prometheus_and_a_rejected_one_is_rolled_back(tmp_path):
    prometheus_bin = require_tool("prometheus", "Debian package prometheus")
    require_tool("promtool", "Debian package prometheus")
    require_root("put_file sets owners; needs root")
    data_dir = tmp_path / "srv"
    fake = tmp_path / "fake"
    fake.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    reload = reload_for("prom/prometheus:v2.55.1")
    assert reload.signal == "HUP" and reload.validate[0] == "promtool"
    mounted = data_dir / "files" / "prometheus" / "etc" / "prometheus"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE": str(fake),
           "MOUNTED": str(mounted)}

    def run(files: list[HostFile]) -> subprocess.CompletedProcess:
        scripts, mounts = _render_sync(data_dir, files, reload)
        assert [(m.host_path, m.container_path, m.read_only) for m in mounts] == [(str(mounted), "/etc/prometheus", True)]
        path = tmp_path / "files-prometheus.sh"
        path.write_text(scripts["files-prometheus"])
        return subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env, timeout=60)

    first = run(_config_files(["127.0.0.1:1111"]))
    assert first.returncode == 0 and _changes(first.stdout) == 2, first.stdout + first.stderr
    port = free_port()
    process = subprocess.Popen([prometheus_bin, f"--config.file={mounted / 'prometheus.yml'}",
                                f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                               cwd=mounted, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process, timeout=30)
        (fake / "pid").write_text(str(process.pid))
        assert _until(lambda: "127.0.0.1:1111" in _config(port), timeout=30)

        # A new target: written, validated by promtool, and Prometheus reloads it.
        second = run(_config_files(["127.0.0.1:2222"]))
        assert second.returncode == 0 and _changes(second.stdout) == 1, second.stdout + second.stderr
        assert _until(lambda: "127.0.0.1:2222" in _config(port)), _config(port)
        assert (fake / "calls").read_text().count("kill -s HUP") == 1

        # Rules promtool rejects: nothing is signalled, the previous files are back, the run fails.
        broken = run(_config_files(["127.0.0.1:3333"], rules="groups:\n- name: x\n  rules:\n  - alert: A\n    expr: up ==\n"))
        assert broken.returncode == 1
        assert "rejected:" in broken.stderr and "the previous version is back in place" in broken.stderr
        assert "127.0.0.1:2222" in (mounted / "prometheus.yml").read_text()
        assert (mounted / "rules" / "platform.yml").read_text() == prom.render_rules()
        assert (fake / "calls").read_text().count("kill -s HUP") == 1
        assert "127.0.0.1:2222" in _config(port)

        # The cause removed: the next run applies the change, and a run after it has nothing to do.
        fixed = run(_config_files(["127.0.0.1:3333"]))
        assert fixed.returncode == 0 and _changes(fixed.stdout) == 1, fixed.stdout + fixed.stderr
        assert _until(lambda: "127.0.0.1:3333" in _config(port))
        again = run(_config_files(["127.0.0.1:3333"]))
        assert again.returncode == 0 and _changes(again.stdout) == 0
    finally:
        process.terminate()
        process.wait(timeout=10)


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
    from synth.run import synth_stack
    from synth.state import State

    return State(synth_stack("staging", reveal_secrets=True)), State(synth_stack("staging"))


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
    # The data node's keys are secrets; its certificates are not.
    assert stdin["pencom-staging-data-secrets-postgres"] == "[secret]"
    assert "server.crt" in stdin["pencom-staging-data-files-postgres"]


@pytest.mark.fast
@pytest.mark.parametrize("image, signal", [("prom/prometheus:v2.55.1", "HUP"), ("prom/alertmanager:v0.27.0", "HUP"),
                                           ("ubuntu/squid:6.6-24.04_edge", "HUP"), ("postgres:17.2-alpine", None),
                                           ("prom/blackbox-exporter@sha256:" + "0" * 64, "HUP")])
def test_each_server_is_told_the_way_it_reloads(image, signal):
    reload = reload_for(image)
    assert reload.signal == signal
    validate, apply = reload.commands()
    assert apply == (f'docker kill -s {signal} "$cid" >/dev/null' if signal else 'docker restart "$cid" >/dev/null')


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
