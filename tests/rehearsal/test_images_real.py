"""Stand-ins for real: built (or loaded from the cache) into a Docker daemon inside a test network
namespace, every staging reference run with its captured container inputs (command, user, env,
memory, CPU, read-only root, tmpfs, dropped capabilities, the health check command) until Docker
reports it healthy; then a second daemon, which resolves registry hostnames to the rehearsal
registry as a box does, pulls stack references through it. Marker ``realtool``: the first run
builds every image (debootstrap and .debs from Debian), later runs load them from the cache."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from rehearsal import images, standin_plan
from rehearsal.image_contracts import contracts_from_state
from rehearsal.images import Registry
from rehearsal.lab_ca import TestCA
from rehearsal.standin_build import IMAGE_CACHE, build_standins
from rehearsal.standin_plan import plan_standins
from rehearsal.netns import DockerDaemon, Namespace, spawn, stop_pid
from tests.conftest import require_tool

pytestmark = pytest.mark.rehearsal  # builds and runs the lab's stand-in images: the lab tier

BIP = "10.213.7.1/24"
SECOND_BIP = "10.213.8.1/24"


class NamespaceLab:
    """The part of rehearsal.lab.Lab the images module uses, on a bare namespace + daemon."""

    def __init__(self, ns: Namespace, daemon: DockerDaemon, logdir: Path):
        self.ns, self.daemon, self.logdir = ns, daemon, logdir
        self.service_address = "100.64.0.1"
        self.harness_docker_host = daemon.host
        self.processes: list[subprocess.Popen] = []

    def spawn_service(self, name: str, argv, env=None) -> Path:
        log = self.logdir / f"{name}.log"
        self.processes.append(spawn(self.ns, argv, log, env=env))
        return log

    def netns_argv(self, argv) -> list[str]:
        return self.ns.argv(argv)

    def stop_services(self) -> None:
        for proc in self.processes:
            stop_pid(proc.pid, timeout=10)
            proc.wait(timeout=5)
        self.processes.clear()


@pytest.fixture(scope="module")
def tools():
    for tool, why in [("dockerd", "the test Docker daemons"), ("debootstrap", "the stand-ins' base"),
                      ("docker-registry", "the rehearsal registry"), ("skopeo", "pushing to it"),
                      ("nsenter", "entering the namespace"), ("unshare", "the second daemon's /etc"),
                      ("apt-get", "the stand-ins' packages")]:
        require_tool(tool, why)


@pytest.fixture(scope="module")
def lab(tools):
    ns = Namespace(f"r2img-{secrets.token_hex(4)}")  # not the lab's prefix: its cleanup is its own
    run_dir = Path(tempfile.mkdtemp(prefix="r2img-", dir="/run"))
    data_dir = Path(tempfile.mkdtemp(prefix="rehearsal-images-test-", dir="/var/tmp"))
    daemon = DockerDaemon(ns, data_dir / "docker", run_dir / "d", BIP)
    ns.create()
    lab = NamespaceLab(ns, daemon, data_dir / "logs")
    try:
        daemon.start()
        yield lab
    finally:
        lab.stop_services()
        daemon.remove_all_containers()
        daemon.stop()
        ns.delete()
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def client(lab):
    import docker

    c = docker.DockerClient(base_url=lab.harness_docker_host, version="auto", timeout=600)
    yield c
    c.close()


@pytest.fixture(scope="module")
def staging_state():
    from synth.run import synth_stack

    return synth_stack("staging", reveal_secrets=True)


@pytest.fixture(scope="module")
def standins(staging_state, client, lab):
    planned = plan_standins(contracts_from_state(staging_state))
    build_standins(planned, client, IMAGE_CACHE, lab.harness_docker_host)
    return planned


# --- running a captured container ---------------------------------------------------------------

CONFIGS = {
    "/etc/alertmanager/alertmanager.yml": "route:\n  receiver: none\nreceivers:\n  - name: none\n",
    "/etc/alertmanager/secrets/smtp_password": "not-a-secret\n",
    "/etc/blackbox/blackbox.yml": "modules:\n  http_2xx:\n    prober: http\n",
    "/etc/prometheus/prometheus.yml": "global:\n  scrape_interval: 15s\nrule_files:\n"
                                      "  - /etc/prometheus/rules/*.yml\n",
    "/etc/prometheus/rules/platform.yml": "groups: []\n",
    "/etc/squid/squid.conf": "".join(f"http_port {p}\n" for p in range(3128, 3137))
                             + "http_access deny all\ncache deny all\n",
}
NGINX_CONF = """pid /tmp/nginx.pid;
events {}
http {
  client_body_temp_path /tmp/body; proxy_temp_path /tmp/proxy; fastcgi_temp_path /tmp/fastcgi;
  uwsgi_temp_path /tmp/uwsgi; scgi_temp_path /tmp/scgi;
  access_log /dev/stdout;
  server { listen 8080; location / { return 204; } }
  server { listen 127.0.0.1:8081; location = /healthz { return 200 "ok"; } }
}
"""


def _owner(user: str) -> Optional[tuple[int, int]]:
    uid, _, gid = (user or "").partition(":")
    if uid.isdigit():
        return int(uid), int(gid or uid)
    return {"node": (1000, 1000)}.get(uid)


def materialise(container: dict, root: Path, ca: TestCA) -> list[str]:
    """Host files for each captured volume, as the stack's scripts would provide them (a minimal
    valid config, TLS material from the test CA with the stack's owners); returns binds."""
    inputs = container["inputs"]
    owner = _owner(inputs.get("user") or "")
    issued = ca.issue(["localhost", "127.0.0.1"])
    binds = []
    for i, vol in enumerate(inputs.get("volumes") or []):
        path = vol["containerPath"]
        host = root / f"v{i}"
        mode, file_owner, content = 0o644, None, None
        if path in CONFIGS:
            content = CONFIGS[path].encode()
        elif path.endswith("ca.crt"):
            content = ca.cert_pem
        elif path.endswith(("server.crt", "public.crt")):
            content = issued.cert_pem
        elif path.endswith((".key",)):
            content, mode = issued.key_pem, 0o600
            file_owner = {"server.key": (999, 999), "redis.key": (999, 1000)}.get(Path(path).name, owner)
        elif path.endswith(".pem"):
            content, mode, file_owner = issued.cert_pem + issued.key_pem, 0o600, (999, 999)
        elif path.endswith((".yml", ".json")):
            content = b"{}\n" if path.endswith(".json") else b"apiVersion: 1\n"
        if content is not None:
            host.write_bytes(content)
            host.chmod(mode)
            if file_owner:
                os.chown(host, *file_owner)
        else:
            host.mkdir()
            if path == "/etc/nginx/platform":
                (host / "nginx.conf").write_text(NGINX_CONF)
            elif path == "/host":
                (host / "var/lib/prometheus/node-exporter").mkdir(parents=True)
            elif path == "/run/platform":
                # A service's delivered directory (components/service_files.py): the CA, and its
                # certificate and key readable by the image's user only.
                (host / "tls").mkdir()
                (host / "ca.crt").write_bytes(ca.cert_pem)
                (host / "tls" / "server.crt").write_bytes(issued.cert_pem)
                for key in ("server.key", "redis.key"):
                    (host / "tls" / key).write_bytes(issued.key_pem)
                    (host / "tls" / key).chmod(0o600)
                    os.chown(host / "tls" / key, *(owner or (999, 999)))
            if owner:
                os.chown(host, *owner)
        binds.append(f"{host}:{path}:{'ro' if vol.get('readOnly') else 'rw'}")
    return binds


def run_captured(client, container: dict, binds: list[str], env: Optional[list[str]] = None):
    """The container's captured inputs as an Engine API create. The health check's command is
    the stack's; its interval and timeout, and the CPU quota, are not what is proven here (on a
    shared 2-core machine a 0.05-CPU container's check can outlast 5 s; R3's rehearsal applies
    the captured values)."""
    inputs = container["inputs"]
    health = inputs.get("healthcheck") or {}
    return client.containers.run(
        image=_reference_of(container), command=inputs.get("command") or None,
        user=inputs.get("user") or None, detach=True,
        environment=env if env is not None else list(inputs.get("envs") or []),
        mem_limit=f"{inputs['memory']}m" if inputs.get("memory") else None,
        read_only=bool(inputs.get("readOnly")), tmpfs=inputs.get("tmpfs") or None,
        cap_drop=(inputs.get("capabilities") or {}).get("drops"),
        cap_add=(inputs.get("capabilities") or {}).get("adds"),
        security_opt=inputs.get("securityOpts") or None, volumes=binds,
        healthcheck={"test": health["tests"], "interval": 1_000_000_000, "timeout": 30_000_000_000,
                     "retries": 90, "start_period": 0} if health else None,
        name=f"t-{container['name']}")


_REFS: dict[str, str] = {}


def _reference_of(container: dict) -> str:
    return _REFS[container["name"]]


def wait_healthy(containers, timeout: float = 600.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        for c in containers:
            c.reload()
            status[c.name] = (c.attrs["State"].get("Health") or {}).get("Status") or c.status
            if c.status == "exited":
                status[c.name] = f"exited {c.attrs['State']['ExitCode']}"
        if all(s == "healthy" or s.startswith("exited") for s in status.values()):
            break
        time.sleep(1)
    return status




def one_container_per_reference(state) -> dict[str, dict]:
    by_image = {(r.get("provider"), r["name"]): r["inputs"]["name"] for r in state["resources"]
                if r["type"] == "docker:index/remoteImage:RemoteImage"}
    chosen: dict[str, dict] = {}
    for res in sorted(state["resources"], key=lambda r: r["name"]):
        if res["type"] == "docker:index/container:Container":
            ref = by_image[(res.get("provider"), res["name"] + "-image")]
            _REFS[res["name"]] = ref
            chosen.setdefault(ref, res)
    return chosen


def test_every_staging_standin_starts_with_its_captured_inputs_and_turns_healthy(
        staging_state, standins, client, tmp_path):
    ca = TestCA(tmp_path / "ca")
    chosen = one_container_per_reference(staging_state)
    assert set(chosen) == {s.reference for s in standins}
    started = []
    try:
        for ref, container in sorted(chosen.items()):
            root = tmp_path / container["name"]
            root.mkdir()
            started.append(run_captured(client, container, materialise(container, root, ca)))
        status = wait_healthy(started)
        bad = {name: s for name, s in status.items() if s != "healthy"}
        logs = {c.name: c.logs(tail=15).decode(errors="replace") for c in started if c.name in bad}
        assert not bad, json.dumps({"status": bad, "logs": logs}, indent=1)
        for c in started:
            user = (chosen[_reference_of_name(c.name)]["inputs"].get("user") or "")
            if user and ":" in user:
                top = client.api.top(c.id, ps_args="-o pid,uid,gid,args")
                col = {title.upper(): i for i, title in enumerate(top["Titles"])}
                ids = {(p[col["UID"]], p[col["GID"]]) for p in top["Processes"]}
                assert tuple(user.split(":")) in ids, (c.name, top)
    finally:
        for c in started:
            c.remove(force=True, v=True)


def _reference_of_name(name: str) -> str:
    return _REFS[name.removeprefix("t-")]


def test_postgres_standin_serves_tls_that_verify_full_accepts(staging_state, standins, client, tmp_path):
    ca = TestCA(tmp_path / "ca")
    container = one_container_per_reference(staging_state)["postgres:17.2-bookworm"]
    (tmp_path / "pg").mkdir()
    c = run_captured(client, container, materialise(container, tmp_path / "pg", ca))
    try:
        assert wait_healthy([c]) == {c.name: "healthy"}
        password = next(e.split("=", 1)[1] for e in container["inputs"]["envs"]
                        if e.startswith("POSTGRES_PASSWORD="))
        probe = c.exec_run(["psql", "host=localhost user=postgres dbname=postgres sslmode=verify-full "
                            "sslrootcert=/run/platform/ca.crt", "-tAc",
                            "select ssl from pg_stat_ssl where pid = pg_backend_pid()"],
                           environment={"PGPASSWORD": password}, user="postgres")
        assert probe.exit_code == 0 and probe.output.decode().strip() == "t", probe.output
        wrong = c.exec_run(["psql", "host=localhost user=postgres dbname=postgres sslmode=verify-full "
                            "sslrootcert=/etc/ssl/certs/ca-certificates.crt", "-tAc", "select 1"],
                           environment={"PGPASSWORD": password}, user="postgres")
        assert wrong.exit_code != 0  # a certificate from another CA is refused
    finally:
        c.remove(force=True, v=True)


def test_an_application_standin_fails_its_health_check_when_an_env_variable_is_missing(
        staging_state, standins, client, tmp_path):
    container = one_container_per_reference(staging_state)["ghcr.io/pencom-ehub/core:2026.11.1"]
    env = [e for e in container["inputs"]["envs"] if not e.startswith("REDIS_URL=")]
    (tmp_path / "app").mkdir()
    c = run_captured(client, container, materialise(container, tmp_path / "app", TestCA(tmp_path / "ca")), env=env)
    try:
        deadline = time.monotonic() + 60
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            c.reload()
            health = c.attrs["State"].get("Health") or {}
            if health.get("FailingStreak", 0) >= 2:
                break
            time.sleep(1)
        assert health.get("Status") != "healthy" and health.get("FailingStreak", 0) >= 2, health
        report = c.exec_run(["node", "-e", "require('http').get('http://127.0.0.1:4000/standin/env', "
                             "r => r.pipe(process.stdout))"])
        assert json.loads(report.output)["missing"] == ["REDIS_URL"]
    finally:
        c.remove(force=True, v=True)


# --- the registry --------------------------------------------------------------------------------

@pytest.fixture
def registry(lab, tmp_path):
    reg = Registry(cache_dir=tmp_path / "cache", storage=tmp_path / "storage")
    reg.start(lab)
    yield reg
    lab.stop_services()
    reg.stop()


def start_box_like_daemon(lab: NamespaceLab, prep: images.BoxPreparation, root: Path) -> tuple[DockerDaemon, subprocess.Popen]:
    """A second dockerd in the namespace that sees the box preparation: its own mount namespace
    with /etc/hosts and /etc/docker/certs.d from ``prep``, and the CA added to the system store
    it reads (SSL_CERT_FILE stands in for update-ca-certificates)."""
    etc = root / "etc"
    for path, content in prep.files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    hosts = etc / "hosts"
    hosts.write_text("127.0.0.1 localhost\n" + "\n".join(prep.hosts_lines) + "\n")
    bundle = root / "ca-bundle.crt"
    bundle.write_bytes(Path("/etc/ssl/certs/ca-certificates.crt").read_bytes()
                       + prep.files["/usr/local/share/ca-certificates/platform-rehearsal-ca.crt"])
    run_dir = Path(tempfile.mkdtemp(prefix="r2img2-", dir="/run"))
    daemon = DockerDaemon(lab.ns, root / "docker", run_dir / "d", SECOND_BIP)
    daemon.data_root.mkdir(parents=True)
    daemon.exec_root.mkdir(parents=True)
    script = (f"mount --bind {hosts} /etc/hosts && mount -t tmpfs tmpfs /etc/docker && "
              f"mkdir /etc/docker/certs.d && cp -r {etc}/docker/certs.d/. /etc/docker/certs.d/ && "
              f"exec dockerd --data-root {daemon.data_root} --exec-root {daemon.exec_root} "
              f"--pidfile {daemon.pidfile} --host {daemon.host} --bip {SECOND_BIP} "
              f"--storage-driver overlay2 --userland-proxy=false")
    proc = spawn(lab.ns, ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                 root / "dockerd2.log", env={"SSL_CERT_FILE": str(bundle)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError((root / "dockerd2.log").read_text()[-2000:])
        if daemon.socket.exists() and subprocess.run(daemon.cli("version"), capture_output=True).returncode == 0:
            return daemon, proc
        time.sleep(0.3)
    raise AssertionError("second dockerd did not start: " + (root / "dockerd2.log").read_text()[-2000:])


def test_a_box_daemon_pulls_stack_references_through_the_registry(lab, standins, registry, tmp_path):
    wanted = [s for s in standins if s.reference in ("postgres:17.2-bookworm",
                                                     "ghcr.io/pencom-ehub/core:2026.11.1")]
    assert len(wanted) == 2
    assert registry.missing(wanted) == wanted
    registry.push(wanted, lab.harness_docker_host)
    assert registry.missing(wanted) == []
    prep = registry.box_preparation()
    assert prep.extra_hosts["registry-1.docker.io"] == "100.64.0.1" == prep.extra_hosts["ghcr.io"]
    assert "/etc/docker/certs.d/ghcr.io/ca.crt" in prep.files
    daemon, proc = start_box_like_daemon(lab, prep, tmp_path / "box")
    try:
        for standin in wanted:
            pulled = subprocess.run(daemon.cli("pull", standin.reference), capture_output=True, text=True)
            assert pulled.returncode == 0, pulled.stderr
            labels = json.loads(subprocess.run(
                daemon.cli("image", "inspect", "--format", "{{json .Config.Labels}}", standin.reference),
                capture_output=True, text=True, check=True).stdout)
            assert labels[standin_plan.LABEL_RECIPE] == standin.recipe
        # Nothing else answers: a tag the registry lacks is not found, under the same hostname.
        absent = subprocess.run(daemon.cli("pull", "postgres:0-not-pushed"), capture_output=True, text=True)
        assert absent.returncode != 0 and "not found" in absent.stderr.lower(), absent.stderr
    finally:
        subprocess.run(daemon.cli("rm", "-f", "-v", *subprocess.run(
            daemon.cli("ps", "-aq"), capture_output=True, text=True).stdout.split()), capture_output=True)
        stop_pid(proc.pid, timeout=30)
        proc.wait(timeout=5)
        subprocess.run(["umount", "-l", str(tmp_path / "box" / "docker")], capture_output=True)
        shutil.rmtree(daemon.exec_root.parent, ignore_errors=True)


def test_the_test_ca_issues_server_certificates_openssl_verifies(tmp_path):
    openssl = require_tool("openssl", "certificate checks")
    ca = TestCA(tmp_path / "ca")
    issued = ca.issue(["db.internal", "10.0.0.5"])
    (tmp_path / "s.crt").write_bytes(issued.cert_pem)
    ok = subprocess.run([openssl, "verify", "-CAfile", str(tmp_path / "ca" / "ca.crt"),
                         "-verify_hostname", "db.internal", str(tmp_path / "s.crt")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = subprocess.run([openssl, "verify", "-CAfile", str(tmp_path / "ca" / "ca.crt"),
                            "-verify_hostname", "other.internal", str(tmp_path / "s.crt")],
                           capture_output=True, text=True)
    assert wrong.returncode != 0
    assert oct((tmp_path / "ca" / "ca.key").stat().st_mode & 0o777) == "0o600"
    assert TestCA(tmp_path / "ca").cert_pem == ca.cert_pem  # kept across runs


def test_pencom_redis_as_captured_reads_its_tls_key_and_turns_healthy(staging_state, standins, client, tmp_path):
    """Redis on Pencom's data node starts through `sh -c` (TLS options, the password from its
    environment), which the image's entrypoint does not step down from root for: the stack runs
    it as the image's redis user, who owns the 0600 key. As root without CAP_DAC_OVERRIDE it
    failed with "Failed to load private key ... Permission denied"."""
    container = next(r for r in staging_state["resources"] if r["name"] == "pencom-staging-data-redis")
    assert container["inputs"].get("user") == "999:1000"
    one_container_per_reference(staging_state)
    (tmp_path / "redis").mkdir()
    c = run_captured(client, container, materialise(container, tmp_path / "redis", TestCA(tmp_path / "ca")))
    try:
        status = wait_healthy([c], timeout=180)
        logs = c.logs().decode(errors="replace")
        assert status[c.name] == "healthy", logs[-2000:]
        assert "Permission denied" not in logs
    finally:
        c.remove(force=True, v=True)


def test_standin_scripts_pass_shellcheck_and_node_parses_the_app_server():
    shellcheck = require_tool("shellcheck", "linting the stand-ins' entrypoints")
    node = require_tool("node", "the application stand-in")
    scripts = [p for p in standin_plan.STANDINS_DIR.rglob("*")
               if p.is_file() and p.read_bytes().startswith(b"#!/bin/")]
    assert len(scripts) >= 8
    lint = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    parsed = subprocess.run([node, "--check", str(standin_plan.STANDINS_DIR / "app" / "server.js")],
                            capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr
