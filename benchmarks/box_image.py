"""Measure the rehearsal's box image: built from nothing against the cache-hit path, side by side,
and (``--boot N``) a lab of N boxes booting together from the warm cache.

    python -m benchmarks.box_image [--boot 7] [--keep-cache]

From nothing: debootstrap of the box root filesystem from the Debian mirror (rootfs.py) and the
local apt repository's download and index (aptrepo.py), into a fresh, empty cache directory.
Baseline: the same two calls again, which find everything cached. The per-lab cost on top of a
warm cache (harness daemon start, ``docker import``, boot of N boxes to systemd running, sshd
listening, cloud-init done) comes from ``Lab.timings``. Prints Markdown table rows for the README.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from rehearsal import aptrepo, rootfs
from rehearsal.lab import BoxSpec, Lab


def _timed(call):
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--boot", type=int, default=0, help="also boot N boxes from the cache")
    parser.add_argument("--keep-cache", action="store_true",
                        help="keep the cold cache directory (its path is printed)")
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="platform-bench-box-image-", dir="/var/tmp"))
    try:
        box, cold_rootfs = _timed(lambda: rootfs.ensure_rootfs(cache))
        repo, cold_repo = _timed(lambda: aptrepo.ensure_repo(aptrepo.STACK_PACKAGES, box.status,
                                                             box.key, cache))
        _, warm_rootfs = _timed(lambda: rootfs.ensure_rootfs(cache))
        _, warm_repo = _timed(lambda: aptrepo.ensure_repo(aptrepo.STACK_PACKAGES, box.status,
                                                          box.key, cache))
        size_mb = box.tarball.stat().st_size / 1e6
        repo_mb = sum(p.stat().st_size for p in repo.path.glob("*.deb")) / 1e6
        print("| step | from nothing (s) | cache hit (s) | ratio |")
        print("|---|---|---|---|")
        print(f"| box rootfs (debootstrap, {size_mb:.0f} MB tar) | {cold_rootfs:.1f} | "
              f"{warm_rootfs:.3f} | {cold_rootfs / max(warm_rootfs, 1e-3):.0f}x |")
        print(f"| apt repo ({repo.debs} debs, {repo_mb:.0f} MB) | {cold_repo:.1f} | "
              f"{warm_repo:.3f} | {cold_repo / max(warm_repo, 1e-3):.0f}x |")
        if args.boot:
            boxes = [BoxSpec(f"bench-{i}", {"lab": f"10.99.0.{10 + i}"},
                             user_data="#cloud-config\n{}\n" if i % 2 else None)
                     for i in range(args.boot)]
            lab, total = _timed(lambda: Lab({"lab": "10.99.0.0/24"}, boxes, cache_root=cache,
                                            lock_path=cache / "lab.lock").__enter__())
            lab.close()
            t = lab.timings
            print(f"\nLab of {args.boot} boxes from the warm cache: {total:.1f} s in all "
                  f"(daemon {t['daemon']:.1f}, image import {t['image_import']:.1f}, "
                  f"boot to running+sshd+cloud-init {t['boot']:.1f})")
    finally:
        if args.keep_cache:
            print(f"cache kept in {cache}")
        else:
            shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
