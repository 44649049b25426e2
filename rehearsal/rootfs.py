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
configuration off (the lab's Docker networks configure eth*), en_US.UTF-8 generated (as in
Debian's images; cloud-init's locale module needs it), and one apt source,
``http://deb.debian.org/debian bookworm main``, which inside the lab resolves to the lab's
repository (:data:`APT_HOSTS`, ``netns.SERVICE_ADDRESS`` port 80).

Cache: ``/var/cache/platform-rehearsal/rootfs/base-<sha256 of the package list>.tar`` (the
debootstrapped tree), ``<sha256 of the recipe>.tar`` (the finished tree) and its dpkg status next
to it (``.status``, for resolving the apt repository's dependencies). A changed
package list or finishing script is a new key, hence a rebuild; an unchanged one is never rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
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
APT_PORT = 80
APT_HOSTS = ("deb.debian.org", "security.debian.org")
"""Names the lab resolves to SERVICE_ADDRESS in every box (docker --add-host): the box's apt
sources name Debian's own mirror, as a real image's do, so an egress proxy that admits only
Debian's hosts on port 80 (Pencom's squid) passes the lab's repository the same way."""

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
# Debian's mirror by name, as in a cloud image; inside the lab the name is the lab's repository
# ({SERVICE_ADDRESS}:{APT_PORT}), which is unsigned, hence Trusted.
cat > etc/apt/sources.list.d/debian.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: {SUITE}
Components: main
Trusted: yes
EOF
rm -rf var/lib/apt/lists/* var/cache/apt/archives/*.deb
# The locale a Debian cloud image has generated; cloud-init's locale module sets it as LANG and
# update-locale refuses a locale that is not generated.
echo 'en_US.UTF-8 UTF-8' > etc/locale.gen
chroot . locale-gen >/dev/null
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
    """The cached tree for this recipe, built first when missing. Two layers: the debootstrapped
    tree (keyed by the package list alone; about 7 minutes from the mirror on 2 busy cores) and
    the finished tree (keyed by the whole recipe; about a minute from the first layer), so that
    a change of the finishing script does not download Debian again. Concurrent callers wait on
    a per-key lock instead of building twice. Raises LabError when debootstrap is missing or
    fails, or leaves packages unconfigured."""
    key = recipe_key(packages, finish)
    cache = cache_root / "rootfs"
    cache.mkdir(parents=True, exist_ok=True)
    tarball, status = cache / f"{key}.tar", cache / f"{key}.status"
    with _locked(cache / f"{key}.lock"):
        if tarball.exists() and status.exists():
            return BoxRootfs(key, tarball, status, 0.0)
        started = time.monotonic()
        base = _ensure_base(cache, packages, mirror)
        tree = Path(tempfile.mkdtemp(prefix="finish-", dir=cache))
        try:
            run(["tar", "--numeric-owner", "--xattrs", "-C", str(tree), "-xf", str(base)])
            _run_in(tree, finish)
            shutil.copyfile(tree / "var/lib/dpkg/status", status.with_suffix(".status.partial"))
            _tar(tree, tarball)
            status.with_suffix(".status.partial").rename(status)
        finally:
            shutil.rmtree(tree, ignore_errors=True)
        return BoxRootfs(key, tarball, status, time.monotonic() - started)


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _tar(tree: Path, tarball: Path) -> None:
    partial = tarball.with_suffix(".tar.partial")
    run(["tar", "--numeric-owner", "--xattrs", "-C", str(tree), "-cf", str(partial), "."])
    partial.rename(tarball)


def _ensure_base(cache: Path, packages: tuple[str, ...], mirror: Optional[str]) -> Path:
    base = cache / f"base-{recipe_key(packages, '')}.tar"
    with _locked(base.with_suffix(".lock")):
        if base.exists():
            return base
        debootstrap = shutil.which("debootstrap", path=os.environ.get("PATH", "") + ":/usr/sbin")
        if debootstrap is None:
            raise LabError("debootstrap is not installed (scripts/bootstrap.sh installs it)")
        mirror = mirror or debian_mirror()
        check_mirror(mirror)
        tree = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=cache))
        try:
            proc = subprocess.run(
                [debootstrap, "--variant=minbase", f"--include={','.join(packages)}", SUITE,
                 str(tree), mirror], capture_output=True)
            if proc.returncode != 0:
                log = tree / "debootstrap" / "debootstrap.log"
                detail = log.read_text(errors="replace")[-2000:] if log.exists() else \
                    proc.stderr.decode(errors="replace")[-2000:]
                raise LabError(f"debootstrap failed ({proc.returncode}): {detail}")
            # debootstrap can exit 0 with packages left unconfigured: that tree is no box.
            audit = run(["chroot", str(tree), "dpkg", "--audit"], check=False)
            if audit.returncode != 0 or audit.stdout.strip():
                raise LabError("debootstrap left packages unconfigured: "
                               + audit.stdout.decode(errors="replace")[-2000:])
            _tar(tree, base)
        finally:
            shutil.rmtree(tree, ignore_errors=True)
        return base


def _run_in(tree: Path, script: str) -> None:
    """The finishing script runs with the tree as its working directory (paths are relative;
    ``chroot .`` runs a tool of the box's own)."""
    proc = subprocess.run(["sh", "-c", script], cwd=tree, capture_output=True)
    if proc.returncode != 0:
        raise LabError("rootfs finishing script failed: "
                       + proc.stderr.decode(errors="replace")[-2000:])
