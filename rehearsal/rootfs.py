"""The box root filesystem: Debian 12 (bookworm) as a fresh VPS image has it, built with
debootstrap and cached by the hash of its recipe.

What a fresh VPS has, and no more (:data:`PACKAGES`). Debian's own cloud images
(debian-cloud-images, class ``CLOUD``) and DigitalOcean's images give a host systemd, D-Bus, an
SSH server, sudo, CA certificates, cloud-init with the locales it configures, iproute2, procps and
the netbase tables; the harness adds nothing else. Everything the stack installs (docker.io, ufw,
fail2ban, unattended-upgrades, curl, certbot, rclone, the database clients) is absent, so that
the stack's own scripts install it, from the lab's apt repository (``aptrepo.py``). Where a real
image has more (Debian's and Ubuntu's images ship unattended-upgrades and curl already), the box
has less: a script that forgets to install what it uses fails here instead of passing by luck.

The recipe's finishing steps (:data:`FINISH_SCRIPT`) make the tree what a cloud image is before
its first boot: no machine id and no SSH host keys (each box makes its own, cloud-init generates
the keys), cloud-init's datasources limited to NoCloud (the lab's seed) and None, its network
configuration off (the lab's Docker networks configure eth*), and no apt sources but the lab's
repository at ``http://100.64.0.1:8080/`` (``netns.SERVICE_ADDRESS``).

Cache: ``/var/cache/platform-rehearsal/rootfs/<sha256 of the recipe>.tar`` and the tree's dpkg
status next to it (``.status``, for resolving the apt repository's dependencies). A changed
package list or finishing script is a new key, hence a rebuild; an unchanged one is never rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from rehearsal.netns import SERVICE_ADDRESS, LabError, run

SUITE = "bookworm"
CACHE_ROOT = Path(os.environ.get("PLATFORM_REHEARSAL_CACHE", "/var/cache/platform-rehearsal"))
APT_PORT = 8080

PACKAGES = (
    "systemd", "systemd-sysv", "dbus",  # init, and the bus systemctl/hostnamectl talk over
    "openssh-server",                   # how the stack reaches a host
    "sudo",                             # the deploy user's path to root
    "ca-certificates",                  # TLS to anything
    "cloud-init",                       # first boot of droplets (NoCloud here)
    "locales",                          # cloud-init's locale module runs update-locale
    "iproute2", "procps", "netbase",    # ip, ps/sysctl, /etc/services: in every cloud image
    # debootstrap's resolver ignores virtual packages: python3-cryptography (cloud-init) needs
    # python3-cffi-backend-api-*, which only this package provides.
    "python3-cffi-backend",
)

FINISH_SCRIPT = f"""\
set -eu
: > etc/machine-id
rm -f var/lib/dbus/machine-id etc/ssh/ssh_host_*
rm -rf var/lib/cloud/*
mkdir -p etc/cloud/cloud.cfg.d
cat > etc/cloud/cloud.cfg.d/90-platform-rehearsal.cfg <<'EOF'
# The lab boots every box from a NoCloud seed; the lab's Docker networks configure eth*.
datasource_list: [ NoCloud, None ]
network: {{config: disabled}}
EOF
rm -f etc/apt/sources.list etc/apt/sources.list.d/*
# The lab's repository only; it is unsigned and reached only inside the lab's namespace.
echo 'deb [trusted=yes] http://{SERVICE_ADDRESS}:{APT_PORT}/ ./' > etc/apt/sources.list.d/platform-rehearsal.list
rm -rf var/lib/apt/lists/* var/cache/apt/archives/*.deb
"""


def recipe_key(packages: tuple[str, ...] = PACKAGES, finish: str = FINISH_SCRIPT) -> str:
    """sha256 over what decides the tree's content: suite, sorted packages, finishing script."""
    text = "\n".join([SUITE, "variant=minbase", ",".join(sorted(packages)), finish])
    return hashlib.sha256(text.encode()).hexdigest()


def debian_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror URL this machine's apt uses for ``bookworm`` (deb822 ``*.sources`` or
    one-line ``sources.list``), so that debootstrap takes the same route apt does.
    Raises LabError when apt has no bookworm source."""
    files = sorted((sources_dir / "sources.list.d").glob("*.sources")) + \
        [sources_dir / "sources.list"] + sorted((sources_dir / "sources.list.d").glob("*.list"))
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
                if SUITE in fields.get("Suites", "").split() and "deb" in fields.get("Types", ""):
                    return fields["URIs"].split()[0].rstrip("/")
        else:
            for line in text.splitlines():
                m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", line + " ")
                if m:
                    return m.group(1).rstrip("/")
    raise LabError(f"apt has no source for Debian {SUITE} in {sources_dir}; debootstrap needs a "
                   "Debian mirror")


def check_mirror(mirror: str, timeout: float = 15.0) -> None:
    """Raise LabError unless ``mirror``'s bookworm Release file answers."""
    url = f"{mirror}/dists/{SUITE}/Release"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                    timeout=timeout) as response:
            if response.status != 200:
                raise LabError(f"{url} answered {response.status}")
    except (urllib.error.URLError, OSError) as exc:
        raise LabError(f"debootstrap cannot reach the Debian mirror {url}: {exc}") from None


@dataclass(frozen=True)
class BoxRootfs:
    """A cached root filesystem: ``tarball`` (for ``docker import``) and ``status`` (its dpkg
    status file); ``key`` is the recipe hash, ``built_seconds`` 0.0 on a cache hit."""

    key: str
    tarball: Path
    status: Path
    built_seconds: float

    @property
    def image(self) -> str:
        return f"platform-rehearsal/box:{self.key[:16]}"


def ensure_rootfs(cache_root: Path = CACHE_ROOT, packages: tuple[str, ...] = PACKAGES,
                  finish: str = FINISH_SCRIPT, mirror: Optional[str] = None) -> BoxRootfs:
    """The cached tree for this recipe, built first when missing (about 7 minutes from the
    mirror). Concurrent callers wait on a per-key lock instead of building twice.
    Raises LabError when debootstrap is missing or fails."""
    import fcntl

    key = recipe_key(packages, finish)
    cache = cache_root / "rootfs"
    cache.mkdir(parents=True, exist_ok=True)
    tarball, status = cache / f"{key}.tar", cache / f"{key}.status"
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists() and status.exists():
            return BoxRootfs(key, tarball, status, 0.0)
        started = time.monotonic()
        _build(cache, tarball, status, packages, finish, mirror)
        return BoxRootfs(key, tarball, status, time.monotonic() - started)


def _build(cache: Path, tarball: Path, status: Path, packages: tuple[str, ...], finish: str,
           mirror: Optional[str]) -> None:
    debootstrap = shutil.which("debootstrap", path=os.environ.get("PATH", "") + ":/usr/sbin")
    if debootstrap is None:
        raise LabError("debootstrap is not installed (scripts/bootstrap.sh installs it)")
    mirror = mirror or debian_mirror()
    check_mirror(mirror)
    tree = Path(tempfile.mkdtemp(prefix="build-", dir=cache))
    try:
        proc = subprocess.run(
            [debootstrap, "--variant=minbase", f"--include={','.join(packages)}", SUITE,
             str(tree), mirror], capture_output=True)
        if proc.returncode != 0:
            log = tree / "debootstrap" / "debootstrap.log"
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else \
                proc.stderr.decode(errors="replace")[-2000:]
            raise LabError(f"debootstrap failed ({proc.returncode}): {detail}")
        # debootstrap can exit 0 with packages left unconfigured; a half-installed tree is no box.
        audit = run(["chroot", str(tree), "dpkg", "--audit"], check=False)
        if audit.returncode != 0 or audit.stdout.strip():
            raise LabError("debootstrap left packages unconfigured: "
                           + audit.stdout.decode(errors="replace")[-2000:])
        _run_in(tree, finish)
        shutil.copyfile(tree / "var/lib/dpkg/status", status.with_suffix(".status.partial"))
        partial = tarball.with_suffix(".tar.partial")
        run(["tar", "--numeric-owner", "--xattrs", "-C", str(tree), "-cf", str(partial), "."])
        partial.rename(tarball)
        status.with_suffix(".status.partial").rename(status)
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def _run_in(tree: Path, script: str) -> None:
    """The finishing script runs with the tree as its working directory (paths are relative):
    it edits files only, so it needs no chroot."""
    proc = subprocess.run(["sh", "-c", script], cwd=tree, capture_output=True)
    if proc.returncode != 0:
        raise LabError("rootfs finishing script failed: "
                       + proc.stderr.decode(errors="replace")[-2000:])
