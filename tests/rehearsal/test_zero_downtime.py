"""Deploys that never take a service down (issue #22, part 3), proven on a real box.

Pencom's staging edge node is rehearsed alone (``Rehearsal("staging", products=["pencom"],
hosts=[EDGE], checks=False)``: it depends on no other host, and it holds api-gateway, the
stateless service behind the stack's nginx that this proves). A client in the lab's network
namespace, outside the box, sends ``GET https://staging-api.ehub.pencom.example/health`` to the
node's address every 50 ms, through the stack's own nginx, across two drills:

1. ``image-bump``: api-gateway's image tag is bumped (the new tag is the same stand-in under a
   new reference, tagged on the box as a registry push would make it). The converge replaces
   the container create-before-delete: the new one starts next to the old one under a new name,
   the converge waits until Docker calls it healthy, and the old one is removed at the end of
   the run. Every request of the loop answers 200.
2. ``bad-image``: the tag is bumped to an image whose server listens on another port, so its
   healthcheck never passes (made quick, so that the bounded wait ends in 12 s). The converge
   fails that step with the healthcheck's output; the old container keeps serving (still
   running and healthy) and every request of the loop answers 200.

``docker events`` on the box gives the switchover's timeline (the new container's start and
healthy, the old one's removal). The numbers go to ``out/zero-downtime-report.json``.

KRO's api (its backend) is not here: it holds a fixed address on its network (its database
allow-list matches it), so its replacement is delete-first (``replaced_delete_first``;
``tests/test_converge_replacement_real.py`` shows Docker refusing a create-first one, "Address
already in use").
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

EDGE = "pencom-staging-edge"
STACK_LABEL = "pencom-staging-edge"
SERVICE = "api-gateway"
API_HOST = "staging-api.ehub.pencom.example"
OLD_IMAGE = "ghcr.io/pencom-ehub/api-gateway:2026.11.1"
NEW_IMAGE = "ghcr.io/pencom-ehub/api-gateway:2026.11.2"
BAD_IMAGE = "ghcr.io/pencom-ehub/api-gateway:2026.11.3"
# A quick healthcheck for the bad image, so the bounded wait (0 + 3 * (2 + 2) = 12 s) ends soon.
QUICK_HEALTHCHECK = {"interval_s": 2, "timeout_s": 2, "retries": 2, "start_period_s": 0}
EVENTS = "/var/tmp/zero-downtime-events.jsonl"

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
        latencies = sorted(line[2] for line in lines)
        return {"requests": len(lines), "failed": len(failed), "failures": failed[:20],
                "seconds": lines[-1][0] if lines else 0,
                "max_ms": latencies[-1] if latencies else 0,
                "p99_ms": latencies[int(len(latencies) * 0.99)] if latencies else 0,
                "slowest": sorted(lines, key=lambda line: -line[2])[:5],
                "stderr": self.proc.stderr.read().decode(errors="replace")[-500:]}


def sh(lab, box: str, script: str) -> str:
    proc = lab.exec(box, ["bash", "-c", script], timeout=300)
    assert proc.returncode == 0, (f"{box}: {script!r} exited {proc.returncode}: "
                                  f"{proc.stderr.decode(errors='replace')[-800:]}")
    return proc.stdout.decode(errors="replace")


def gateway_containers(lab, box: str) -> list[dict]:
    ids = sh(lab, box, f"docker ps -aq --filter label=platform.stack={STACK_LABEL} "
                       f"--filter label=platform.service={SERVICE}").split()
    if not ids:
        return []
    data = json.loads(sh(lab, box, "docker inspect " + " ".join(ids)))
    return [{"id": c["Id"][:12], "name": c["Name"].lstrip("/"), "image": c["Config"]["Image"],
             "status": c["State"]["Status"], "health": (c["State"].get("Health") or {}).get("Status")}
            for c in data]


def start_events(lab, box: str) -> None:
    """``docker events`` of the service's containers on the box, into EVENTS, until stopped."""
    filters = " ".join(f"--filter event={e}" for e in ("create", "start", "health_status", "die", "destroy"))
    sh(lab, box, f"rm -f {EVENTS}; setsid nohup docker events --filter label=platform.service={SERVICE} "
                 f"--filter label=platform.stack={STACK_LABEL} {filters} --format '{{{{json .}}}}' "
                 f"> {EVENTS} 2>&1 < /dev/null & echo $! > {EVENTS}.pid")


def stop_events(lab, box: str) -> list[dict]:
    sh(lab, box, f"kill $(cat {EVENTS}.pid) || true")
    events = []
    for line in sh(lab, box, f"cat {EVENTS}").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        events.append({"t": event["timeNano"] / 1e9, "action": event.get("Action") or event.get("status"),
                       "id": (event.get("id") or "")[:12],
                       "image": (event.get("Actor") or {}).get("Attributes", {}).get("image")})
    return events


def timeline(events: list[dict], old: str | None, new: str | None) -> dict:
    """Seconds between the switchover's events, by container id (12 characters): the new
    container started, became healthy; the old one destroyed (None: that event did not happen)."""
    def first(action: str, cid: str | None):
        return next((e["t"] for e in events if e["action"].startswith(action) and e["id"] == cid), None)

    started, healthy, removed = first("start", new), first("health_status: healthy", new), first("destroy", old)
    span = lambda a, b: round(b - a, 2) if a is not None and b is not None else None  # noqa: E731
    return {"new_started_to_healthy_s": span(started, healthy), "healthy_to_old_removed_s": span(healthy, removed),
            "new_started_to_old_removed_s": span(started, removed)}


def stack_files(tmp: Path) -> dict[str, Path]:
    from synth.run import stack_file_path

    doc = yaml.safe_load(stack_file_path("staging").read_text())
    gateway = next(s for s in doc["config"]["platform:pencom"]["edge_services"] if s["name"] == SERVICE)
    assert gateway["image"] == OLD_IMAGE, gateway["image"]
    docs = {"base": copy.deepcopy(doc)}
    gateway["image"] = NEW_IMAGE
    docs["bump"] = copy.deepcopy(doc)
    gateway["image"] = BAD_IMAGE
    gateway["healthcheck"].update(QUICK_HEALTHCHECK)
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
    started = time.monotonic()
    with Rehearsal("staging", products=["pencom"], hosts=[EDGE], stack_file=files["base"],
                   checks=False) as held:
        results["error"] = held.report.error
        results["timings"] = dict(held.report.timings)
        if held.report.error is None:
            lab = held.lab
            address = held.lab_capture.hosts[EDGE].address
            # The new versions, as a registry push would make them available: the same
            # stand-in under the new tag, and a broken build whose server listens elsewhere.
            sh(lab, EDGE, f"docker tag {shlex.quote(OLD_IMAGE)} {shlex.quote(NEW_IMAGE)} && "
                          f"cid=$(docker create {shlex.quote(OLD_IMAGE)}) && "
                          f"docker commit --change 'ENV STANDIN_PORTS=3999' \"$cid\" {shlex.quote(BAD_IMAGE)} "
                          f"&& docker rm \"$cid\"")
            results["before"] = gateway_containers(lab, EDGE)
            for name, stack_file, old, new in (("image-bump", files["bump"], OLD_IMAGE, NEW_IMAGE),
                                               ("bad-image", files["bad"], NEW_IMAGE, BAD_IMAGE)):
                serving = [c["id"] for c in gateway_containers(lab, EDGE) if c["image"] == old]
                start_events(lab, EDGE)
                loop = RequestLoop(lab, address, held.workdir, name)
                time.sleep(2)  # the loop's first requests land before the converge starts
                entry = held.drill(Drill(name, lambda context: {SERVICE: gateway_containers(context.lab, EDGE)},
                                         stack_file=stack_file, hosts=[EDGE]))
                time.sleep(5)  # and its last ones after the old container is gone
                events = stop_events(lab, EDGE)
                after = gateway_containers(lab, EDGE)
                fresh = [c["id"] for c in after if c["image"] == new]
                results[name] = {"drill": entry, "loop": loop.stop(), "after": after, "events": events,
                                 "timeline": timeline(events, serving[0] if serving else None,
                                                      fresh[0] if fresh else None)}
        results["seconds"] = round(time.monotonic() - started, 1)
        out = Path(__file__).resolve().parents[2] / "out"
        out.mkdir(exist_ok=True)
        (out / "zero-downtime-report.json").write_text(json.dumps(results, indent=1, default=str))
        print(json.dumps({k: v for k, v in results.items() if k != "before"}, indent=1, default=str)[:20000])
    return results


def test_the_lab_converged(switchovers):
    assert switchovers["error"] is None, switchovers["error"]
    (before,) = switchovers["before"]
    assert before["image"] == OLD_IMAGE and before["health"] == "healthy", before


def test_an_image_bump_switches_over_with_zero_failed_requests(switchovers):
    bump = switchovers["image-bump"]
    assert "error" not in bump["drill"], bump["drill"]["error"]
    loop = bump["loop"]
    assert loop["requests"] >= 100, loop
    assert loop["failed"] == 0, loop
    runs = sorted(bump["drill"]["runs"].items())
    (_, apply), (_, settle) = runs
    assert not apply["failed"], apply["failed"]
    assert f"{EDGE}-{SERVICE}" in apply["changed_steps"], apply["changed_steps"]
    assert not settle["failed"] and not any(settle["changes"].values()), settle
    (after,) = bump["after"]
    (before,) = switchovers["before"]
    assert after["image"] == NEW_IMAGE and after["health"] == "healthy", after
    assert after["name"] != before["name"], "the new container runs under a new name"
    # The order, from the box's own events: the new one healthy before the old one goes.
    line = bump["timeline"]
    assert line["healthy_to_old_removed_s"] is not None and line["healthy_to_old_removed_s"] >= 0, line


def test_a_bad_image_fails_the_converge_and_the_old_container_keeps_serving(switchovers):
    bad = switchovers["bad-image"]
    loop = bad["loop"]
    assert loop["requests"] >= 50, loop
    assert loop["failed"] == 0, loop
    (_, apply) = sorted(bad["drill"]["runs"].items())[0]
    failure = next(f for f in apply["failed"] if f.startswith(f"{EDGE}-{SERVICE}:"))
    assert "failed to be in healthy state within 12 s" in failure, failure
    assert "last healthcheck: exit" in failure, failure  # its exit code and output
    serving = [c for c in bad["after"] if c["image"] == NEW_IMAGE]
    assert len(serving) == 1 and serving[0]["status"] == "running" and serving[0]["health"] == "healthy", bad["after"]
    unhealthy = [c for c in bad["after"] if c["image"] == BAD_IMAGE]
    assert len(unhealthy) == 1 and unhealthy[0]["health"] != "healthy", bad["after"]
