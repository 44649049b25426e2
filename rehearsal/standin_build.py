"""Building the stand-in images (``build_standins``) into a Docker daemon, from a debootstrap
base and Debian packages that the build machine's apt downloads (the builds have no network).

Caches (outside the repository, default /var/cache/platform-rehearsal/images, env
``PLATFORM_REHEARSAL_CACHE`` moves the root): the debootstrap root filesystem tarball of the
base, keyed by its recipe; a ``docker save`` tarball of every stand-in, keyed by the hash of all
recipes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from rehearsal.image_contracts import ImageError
from rehearsal.standin_plan import (BASE_PACKAGES, DEBIAN_MIRROR, DEBIAN_SUITE, KINDS, LABEL_RECIPE, STANDINS_DIR,
                                    StandIn, base_image, base_recipe, kind_dockerfile, kind_image, recipe_sha)

CACHE_ROOT = Path(os.environ.get("PLATFORM_REHEARSAL_CACHE", "/var/cache/platform-rehearsal"))
IMAGE_CACHE = CACHE_ROOT / "images"


def _run(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, **kwargs)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).decode(errors="replace").strip()[-3000:]
        raise ImageError(f"{' '.join(map(str, argv[:5]))} ... exited {proc.returncode}: {tail}")
    return proc


def require_tool(name: str) -> str:
    """The path of the program ``name`` (sbin directories included); ImageError when it is missing."""
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise ImageError(f"{name} is not installed; scripts/bootstrap.sh installs it")
    return found


def build_base_rootfs(cache_dir: Path = IMAGE_CACHE, suite: str = DEBIAN_SUITE) -> Path:
    """The base root filesystem tarball (debootstrap ``--variant=minbase`` of ``suite`` plus
    :data:`BASE_PACKAGES`), built once per recipe into ``cache_dir``; returns its path."""
    tarball = Path(cache_dir) / f"base-{base_recipe(suite)[:16]}.tar"
    if tarball.exists():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="base-build-") as tmp:
        root = Path(tmp) / "root"
        _run([require_tool("debootstrap"), "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
              suite, str(root), DEBIAN_MIRROR], timeout=1800)
        # No daemon may start while a stand-in's packages install (docker build has no init).
        (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
        (root / "usr/sbin/policy-rc.d").chmod(0o755)
        for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for child in (root / junk).glob("*"):
                if child.is_file():
                    child.unlink()
        partial = tarball.with_suffix(f".tar.{os.getpid()}.partial")
        _run(["tar", "--numeric-owner", "--exclude=./proc/*", "--exclude=./sys/*",
              "--exclude=./dev/*", "-C", str(root), "-cf", str(partial), "."])
        partial.rename(tarball)
    return tarball


def _apt_options(suite: str, cache_dir: Path) -> list[str]:
    """apt options that resolve against ``suite``: the build machine's own configuration for its
    release (bookworm), else a private source list and package lists under ``cache_dir``,
    refreshed here, so that the build machine's apt state is never touched."""
    if suite == DEBIAN_SUITE:
        return []
    root = Path(cache_dir) / f"apt-{suite}"
    (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "sources.list.d").mkdir(exist_ok=True)
    (root / "sources.list").write_text(f"deb {DEBIAN_MIRROR} {suite} main\n")
    options = ["-o", f"Dir::Etc::sourcelist={root / 'sources.list'}",
               "-o", f"Dir::Etc::sourceparts={root / 'sources.list.d'}",
               "-o", f"Dir::State::Lists={root / 'lists'}",
               "-o", f"Dir::Cache::pkgcache={root / 'pkgcache.bin'}",
               "-o", f"Dir::Cache::srcpkgcache={root / 'srcpkgcache.bin'}"]
    _run(["apt-get", *options, "-o", "Debug::NoLocking=1", "update", "-qq"], timeout=600)
    return options


def _download_debs(packages: Sequence[str], status_file: Path, dest: Path,
                   suite: str = DEBIAN_SUITE, cache_dir: Path = IMAGE_CACHE) -> None:
    """The .debs that installing ``packages`` of ``suite`` on a system with dpkg
    ``status_file`` needs, resolved and fetched by the build machine's apt (the build
    containers have no network)."""
    (dest / "partial").mkdir(parents=True, exist_ok=True)
    _run(["apt-get", *_apt_options(suite, cache_dir), "install", "--download-only",
          "--no-install-recommends", "-y", "-qq",
          "-o", f"Dir::State::status={status_file}", "-o", f"Dir::Cache::archives={dest}",
          "-o", "Debug::NoLocking=1", *packages], timeout=1200,
         env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    shutil.rmtree(dest / "partial", ignore_errors=True)
    (dest / "lock").unlink(missing_ok=True)


def _image_labels(client: Any, ref: str) -> Optional[dict]:
    import docker.errors

    try:
        return client.images.get(ref).labels or {}
    except docker.errors.ImageNotFound:
        return None


def _build(client: Any, context: Path, tag: str) -> None:
    import docker.errors

    try:
        client.images.build(path=str(context), tag=tag, rm=True, forcerm=True, pull=False)
    except docker.errors.BuildError as exc:
        log = "".join(str(chunk.get("stream") or chunk.get("error") or "") for chunk in exc.build_log)
        raise ImageError(f"building {tag}: {exc}\n{log[-3000:]}") from None


def build_standins(standins: Sequence[StandIn], docker_client: Any,
                   cache_dir: Path = IMAGE_CACHE, docker_host: Optional[str] = None) -> dict[str, float]:
    """See :func:`_build_standins`; holds ``cache_dir/build.lock`` (flock) meanwhile, so that two
    processes sharing the cache (a rehearsal and a test) never write one tarball together."""
    import fcntl

    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(cache_dir) / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_standins(standins, docker_client, Path(cache_dir), docker_host)


def _build_standins(standins: Sequence[StandIn], docker_client: Any,
                    cache_dir: Path, docker_host: Optional[str]) -> dict[str, float]:
    """Make every stand-in exist, under its reference, in the daemon of ``docker_client`` (a
    ``docker.DockerClient``; ``docker_host`` its ``unix://`` address, for ``docker save/load``).

    Cached: an image already there with the same recipe label is kept; else a ``docker save``
    tarball of the same set of recipes in ``cache_dir`` is loaded; else the base rootfs is
    imported (debootstrap once per recipe), each kind built on it with its .debs, each
    reference built on its kind, and the set saved for the next run. Returns timings in seconds
    (``load``, ``base``, ``kinds``, ``references``, ``save``). Raises ImageError.
    """
    timings: dict[str, float] = {}
    todo = [s for s in standins
            if (_image_labels(docker_client, s.reference) or {}).get(LABEL_RECIPE) != s.recipe]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # One tarball for the whole set: the layers they share are stored once.
    set_tar = cache_dir / f"standins-{recipe_sha(sorted(s.recipe for s in standins))[:16]}.tar"
    docker = [_docker_cli(), *(["-H", docker_host] if docker_host else [])]
    if not todo:
        if not set_tar.exists():
            timings["save"] = _save(docker, standins, set_tar, _kind_tags(docker_client, standins))
        return timings
    # The set's own tarball, else the newest older set: every image whose recipe did not change
    # (and every kind, saved with its tag) comes from it, and only the changed ones are built.
    saved = set_tar if set_tar.exists() else max(
        cache_dir.glob("standins-*.tar"), key=lambda p: p.stat().st_mtime, default=None)
    if saved is not None:
        started = time.monotonic()
        _run([*docker, "load", "-q", "-i", str(saved)], timeout=1800)
        timings["load"] = time.monotonic() - started
        todo = [s for s in todo
                if (_image_labels(docker_client, s.reference) or {}).get(LABEL_RECIPE) != s.recipe]
        if not todo:
            return timings
    started = time.monotonic()
    kinds = [KINDS[name] for name in sorted({s.kind for s in todo})
             if _image_labels(docker_client, kind_image(KINDS[name])) is None]
    for suite in sorted({kind.suite for kind in kinds}):
        base = base_image(suite)
        if _image_labels(docker_client, base) is None:
            tarball = build_base_rootfs(cache_dir, suite)
            docker_client.api.import_image_from_file(str(tarball), repository=base.split(":")[0],
                                                     tag=base.split(":")[1])
    timings["base"] = time.monotonic() - started
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="standin-status-") as tmp:
        for kind in kinds:
            status = Path(tmp) / f"status-{kind.suite}"
            if not status.exists():
                _run(["tar", "-xf", str(build_base_rootfs(cache_dir, kind.suite)), "-C", tmp,
                      "--strip-components=4", "./var/lib/dpkg/status"])
                (Path(tmp) / "status").rename(status)
            tag = kind_image(kind)
            with tempfile.TemporaryDirectory(prefix=f"standin-{kind.name}-") as ctx:
                context = Path(ctx)
                _download_debs(kind.packages, status, context / "debs", kind.suite, cache_dir)
                for name in kind.files:
                    (context / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(STANDINS_DIR / name, context / name)
                (context / "Dockerfile").write_text(kind_dockerfile(kind))
                _build(docker_client, context, tag)
    timings["kinds"] = time.monotonic() - started
    started = time.monotonic()
    for standin in todo:
        with tempfile.TemporaryDirectory(prefix="standin-ref-") as ctx:
            (Path(ctx) / "Dockerfile").write_text(standin.dockerfile)
            _build(docker_client, Path(ctx), standin.reference)
    timings["references"] = time.monotonic() - started
    timings["save"] = _save(docker, standins, set_tar, _kind_tags(docker_client, standins))
    return timings


def _save(docker: list[str], standins: Sequence[StandIn], set_tar: Path,
          kinds: Sequence[str]) -> float:
    """``docker save`` of every stand-in and the ``kinds`` images (tags) they are built on into
    ``set_tar`` (older sets removed); seconds taken."""
    started = time.monotonic()
    partial = set_tar.with_suffix(f".tar.{os.getpid()}.partial")
    _run([*docker, "save", "-o", str(partial), *kinds, *[s.reference for s in standins]],
         timeout=1800)
    partial.rename(set_tar)
    for old in set_tar.parent.glob("standins-*.tar"):
        if old != set_tar:
            old.unlink()
    return time.monotonic() - started


def _kind_tags(docker_client: Any, standins: Sequence[StandIn]) -> list[str]:
    """The kind images of ``standins`` that the daemon holds under their tags."""
    tags = sorted({kind_image(KINDS[s.kind]) for s in standins})
    return [t for t in tags if _image_labels(docker_client, t) is not None]


def _docker_cli() -> str:
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).exists():
            return candidate
    raise ImageError("the docker client is not installed (scripts/bootstrap.sh installs docker.io)")


