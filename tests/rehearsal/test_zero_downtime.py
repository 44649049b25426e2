"""Deploys that never take a service down (issue #22, part 3), proven on a real box.

KRO's staging droplet is rehearsed alone (``Rehearsal("staging", products=["kro"])``, a private
lab lock). A client in the lab's network namespace, outside the box, sends
``GET https://api.stage.krotrust.com/health`` to the droplet's address every 50 ms, through the
stack's own nginx, across two drills:

1. ``image-bump``: the backend's image tag is bumped (the new tag is the same stand-in image
   under a new reference, tagged on the box as a registry push would make it). The converge
   replaces the container create-before-delete: the new one starts next to the old one under a
   new name, the converge waits until Docker calls it healthy, and the old one is removed at
   the end. Every request of the loop answers 200.
2. ``bad-image``: the tag is bumped to an image whose server listens on the wrong port, so its
   healthcheck never passes (its healthcheck made quick, so that the bounded wait ends in
   12 s). The converge fails that step with the healthcheck's output; the old container keeps
   serving (still the one answering, still healthy), and every request of the loop answers 200.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_root, require_tool

pytestmark = pytest.mark.rehearsal

API_HOST = "api.stage.krotrust.com"
OLD_IMAGE = "registry.digitalocean.com/kro/kro-backend:2026.11.2"
NEW_IMAGE = "registry.digitalocean.com/kro/kro-backend:2026.11.3"
BAD_IMAGE = "registry.digitalocean.com/kro/kro-backend:2026.11.4"
# A quick healthcheck for the bad image, so the bounded wait (0 + 3 * (2 + 2) = 12 s) ends soon.
QUICK_HEALTHCHECK = {"interval_s": 2, "timeout_s": 2, "retries": 2, "start_period_s": 0}

# The client: one request every 50 ms (after the previous one ended), until STOP exists; each
# line of OUT is one request: [seconds since start, status or error, milliseconds].
LOOP = r'''
import http.client, json, os, socket, ssl, sys, time
address, host, out, stop = sys.argv[1:5]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE  # availability, not the certificate, is measured here
start = time.monotonic()
with open(out, "w") as log:
    while not os.path.exists(stop):
        t0 = time.monotonic()
        try:
            conn = http.client.HTTPSConnection(address, 443, timeout=20, context=context)
            conn.sock = context.wrap_socket(socket.create_connection((address, 443), timeout=20),
                                            server_hostname=host)
            conn.request("GET", "/health", headers={"Host": host})
            status = conn.getresponse().status
            conn.close()
        except Exception as exc:
            status = f"{type(exc).__name__}: {exc}"
        log.write(json.dumps([round(t0 - start, 3), status, round((time.monotonic() - t0) * 1000)]) + "\n")
        log.flush()
        time.sleep(0.05)
'''


class RequestLoop:
    """The 50 ms request loop, run in the lab's namespace while a drill converges."""

    def __init__(self, lab, address: str, workdir: Path, name: str):
        self.out = workdir / f"loop-{name}.jsonl"
        self.stop_file = workdir / f"loop-{name}.stop"
        self.proc = subprocess.Popen(lab.netns_argv([sys.executable, "-c", LOOP, address, API_HOST,
                                                     str(self.out), str(self.stop_file)]),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> dict:
        self.stop_file.touch()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        lines = [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]
        failed = [line for line in lines if line[1] != 200]
        return {"requests": len(lines), "failed": len(failed), "failures": failed[:20],
                "seconds": lines[-1][0] if lines else 0,
                "max_ms": max((line[2] for line in lines), default=0),
                "stderr": self.proc.stderr.read().decode(errors="replace")[-500:]}


def sh(lab, box: str, script: str) -> str:
    proc = lab.exec(box, ["bash", "-c", script], timeout=300)
    assert proc.returncode == 0, (f"{box}: {script!r} exited {proc.returncode}: "
                                  f"{proc.stderr.decode(errors='replace')[-800:]}")
    return proc.stdout.decode(errors="replace")


def backend_containers(lab, box: str) -> list[dict]:
    ids = sh(lab, box, "docker ps -aq --filter label=platform.stack=kro-staging "
                       "--filter label=platform.service=backend").split()
    if not ids:
        return []
    data = json.loads(sh(lab, box, "docker inspect " + " ".join(ids)))
    return [{"id": c["Id"][:12], "name": c["Name"].lstrip("/"), "image": c["Config"]["Image"],
             "status": c["State"]["Status"], "health": (c["State"].get("Health") or {}).get("Status")}
            for c in data]


def stack_files(tmp: Path) -> dict[str, Path]:
    from synth.run import stack_file_path

    doc = yaml.safe_load(stack_file_path("staging").read_text())
    backend = next(s for s in doc["config"]["platform:kro"]["services"] if s["name"] == "backend")
    assert backend["image"] == OLD_IMAGE, backend["image"]
    docs = {"base": copy.deepcopy(doc)}
    backend["image"] = NEW_IMAGE
    docs["bump"] = copy.deepcopy(doc)
    backend["image"] = BAD_IMAGE
    backend["healthcheck"].update(QUICK_HEALTHCHECK)
    docs["bad"] = copy.deepcopy(doc)
    paths = {}
    for name, d in docs.items():
        paths[name] = tmp / f"Pulumi.staging-{name}.yaml"
        paths[name].write_text(yaml.safe_dump(d, sort_keys=False))
    return paths


@pytest.fixture(scope="module")
def switchovers(tmp_path_factory):
    require_root("network namespaces, a Docker daemon, boxes")
    require_tool("dockerd", "the lab's harness daemon")
    require_tool("docker-registry", "the stand-in images' registry")
    from rehearsal.rehearse import Drill, Rehearsal

    tmp = tmp_path_factory.mktemp("zero-downtime")
    files = stack_files(tmp)
    results: dict = {}
    with Rehearsal("staging", products=["kro"], stack_file=files["base"], checks=False,
                   lock_path=tmp / "lab.lock") as held:
        results["error"] = held.report.error
        if held.report.error is None:
            lab = held.lab
            (host,) = held.lab_capture.hosts.values()
            box, address = host.name, host.address
            # The new versions, as a registry push would make them available: the same
            # stand-in under the new tag, and a broken build whose server listens elsewhere.
            sh(lab, box, f"docker tag {shlex.quote(OLD_IMAGE)} {shlex.quote(NEW_IMAGE)} && "
                         f"printf 'FROM {OLD_IMAGE}\\nENV STANDIN_PORTS=3999\\n' | "
                         f"docker build -q -t {shlex.quote(BAD_IMAGE)} -")
            results["before"] = backend_containers(lab, box)
            for name, stack_file in (("image-bump", files["bump"]), ("bad-image", files["bad"])):
                loop = RequestLoop(lab, address, held.workdir, name)
                time.sleep(2)  # the loop's first requests land before the converge starts
                entry = held.drill(Drill(name, lambda context: {"backend": backend_containers(context.lab, box)},
                                         stack_file=stack_file))
                time.sleep(5)  # and its last ones after the old container is gone
                results[name] = {"drill": entry, "loop": loop.stop(),
                                 "after": backend_containers(lab, box)}
        out = Path(__file__).resolve().parents[2] / "out"
        out.mkdir(exist_ok=True)
        (out / "zero-downtime-report.json").write_text(json.dumps(results, indent=1, default=str))
        print(json.dumps(results, indent=1, default=str))
    return results


def test_the_lab_converged(switchovers):
    assert switchovers["error"] is None, switchovers["error"]
    (before,) = switchovers["before"]
    assert before["image"] == OLD_IMAGE and before["health"] == "healthy", before


def test_an_image_bump_switches_over_with_zero_failed_requests(switchovers):
    bump = switchovers["image-bump"]
    loop = bump["loop"]
    assert loop["requests"] >= 100, loop
    assert loop["failed"] == 0, loop
    runs = sorted(bump["drill"]["runs"].items())
    (_, apply), (_, settle) = runs
    assert not apply["failed"], apply["failed"]
    assert "kro-staging-backend" in apply["changed_steps"], apply["changed_steps"]
    assert not settle["failed"] and not any(settle["changes"].values()), settle
    (after,) = bump["after"]
    (before,) = switchovers["before"]
    assert after["image"] == NEW_IMAGE and after["health"] == "healthy", after
    assert after["name"] != before["name"], "the new container runs under a new name"


def test_a_bad_image_fails_the_converge_and_the_old_container_keeps_serving(switchovers):
    bad = switchovers["bad-image"]
    loop = bad["loop"]
    assert loop["requests"] >= 50, loop
    assert loop["failed"] == 0, loop
    (_, apply) = sorted(bad["drill"]["runs"].items())[0]
    failure = next(f for f in apply["failed"] if f.startswith("kro-staging-backend:"))
    assert "failed to be in healthy state within 12 s" in failure, failure
    assert "last healthcheck: exit 1" in failure, failure
    serving = [c for c in bad["after"] if c["image"] == NEW_IMAGE]
    assert len(serving) == 1 and serving[0]["status"] == "running" and serving[0]["health"] == "healthy", bad["after"]
    unhealthy = [c for c in bad["after"] if c["image"] == BAD_IMAGE]
    assert len(unhealthy) == 1 and unhealthy[0]["health"] != "healthy", bad["after"]
