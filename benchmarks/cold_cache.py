"""Measure what a clean CI machine builds before its first lab: the box root filesystem, the
local apt repository, the box image import, the stand-in images and the registry push, all into
ONE empty cache root (what ``PLATFORM_REHEARSAL_CACHE`` points at), against the same calls
again on the now warm cache, side by side.

    python -m benchmarks.cold_cache [--stack staging] [--cache DIR] [--json PATH]

Cold: ``rootfs.ensure_rootfs`` (debootstrap bookworm + the box packages), ``aptrepo.ensure_repo``
(the .debs the stack's scripts install), ``docker import`` of the box image into a fresh
harness daemon, ``standin_build.build_standins`` (debootstrap of the stand-in bases, every kind's
.debs and build, every reference, ``docker save`` of the set) and a registry push of every
reference (skopeo, what a rehearsal's first run on the cache does). Warm: the same calls on
the same cache: rootfs and repo are file lookups, the stand-in set loads into a second fresh
daemon (a new CI job on a kept cache), and the registry already holds every recipe. ``--cache``
starts from an existing directory instead (then "cold" is what it lacks). Prints Markdown rows
for the README; ``--json`` also writes the seconds.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import docker

from benchmarks.standin_images import BenchLab, bench_daemon
from rehearsal import aptrepo, images, rootfs, standin_build, standin_plan
from rehearsal.netns import DockerDaemon, Namespace, stop_pid
from synth.run import synth_stack


def _timed(call):
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


class _Seconds(dict):
    """Step -> seconds, each printed as it lands: an interrupted run still leaves its figures."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def __setitem__(self, step: str, seconds: float) -> None:
        super().__setitem__(step, seconds)
        print(f"{self.label}: {step} {seconds:.1f} s", flush=True)


def _import_box(daemon: DockerDaemon, tarball: Path) -> None:
    with open(tarball, "rb") as data:
        subprocess.run(daemon.cli("import", "-c", 'CMD ["/sbin/init"]', "-", "bench-box:latest"),
                       stdin=data, check=True, capture_output=True)


def _pass(label: str, cache: Path, contracts, ns: Namespace, work: Path, bip: str,
          daemons: list[DockerDaemon], lab: BenchLab) -> dict[str, float]:
    seconds = _Seconds(label)
    # As a rehearsal plans them: the kinds that dial out over TLS trust the cache's test CA.
    registry = images.Registry(cache_dir=cache / "images")
    planned = standin_plan.plan_standins(contracts, trust_pem=registry.ca.cert_pem)
    box, seconds["box rootfs"] = _timed(lambda: rootfs.ensure_rootfs(cache))
    _, seconds["apt repository"] = _timed(lambda: aptrepo.ensure_repo(
        aptrepo.STACK_PACKAGES, box.status, box.key, cache))
    daemon = bench_daemon(ns, work, label, bip)
    daemons.append(daemon)
    _, seconds["box image import"] = _timed(lambda: _import_box(daemon, box.tarball))
    client = docker.DockerClient(daemon.host, version="auto")
    _, seconds["stand-in images"] = _timed(lambda: standin_build.build_standins(
        planned, client, cache / "images", daemon.host))
    lab.harness_docker_host = daemon.host

    def push() -> None:
        registry.start(lab)
        registry.push(registry.missing(planned), daemon.host)

    _, seconds["registry: start, check, push what is missing"] = _timed(push)
    for proc in lab.procs:
        stop_pid(proc.pid)
    lab.procs.clear()
    registry.stop()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", default="staging")
    parser.add_argument("--cache", type=Path, help="start from this cache root instead of an empty one")
    parser.add_argument("--json", type=Path, help="also write the seconds here")
    args = parser.parse_args()
    contracts = images.contracts_from_state(synth_stack(args.stack, reveal_secrets=True))
    work = Path(tempfile.mkdtemp(prefix="platform-bench-cold-", dir="/var/tmp"))
    cache = args.cache or work / "cache"
    ns = Namespace(f"bench-cold-{secrets.token_hex(4)}")
    ns.create()
    daemons: list[DockerDaemon] = []
    lab = BenchLab(ns, "", work)
    try:
        cold = _pass("cold", cache, contracts, ns, work, "10.215.1.1/24", daemons, lab)
        warm = _pass("warm", cache, contracts, ns, work, "10.215.2.1/24", daemons, lab)
        rows = [(step, cold[step], warm[step]) for step in cold]
        rows.append(("**total**", sum(cold.values()), sum(warm.values())))
        size_mb = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 1e6
        print(f"cache root {cache}: {size_mb:.0f} MB after the cold pass; "
              f"{len(contracts)} image contracts")
        print("| step | cold cache (s) | warm cache (s) | ratio |")
        print("|---|---|---|---|")
        for step, c, w in rows:
            print(f"| {step} | {c:.1f} | {w:.1f} | {c / max(w, 1e-3):.0f}x |")
        if args.json:
            args.json.write_text(json.dumps({"stack": args.stack, "contracts": len(contracts),
                                             "cache_mb": round(size_mb), "cold": cold, "warm": warm},
                                            indent=1))
    finally:
        for proc in lab.procs:
            stop_pid(proc.pid)
        for daemon in daemons:
            daemon.remove_all_containers()
            daemon.stop()
            shutil.rmtree(daemon.exec_root.parent, ignore_errors=True)
        ns.delete()
        if args.cache is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
