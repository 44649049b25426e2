"""Measure the rehearsal's box image: built from nothing against the cache-hit path, side by side,
and (``--boot N``) a lab of N boxes booting together from the warm cache.

    python -m benchmarks.box_image [--boot 7] [--keep-cache] [--boot-only]

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
    parser.add_argument("--boot-only", action="store_true",
                        help="skip the build from nothing; boot from the machine's own cache")
    args = parser.parse_args()
    if args.boot_only:
        _boot(args.boot or 7, rootfs.CACHE_ROOT)
        return 0
    cache = Path(tempfile.mkdtemp(prefix="platform-bench-box-image-", dir="/var/tmp"))
    try:
        box, cold_rootfs = _timed(lambda: rootfs.ensure_rootfs(cache))
        repo, cold_repo = _timed(lambda: aptrepo.ensure_repo(aptrepo.STACK_PACKAGES, box.status,
                                                             box.key, cache))
        _, warm_rootfs = _timed(lambda: rootfs.ensure_rootfs(cache))
        _, warm_repo = _timed(lambda: aptrepo.ensure_repo(aptrepo.STACK_PACKAGES, box.status,
                                                          box.key, cache))
        size_mb = box.tarball.stat().st_size / 1e6
        repo_mb = sum(p.stat().st_size for p in (repo.path / aptrepo.POOL).glob("*.deb")) / 1e6
        print("| step | from nothing (s) | cache hit (s) | ratio |")
        print("|---|---|---|---|")
        print(f"| box rootfs (debootstrap, {size_mb:.0f} MB tar) | {cold_rootfs:.1f} | "
              f"{warm_rootfs:.3f} | {cold_rootfs / max(warm_rootfs, 1e-3):.0f}x |")
        print(f"| apt repo ({repo.debs} debs, {repo_mb:.0f} MB) | {cold_repo:.1f} | "
              f"{warm_repo:.3f} | {cold_repo / max(warm_repo, 1e-3):.0f}x |")
        if args.boot:
            _boot(args.boot, cache)
    finally:
        if args.keep_cache:
            print(f"cache kept in {cache}")
        else:
            shutil.rmtree(cache, ignore_errors=True)
    return 0


def _boot(count: int, cache: Path) -> None:
    """Start and tear down a lab of ``count`` boxes (every other one a droplet with user-data)
    from ``cache``, twice: the first run imports the box image into the harness data root, the
    second finds it there (the warm path a rehearsal takes)."""
    boxes = [BoxSpec(f"bench-{i}", {"lab": f"10.99.0.{10 + i}"},
                     user_data="#cloud-config\n{}\n" if i % 2 else None) for i in range(count)]
    for attempt in ("first", "second"):
        lab = Lab({"lab": "10.99.0.0/24"}, boxes, cache_root=cache,
                  lock_path=cache / "bench-lab.lock")
        _, total = _timed(lab.start)
        _, teardown = _timed(lab.close)
        t = lab.timings
        print(f"| {count} boxes, {attempt} lab on this cache | {total:.1f} | daemon "
              f"{t['daemon']:.1f}, image import {t['image_import']:.1f}, boot to running + "
              f"sshd + cloud-init done {t['boot']:.1f} | teardown {teardown:.1f} |")


if __name__ == "__main__":
    raise SystemExit(main())
