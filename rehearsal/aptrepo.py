"""The lab's apt repository: the Debian packages the stack's host scripts install, with every
dependency a fresh box lacks, fetched on the build machine and served inside the lab namespace.

Which packages: every ``ensure_packages A B ...`` line of the captured scripts
(:func:`packages_in_scripts`; ``components/hostsetup/delivery.py`` defines ``ensure_packages``, which runs
``apt-get install --no-install-recommends``). :data:`STACK_PACKAGES` is the union over the
components; a test checks it against what the staging synth's scripts install, so a new package
in a script fails that test until it is added here.

Dependencies are resolved by apt itself, against the box root filesystem's own dpkg status:
``apt-get install --download-only --no-install-recommends`` with a private status file, archive
directory and no locking, so the build machine's dpkg state is neither read nor changed. The
result is exactly the set of .deb files the box's ``apt-get install`` will ask for.

The repository has Debian's layout under ``debian/`` (``dists/bookworm/main/binary-amd64/
Packages`` and ``pool/``), so that boxes keep the source a Debian image has
(``http://deb.debian.org/debian bookworm main``, resolved inside the lab to the repository; see
``rootfs.APT_HOSTS``). It is indexed with ``dpkg-scanpackages`` and unsigned: ``Trusted: yes`` is
acceptable because it is served only inside the lab's namespace, from files apt verified against
Debian's signed indices when it downloaded them.

Cache: ``/var/cache/platform-rehearsal/apt/<sha256 of (packages, box rootfs key)>/``; a warm
cache downloads nothing.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from rehearsal.netns import LabError, run
from rehearsal.rootfs import CACHE_ROOT, SUITE

POOL = Path("debian/pool")
RELEASE = Path("debian/dists") / SUITE / "Release"

STACK_PACKAGES = (
    "fail2ban", "ufw", "unattended-upgrades", "ca-certificates", "curl", "docker.io",  # hostsetup
    "systemd-timesyncd", "python3-systemd", "iptables", "openssl", "iproute2",       # hostsetup
    "certbot",                                                                       # ingress
    "rclone", "postgresql-client", "redis-tools", "restic", "jq",                    # backup
    "auditd", "audispd-plugins", "rsyslog", "rsyslog-gnutls",                         # sessions
    "wireguard-tools", "wireguard-go",                                                # management
)

LAYOUT = "debian-dists-v1"  # part of the cache key: a new layout is a new repository
_ENSURE = re.compile(r"^\s*ensure_packages\s+([^\n#;&|]+)$", re.M)
_NAME = re.compile(r"^[a-z0-9][a-z0-9.+-]+$")


def packages_in_scripts(scripts: Iterable[str]) -> set[str]:
    """Package names of every ``ensure_packages`` call in ``scripts`` (the function's own
    definition line is not a call). Raises ValueError on a word that is not a package name
    (a variable, say), since the repository could not be filled for it."""
    found: set[str] = set()
    for text in scripts:
        for match in _ENSURE.finditer(text):
            words = match.group(1).split()
            if words[:1] == ["()"] or match.group(0).rstrip().endswith("{"):
                continue
            for word in words:
                if not _NAME.match(word):
                    raise ValueError(f"ensure_packages argument {word!r} is not a package name")
                found.add(word)
    return found


@dataclass(frozen=True)
class AptRepo:
    """A repository: ``path`` is the directory to serve (it holds ``debian/dists`` and
    ``debian/pool``); ``debs`` is the count of packages, ``built_seconds`` 0.0 on a cache hit."""

    path: Path
    debs: int
    built_seconds: float


def repo_key(packages: Iterable[str], rootfs_key: str) -> str:
    text = "\n".join([LAYOUT, *sorted(set(packages)), rootfs_key])
    return hashlib.sha256(text.encode()).hexdigest()


def ensure_repo(packages: Iterable[str], box_status: Path, rootfs_key: str,
                cache_root: Path = CACHE_ROOT) -> AptRepo:
    """The cached repository for ``packages`` on a box whose dpkg status is ``box_status``,
    filled first when missing. Raises LabError when apt cannot resolve or download them (the
    message carries apt's own, e.g. "Unable to locate package")."""
    packages = sorted(set(packages))
    key = repo_key(packages, rootfs_key)
    base = cache_root / "apt"
    base.mkdir(parents=True, exist_ok=True)
    path = base / key
    with open(base / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / RELEASE).exists():
            return AptRepo(path, len(list((path / POOL).glob("*.deb"))), 0.0)
        started = time.monotonic()
        partial = base / f"{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        (partial / POOL).mkdir(parents=True)
        _download(packages, box_status, partial / POOL)
        _index(partial)
        partial.rename(path)
        return AptRepo(path, len(list((path / POOL).glob("*.deb"))), time.monotonic() - started)


def _download(packages: list[str], box_status: Path, into: Path) -> None:
    state = into.parent.parent / ".apt"
    (state / "archives" / "partial").mkdir(parents=True)
    status = state / "status"
    shutil.copyfile(box_status, status)
    argv = [
        "apt-get", "-q", "-y", "--no-install-recommends",
        "-o", f"Dir::State::status={status}",
        "-o", f"Dir::Cache::archives={state / 'archives'}",
        "-o", f"Dir::Cache={state}",            # pkgcache.bin of its own, next to the status
        "-o", "Debug::NoLocking=1",             # never the build machine's dpkg/apt locks
        "-o", "APT::Get::AllowUnauthenticated=false",
        "install", "--download-only", *packages,
    ]
    # Debian's signed index files on this machine decide the versions; an empty list means
    # `apt-get update` never ran here.
    if not any(Path("/var/lib/apt/lists").glob("*_Packages*")):
        run(["apt-get", "update", "-qq"])
    needed = _apt(argv[:-len(packages) - 2] + ["--print-uris", *argv[-len(packages) - 2:]])
    names = re.findall(r"^'[^']+' (\S+\.deb) ", needed, re.M)
    if not names:
        raise LabError(f"apt resolved no package to fetch for {' '.join(packages)}")
    _seed_from_machine_cache(state / "archives", names)
    _apt(argv)
    for name in names:
        os.replace(state / "archives" / name, into / name)
    shutil.rmtree(state)


def _apt(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if proc.returncode != 0:
        raise LabError("apt could not fetch the stack's packages for the box: "
                       + (proc.stderr or proc.stdout).decode(errors="replace")[-2000:])
    return proc.stdout.decode(errors="replace")


def _seed_from_machine_cache(archives: Path, names: list[str]) -> None:
    """Hard-link (or copy) the build machine's cached copies of the needed .debs into the private
    archive directory: apt checks each against the index's hash and downloads only the rest."""
    machine = Path("/var/cache/apt/archives")
    for name in names:
        if not (machine / name).exists():
            continue
        try:
            os.link(machine / name, archives / name)
        except OSError:
            shutil.copyfile(machine / name, archives / name)


def _index(root: Path) -> None:
    """Debian's layout: ``dists/SUITE/main/binary-amd64/Packages{,.gz}`` and a ``Release``
    listing their hashes, with Filename fields relative to ``debian/``."""
    repo = root / "debian"
    scan = subprocess.run(["dpkg-scanpackages", "--multiversion", "pool"], cwd=repo,
                          capture_output=True)
    if scan.returncode != 0:
        raise LabError("dpkg-scanpackages failed: " + scan.stderr.decode(errors="replace")[-1000:])
    binary = repo / "dists" / SUITE / "main" / "binary-amd64"
    binary.mkdir(parents=True)
    (binary / "Packages").write_bytes(scan.stdout)
    (binary / "Packages.gz").write_bytes(gzip.compress(scan.stdout, mtime=0))
    lines = ["Origin: platform-rehearsal", "Label: platform-rehearsal", f"Suite: {SUITE}",
             f"Codename: {SUITE}", "Architectures: amd64", "Components: main", "SHA256:"]
    for name in ("Packages", "Packages.gz"):
        data = (binary / name).read_bytes()
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} "
                     f"main/binary-amd64/{name}")
    (repo / "dists" / SUITE / "Release").write_text("\n".join(lines) + "\n")
