"""Measure the stand-in images of a stack: built from nothing against the two warm paths, side by
side, in a Docker daemon and a registry inside a throwaway network namespace.

    python -m benchmarks.standin_images [--stack staging] [--cache DIR]

From nothing: debootstrap of the base, each kind's .debs and build, each reference's layer,
``docker save`` of the set, into a fresh cache directory (``--cache`` reuses one instead, and
then the first row is a cache hit too). Warm, load: a fresh daemon loading the saved set.
Warm, registry: what a rehearsal pays when its registry storage already holds every recipe
(start the registry, ask it for each reference) and so neither builds, loads nor pushes.
Prints Markdown table rows for the README.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import docker

from rehearsal import images, standin_build, standin_plan
from rehearsal.netns import DockerDaemon, Namespace, spawn, stop_pid
from synth.run import synth_stack


class BenchLab:
    """The part of ``rehearsal.lab.Lab`` the image builds use (a namespace, its services' logs,
    the lab's service address), without boxes: enough to build and serve stand-in images."""

    def __init__(self, ns: Namespace, host: str, logdir: Path):
        self.ns, self.harness_docker_host, self.logdir = ns, host, logdir
        self.service_address = "100.64.0.1"
        self.procs = []

    def spawn_service(self, name, argv, env=None):
        log = self.logdir / f"{name}.log"
        self.procs.append(spawn(self.ns, argv, log, env=env))
        return log

    def netns_argv(self, argv):
        return self.ns.argv(argv)


def bench_daemon(ns: Namespace, root: Path, name: str, bip: str) -> DockerDaemon:
    """A started Docker daemon in ``ns`` with its data under ``root/name`` and bridge ``bip``
    (CIDR); the caller stops it."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir="/run"))
    daemon = DockerDaemon(ns, root / name, run_dir / "d", bip)
    daemon.start()
    return daemon


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", default="staging")
    parser.add_argument("--cache", type=Path, help="an existing cache directory to start from")
    args = parser.parse_args()
    planned = standin_plan.plan_standins(images.contracts_from_state(
        synth_stack(args.stack, reveal_secrets=True)))
    work = Path(tempfile.mkdtemp(prefix="platform-bench-images-", dir="/var/tmp"))
    cache = args.cache or work / "cache"
    ns = Namespace(f"bench-images-{secrets.token_hex(4)}")
    ns.create()
    daemons: list[DockerDaemon] = []
    lab = BenchLab(ns, "", work)
    try:
        first = bench_daemon(ns, work, "first", "10.214.1.1/24")
        daemons.append(first)
        started = time.perf_counter()
        cold_parts = standin_build.build_standins(planned, docker.DockerClient(first.host, version="auto"),
                                           cache, first.host)
        cold = time.perf_counter() - started
        second = bench_daemon(ns, work, "second", "10.214.2.1/24")
        daemons.append(second)
        started = time.perf_counter()
        standin_build.build_standins(planned, docker.DockerClient(second.host, version="auto"), cache,
                              second.host)
        load = time.perf_counter() - started
        lab.harness_docker_host = second.host
        registry = images.Registry(cache_dir=cache, storage=work / "registry")
        started = time.perf_counter()
        registry.start(lab)
        missing = registry.missing(planned)
        registry.push(missing, second.host)
        push = time.perf_counter() - started
        for proc in lab.procs:
            stop_pid(proc.pid)
        lab.procs.clear()
        started = time.perf_counter()
        registry.start(lab)
        assert registry.missing(planned) == []
        warm = time.perf_counter() - started
        size_mb = sum(p.stat().st_size for p in Path(cache).glob("standins-*.tar")) / 1e6
        print(f"stand-ins: {len(planned)} references, saved set {size_mb:.0f} MB; "
              f"from nothing: {', '.join(f'{k} {v:.0f}s' for k, v in cold_parts.items())}")
        print("| path | seconds | ratio to warm registry |")
        print("|---|---|---|")
        for label, value in [("from nothing (with --cache: what that cache lacks): build + save", cold),
                             ("warm, load the saved set into a fresh daemon", load),
                             ("cold registry: start + check + push every reference", push),
                             ("warm registry: start + check every reference", warm)]:
            print(f"| {label} | {value:.1f} | {value / max(warm, 1e-3):.1f}x |")
    finally:
        for proc in lab.procs:
            stop_pid(proc.pid)
        for daemon in daemons:
            daemon.remove_all_containers()
            daemon.stop()
            shutil.rmtree(daemon.exec_root.parent, ignore_errors=True)
        ns.delete()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
