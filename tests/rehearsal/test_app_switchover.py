"""Deploys that never take a service down (issue #22, part 3) for Pencom's APP-NODE services,
which other hosts reach only through the app node's mutual-TLS terminator (``mtls-gateway``,
``components/mtls.py``): proven on real boxes.

Pencom's staging edge and app nodes are rehearsed alone (``Rehearsal("staging",
products=["pencom"], hosts=[EDGE, APP], checks=False)``: the app node depends on the edge
only, its bastion and egress proxy). Inside api-gateway's own container on the edge, a client
sends ``GET http://api-gateway-mtls:4000/health`` every 50 ms (a fresh connection each): the
path every edge service's call to core takes, api-gateway -> its sidecar on the edge's
container network -> mutual TLS with api-gateway's client certificate to the terminator on the
app node's private address (14000) -> core by its alias on the app node's container network.
Across it, core's image tag is bumped (the same stand-in under a new reference, tagged on the
app box as a registry push would make it available), and the converge replaces core
create-before-delete: the new container starts next to the old one under a new name and takes
the alias with it, the converge waits until Docker calls it healthy, and the old one is removed
at the end of the run. Every request of the loop answers 200; the one core left is the new one,
healthy, under a new name; the old one was removed after the new one was healthy (``docker
events`` on the app box: the switchover's timeline). What the terminator logged meanwhile
(its error log: refused or failed upstream connections it retried) is in the report,
``out/app-switchover-report.json``.
"""

from __future__ import annotations

import copy
import shlex
import time

import pytest

from tests.rehearsal.ops_proofs import write_stack_docs
from tests.rehearsal.test_zero_downtime import (assert_switched_over, committed_service, converged, gateway_containers,
                                                loop_numbers, require_lab, sh, switchover, write_report)

pytestmark = pytest.mark.rehearsal

EDGE, APP = "pencom-staging-edge", "pencom-staging-app"
SERVICE, CALLER, TERMINATOR = "core", "api-gateway", "mtls-gateway"
OLD_IMAGE = "ghcr.io/pencom-ehub/core:2026.11.1"
NEW_IMAGE = "ghcr.io/pencom-ehub/core:2026.11.2"
URL = "http://api-gateway-mtls:4000/health"  # core through api-gateway's sidecar (stacks/pencom/mtls.py)
OUT = "/var/tmp/app-switchover-loop"  # on the edge box: the loop's lines, errors and pid
STOP = "/tmp/app-switchover.stop"  # in the caller's container (its /tmp is a tmpfs)

# The client, in the caller's container (the stand-in image has node): one request every 50 ms
# after the previous one ended, until STOP exists; each line is [seconds since start, status or
# error, milliseconds], as test_zero_downtime's LOOP writes them.
LOOP = r"""
const http = require('http'), fs = require('fs');
const [url, stop] = process.argv.slice(1);
const start = process.hrtime.bigint();
const now = () => Number(process.hrtime.bigint() - start) / 1e9;
function once() {
  if (fs.existsSync(stop)) process.exit(0);
  const t0 = now();
  let done = false;
  const finish = (status) => {
    if (done) return;
    done = true;
    process.stdout.write(JSON.stringify([Math.round(t0 * 1000) / 1000, status, Math.round((now() - t0) * 1000)]) + '\n');
    setTimeout(once, 50);
  };
  const req = http.get(url, { agent: false, timeout: 20000 }, (res) => {
    res.resume();
    res.on('end', () => finish(res.statusCode));
    res.on('error', (e) => finish(`${e.name}: ${e.message}`));
  });
  req.on('timeout', () => req.destroy(new Error('timed out after 20 s')));
  req.on('error', (e) => finish(`${e.name}: ${e.message}`));
}
once();
"""


def running(lab, box: str, service: str) -> str:
    """The id of ``service``'s one running container on ``box`` (its stack label is the box's name)."""
    ids = sh(lab, box, f"docker ps -q --filter label=platform.stack={box} --filter label=platform.service={service}").split()
    assert len(ids) == 1, f"{box}: {service}: running containers {ids}"
    return ids[0]


class CallerLoop:
    """The 50 ms loop inside the caller's container on the edge box, in the background there
    (``docker exec`` under ``setsid``); ``stop`` ends it through its stop file and returns
    ``loop_numbers``."""

    def __init__(self, lab):
        self.lab, self.caller = lab, running(lab, EDGE, CALLER)
        sh(lab, EDGE, f"rm -f {OUT}.*; docker exec {self.caller} rm -f {STOP}; "
                      f"setsid nohup docker exec {self.caller} node -e {shlex.quote(LOOP)} {URL} {STOP} "
                      f"> {OUT}.jsonl 2> {OUT}.err < /dev/null & echo $! > {OUT}.pid")

    def stop(self) -> dict:
        sh(self.lab, EDGE, f"docker exec {self.caller} touch {STOP}; pid=$(cat {OUT}.pid); "
                           f"for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.3; done; "
                           f"kill -0 $pid 2>/dev/null && kill $pid; docker exec {self.caller} rm -f {STOP}; true")
        numbers = loop_numbers(sh(self.lab, EDGE, f"cat {OUT}.jsonl"), sh(self.lab, EDGE, f"cat {OUT}.err"))
        sh(self.lab, EDGE, f"rm -f {OUT}.*")
        return numbers


def terminator_errors(lab, since: str) -> list[str]:
    """The terminator's error log (its stderr) since ``since`` (the app box's clock, unix seconds)."""
    cid = running(lab, APP, TERMINATOR)
    return sh(lab, APP, f"docker logs --since {since} {cid} 2>&1 >/dev/null").splitlines()[-40:]


@pytest.fixture(scope="module")
def app_switchover(tmp_path_factory):
    """Pencom's edge and app nodes, converged from the committed stack file, then core bumped."""
    require_lab()
    from rehearsal.rehearse import Rehearsal

    doc, core = committed_service("pencom", "app_services", SERVICE, OLD_IMAGE)
    base = copy.deepcopy(doc)
    core["image"] = NEW_IMAGE
    files = write_stack_docs(tmp_path_factory.mktemp("app-switchover"), {"base": base, "bump": doc}, prefix="app-")
    started = time.monotonic()
    with Rehearsal("staging", products=["pencom"], hosts=[EDGE, APP], stack_file=files["base"],
                   checks=False) as held:
        results: dict = {"error": held.report.error, "timings": dict(held.report.timings)}
        if held.report.error is None:
            lab = held.lab
            sh(lab, APP, f"docker tag {shlex.quote(OLD_IMAGE)} {shlex.quote(NEW_IMAGE)}")
            results["before"] = gateway_containers(lab, APP, APP, SERVICE)
            control = CallerLoop(lab)
            time.sleep(3)
            results["control"] = control.stop()  # the path answers before anything changes
            since = sh(lab, APP, "date +%s").strip()
            results["image-bump"] = switchover(held, None, "app-image-bump", files["bump"], OLD_IMAGE, NEW_IMAGE,
                                               box=APP, stack=APP, service=SERVICE, hosts=[EDGE, APP],
                                               start_loop=lambda: CallerLoop(lab))
            results["image-bump"]["terminator_errors"] = terminator_errors(lab, since)
        write_report(results, "app-switchover-report", started)
    return results


def test_the_edge_and_app_nodes_converged_and_the_mtls_path_answers(app_switchover):
    converged(app_switchover, OLD_IMAGE)
    control = app_switchover["control"]
    assert control["requests"] >= 10 and control["failed"] == 0, control


def test_an_app_node_image_bump_switches_over_behind_the_terminator_with_zero_failed_requests(app_switchover):
    (before,) = app_switchover["before"]
    assert_switched_over(app_switchover["image-bump"], before, NEW_IMAGE, f"{APP}-{SERVICE}")
