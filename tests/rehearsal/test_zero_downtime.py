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

KRO's api (its backend) is proven the same way on KRO's staging droplet alone
(``kro_switchover``): a loop of ``GET https://api.stage.krotrust.com/health`` through the
droplet's nginx every 50 ms across an image bump of the backend, 0 failed requests, the new
container healthy under a new name and the old one removed after it. The backend is no longer
pinned to an address: it sits on a network of its own whose subnet its database egress rule
matches, so the new container reaches the managed Postgres (the lab's stand-in) on 25060 as the
old one did, which the drill checks from inside it, and a frontend container does not.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_root, require_tool
from tests.rehearsal.ops_proofs import write_stack_docs

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

    def __init__(self, lab, address: str, workdir: Path, name: str, host: str = API_HOST):
        self.out = workdir / f"loop-{name}.jsonl"
        self.stop_file = workdir / f"loop-{name}.stop"
        self.proc = subprocess.Popen(lab.netns_argv([sys.executable, "-c", LOOP, address, host,
                                                     str(self.out), str(self.stop_file)]),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> dict:
        self.stop_file.touch()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        return loop_numbers(self.out.read_text(), self.proc.stderr.read().decode(errors="replace"))


def loop_numbers(text: str, stderr: str = "") -> dict:
    """A request loop's lines (JSON ``[seconds since start, status or error, milliseconds]``)
    -> requests, failed (anything but 200), the first failures, latencies, the slowest."""
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    failed = [line for line in lines if line[1] != 200]
    latencies = sorted(line[2] for line in lines)
    return {"requests": len(lines), "failed": len(failed), "failures": failed[:20],
            "seconds": lines[-1][0] if lines else 0,
            "max_ms": latencies[-1] if latencies else 0,
            "p99_ms": latencies[int(len(latencies) * 0.99)] if latencies else 0,
            "slowest": sorted(lines, key=lambda line: -line[2])[:5], "stderr": stderr[-500:]}


def sh(lab, box: str, script: str) -> str:
    proc = lab.exec(box, ["bash", "-c", script], timeout=300)
    assert proc.returncode == 0, (f"{box}: {script!r} exited {proc.returncode}: "
                                  f"{proc.stderr.decode(errors='replace')[-800:]}")
    return proc.stdout.decode(errors="replace")


def gateway_containers(lab, box: str, stack: str = STACK_LABEL, service: str = SERVICE) -> list[dict]:
    ids = sh(lab, box, f"docker ps -aq --filter label=platform.stack={stack} "
                       f"--filter label=platform.service={service}").split()
    if not ids:
        return []
    data = json.loads(sh(lab, box, "docker inspect " + " ".join(ids)))
    return [{"id": c["Id"][:12], "name": c["Name"].lstrip("/"), "image": c["Config"]["Image"],
             "status": c["State"]["Status"], "health": (c["State"].get("Health") or {}).get("Status")}
            for c in data]


def start_events(lab, box: str, stack: str = STACK_LABEL, service: str = SERVICE) -> None:
    """``docker events`` of the service's containers on the box, into EVENTS, until stopped."""
    filters = " ".join(f"--filter event={e}" for e in ("create", "start", "health_status", "die", "destroy"))
    sh(lab, box, f"rm -f {EVENTS}; setsid nohup docker events --filter label=platform.service={service} "
                 f"--filter label=platform.stack={stack} {filters} --format '{{{{json .}}}}' "
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


def committed_service(product: str, services: str, name: str, image: str) -> tuple[dict, dict]:
    """(the committed staging stack document, the entry ``name`` of its ``platform:<product>``
    list ``services``, to change in place). Raises AssertionError if its image is not ``image``
    (the committed file moved: the drill's tags would not be the stand-in's)."""
    from synth.run import stack_file_path

    doc = yaml.safe_load(stack_file_path("staging").read_text())
    service = next(s for s in doc["config"][f"platform:{product}"][services] if s["name"] == name)
    assert service["image"] == image, service["image"]
    return doc, service


def stack_files(tmp: Path) -> dict[str, Path]:
    doc, gateway = committed_service("pencom", "edge_services", SERVICE, OLD_IMAGE)
    docs = {"base": copy.deepcopy(doc)}
    gateway["image"] = NEW_IMAGE
    docs["bump"] = copy.deepcopy(doc)
    gateway["image"] = BAD_IMAGE
    gateway["healthcheck"].update(QUICK_HEALTHCHECK)
    docs["bad"] = copy.deepcopy(doc)
    return write_stack_docs(tmp, docs)


def require_lab() -> None:
    require_root("network namespaces, a Docker daemon, boxes")
    require_tool("dockerd", "the lab's harness daemon")
    require_tool("docker-registry", "the stand-in images' registry")


def write_report(results: dict, name: str, started: float) -> None:
    """``results`` with the seconds since ``started`` (monotonic) as ``out/<name>.json``, and
    printed (the run's log keeps the numbers)."""
    results["seconds"] = round(time.monotonic() - started, 1)
    out = Path(__file__).resolve().parents[2] / "out"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps({k: v for k, v in results.items() if k != "before"}, indent=1, default=str)[:20000])


def switchover(held, address: str | None, name: str, stack_file: Path, old: str, new: str, *, box: str = EDGE,
               stack: str = STACK_LABEL, service: str = SERVICE, host: str = API_HOST, start_loop=None,
               hosts: list[str] | None = None) -> dict:
    """One drill (``stack_file`` converged on ``box``) with the request loop running across it:
    the drill's entry, the loop's numbers, the service's containers after it, the box's events
    and the switchover's timeline (``old`` and ``new`` are the images before and after).
    ``start_loop``: starts another loop (anything with ``stop() -> loop_numbers``) instead of
    the ``RequestLoop`` to ``address``; ``hosts``: the drill's hosts (default ``box`` alone; a
    host reached through a bastion needs the bastion's host too)."""
    from rehearsal.rehearse import Drill

    lab = held.lab
    serving = [c["id"] for c in gateway_containers(lab, box, stack, service) if c["image"] == old]
    start_events(lab, box, stack, service)
    loop = start_loop() if start_loop else RequestLoop(lab, address, held.workdir, name, host=host)
    time.sleep(2)  # the loop's first requests land before the converge starts
    entry = held.drill(Drill(name, lambda context: {service: gateway_containers(context.lab, box, stack, service)},
                             stack_file=stack_file, hosts=hosts or [box]))
    time.sleep(5)  # and its last ones after the old container is gone
    events = stop_events(lab, box)
    after = gateway_containers(lab, box, stack, service)
    fresh = [c["id"] for c in after if c["image"] == new]
    return {"drill": entry, "loop": loop.stop(), "after": after, "events": events,
            "timeline": timeline(events, serving[0] if serving else None, fresh[0] if fresh else None)}


@pytest.fixture(scope="module")
def switchovers(tmp_path_factory):
    require_lab()
    from rehearsal.rehearse import Rehearsal

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
                results[name] = switchover(held, address, name, stack_file, old, new)
        write_report(results, "zero-downtime-report", started)
    return results


def converged(results: dict, image: str) -> dict:
    """The one container the first converge left, which must run ``image``, healthy."""
    assert results["error"] is None, results["error"]
    (before,) = results["before"]
    assert before["image"] == image and before["health"] == "healthy", before
    return before


def test_the_lab_converged(switchovers):
    converged(switchovers, OLD_IMAGE)


def assert_switched_over(bump: dict, before: dict, new: str, step: str) -> None:
    """The drill converged (``step`` changed, the settle run changed nothing), every request of
    the loop answered 200, and the one container left runs ``new``, healthy, under a new name,
    the old one removed after the new one was healthy (the box's own events)."""
    assert "error" not in bump["drill"], bump["drill"]["error"]
    loop = bump["loop"]
    assert loop["requests"] >= 100, loop
    assert loop["failed"] == 0, loop
    (_, apply), (_, settle) = sorted(bump["drill"]["runs"].items())
    assert not apply["failed"], apply["failed"]
    assert step in apply["changed_steps"], apply["changed_steps"]
    assert not settle["failed"] and not any(settle["changes"].values()), settle
    (after,) = bump["after"]
    assert after["image"] == new and after["health"] == "healthy", after
    assert after["name"] != before["name"], "the new container runs under a new name"
    line = bump["timeline"]
    assert line["healthy_to_old_removed_s"] is not None and line["healthy_to_old_removed_s"] >= 0, line


def test_an_image_bump_switches_over_with_zero_failed_requests(switchovers):
    (before,) = switchovers["before"]
    assert_switched_over(switchovers["image-bump"], before, NEW_IMAGE, f"{EDGE}-{SERVICE}")


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


# --- KRO's api ------------------------------------------------------------------------------

KRO_BOX = "kro-staging"
KRO_SERVICE = "backend"
KRO_HOST = "api.stage.krotrust.com"
KRO_OLD = "registry.digitalocean.com/kro/kro-backend:2026.11.2"
KRO_NEW = "registry.digitalocean.com/kro/kro-backend:2026.11.3"
# From inside a container: "open" when a TCP connection to HOST:PORT (argv) completes within 5 s,
# else "closed". DB_ADDRESS prints the backend's DATABASE_URL host and port, nothing else of it.
DB_ADDRESS = "const u = new URL(process.env.DATABASE_URL); console.log(u.hostname + ':' + (u.port || 25060))"
DB_PROBE = ("const [h, p] = process.argv[1].split(':'); const s = require('net').connect(+p, h); "
            "s.on('connect', () => { console.log('open'); process.exit(0) }); "
            "s.on('error', () => { console.log('closed'); process.exit(0) }); "
            "setTimeout(() => { console.log('closed'); process.exit(0) }, 5000)")


def kro_stack_files(tmp: Path) -> dict[str, Path]:
    """The committed staging stack file (``base``) and the same with KRO's backend image bumped
    (``bump``), as files in ``tmp``. Raises AssertionError if the committed image moved."""
    doc, backend = committed_service("kro", "services", KRO_SERVICE, KRO_OLD)
    base = copy.deepcopy(doc)
    backend["image"] = KRO_NEW
    return write_stack_docs(tmp, {"base": base, "bump": doc}, prefix="kro-")


def database_reach(lab, box: str) -> dict[str, str]:
    """Whether the running backend and a frontend container open a TCP connection to the
    backend's database (its DATABASE_URL's host and port; the URL, with its password, is read
    inside the backend and never on a command line)."""
    def cid(service: str) -> str:
        return sh(lab, box, f"docker ps -q --filter label=platform.stack={box} "
                            f"--filter label=platform.service={service}").split()[0]

    backend, frontend = cid(KRO_SERVICE), cid("frontend")
    target = sh(lab, box, f"docker exec {backend} node -e {shlex.quote(DB_ADDRESS)}").strip()
    assert re.fullmatch(r"[A-Za-z0-9.-]+:\d+", target), target
    # The box resolves the name, as the live datastore probes do (rehearsal/checks/datastores.py):
    # the lab's names for the managed clusters are the box's own, which a container's resolver
    # may not see. The probe is about the egress rule, not about DNS.
    name, port = target.rsplit(":", 1)
    address = sh(lab, box, f"getent ahostsv4 {shlex.quote(name)}").split()[0]
    target = f"{address}:{port}"
    return {name: sh(lab, box, f"docker exec {c} node -e {shlex.quote(DB_PROBE)} {target}").strip()
            for name, c in ((KRO_SERVICE, backend), ("frontend", frontend))}


@pytest.fixture(scope="module")
def kro_switchover(tmp_path_factory):
    """KRO's droplet alone, converged from the committed stack file, then its backend bumped."""
    require_lab()
    from rehearsal.rehearse import Rehearsal

    started, files = time.monotonic(), kro_stack_files(tmp_path_factory.mktemp("zero-downtime-kro"))
    with Rehearsal("staging", products=["kro"], hosts=[KRO_BOX], stack_file=files["base"], checks=False) as held:
        results: dict = {"error": held.report.error, "timings": dict(held.report.timings)}
        if held.report.error is None:
            lab = held.lab
            address = held.lab_capture.hosts[KRO_BOX].address
            sh(lab, KRO_BOX, f"docker tag {shlex.quote(KRO_OLD)} {shlex.quote(KRO_NEW)}")
            results["before"] = gateway_containers(lab, KRO_BOX, KRO_BOX, KRO_SERVICE)
            results["database_before"] = database_reach(lab, KRO_BOX)
            results["image-bump"] = switchover(held, address, "kro-image-bump", files["bump"], KRO_OLD, KRO_NEW,
                                               box=KRO_BOX, stack=KRO_BOX, service=KRO_SERVICE, host=KRO_HOST)
            results["image-bump"]["database_after"] = database_reach(lab, KRO_BOX)
        write_report(results, "zero-downtime-kro-report", started)
    return results


def test_kros_api_image_bump_switches_over_with_zero_failed_requests(kro_switchover):
    before = converged(kro_switchover, KRO_OLD)
    assert kro_switchover["database_before"] == {KRO_SERVICE: "open", "frontend": "closed"}, kro_switchover
    bump = kro_switchover["image-bump"]
    assert_switched_over(bump, before, KRO_NEW, f"{KRO_BOX}-{KRO_SERVICE}")
    # The replacement took another address of the backend's own network, and its rule admits it.
    assert bump["database_after"] == {KRO_SERVICE: "open", "frontend": "closed"}, bump
