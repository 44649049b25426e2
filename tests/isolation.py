"""Places where the real-tool tests run host scripts and firewalls without touching this machine.

- ``run_in_throwaway_root``: bash inside an overlay of this machine's root (writes land in a
  tmpfs, never in the real /etc), chrooted, in private mount and network namespaces.
- ``apply_ufw``: real ``ufw`` commands inside a network namespace, in a private mount namespace
  over private copies of ``/etc/ufw`` and ``/etc/default/ufw`` and a private ``/run``.
- ``ip``: ``ip ARGS...`` that raises on failure (namespaces, veths, addresses).
- ``borrowed_usr_image``: a ``docker import`` tarball whose ``/usr`` is this machine's, bind
  mounted read-only at run time, so a test container runs Debian's own binaries.

All of them need root and the tools the callers check with ``require_tool``/``require_root``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import textwrap
from pathlib import Path
from typing import Sequence

ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def ip(*args: str) -> None:
    """Run ``ip ARGS``; raises ``subprocess.CalledProcessError`` when it fails."""
    subprocess.run(["ip", *args], check=True, capture_output=True)


def run_in_throwaway_root(mnt: Path, base: Path, *, driver: str = "/mnt/driver.sh", loopback: bool = False,
                          timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``bash DRIVER`` chrooted into an overlay of ``/`` whose writes land in a tmpfs.

    ``mnt`` (a directory) is bind-mounted on ``/mnt`` inside, so the driver and the scripts it
    runs live there; ``base`` (an empty directory) holds the overlay's tmpfs. ``/proc`` and
    ``/dev`` are this machine's, ``/run`` and ``/tmp`` are empty tmpfs. The mount and network
    namespaces are private (no network at all; ``loopback=True`` brings ``lo`` up, for tools
    that talk to themselves over it). The environment is empty but for ``PATH`` and
    ``HOME=/root``. Returns the finished process (text output); ``timeout`` in seconds raises
    ``subprocess.TimeoutExpired``.
    """
    setup = textwrap.dedent(f"""\
        set -e
        mount -t tmpfs tmpfs {base}
        mkdir -p {base}/upper {base}/work {base}/root
        mount -t overlay overlay -o lowerdir=/,upperdir={base}/upper,workdir={base}/work {base}/root
        mount --bind /proc {base}/root/proc
        mount --rbind /dev {base}/root/dev
        mount -t tmpfs tmpfs {base}/root/run
        mount -t tmpfs tmpfs {base}/root/tmp
        mount --bind {mnt} {base}/root/mnt
        """)
    if loopback:
        setup += "ip link set lo up\n"
    setup += (f"exec chroot {base}/root /usr/bin/env -i PATH={ROOT_PATH} \\\n"
              f"  HOME=/root bash {driver}\n")
    return subprocess.run(["unshare", "--mount", "--net", "--propagation", "private", "bash", "-c", setup],
                          capture_output=True, text=True, timeout=timeout)


def apply_ufw(enter: Sequence[str], commands: str, tmp_path: Path, *,
              timeout: float = 120) -> subprocess.CompletedProcess:
    """Run UFW ``commands`` (a bash snippet), then ``ufw status verbose``, inside a network namespace.

    ``enter`` is the argv prefix that enters the namespace (``["ip", "netns", "exec", NAME]`` or
    ``["nsenter", "--net=PATH"]``). UFW sees private copies of ``/etc/ufw`` and
    ``/etc/default/ufw`` (made under ``tmp_path/ufw-private``) and an empty ``/run``, in a mount
    namespace of its own, so the machine's firewall configuration is never read back or written.
    Returns the finished process (text output); the caller asserts on it.
    """
    private = tmp_path / "ufw-private"
    shutil.copytree("/etc/ufw", private / "etc-ufw", symlinks=True)
    (private / "default").mkdir()
    shutil.copy2("/etc/default/ufw", private / "default" / "ufw")
    inner = textwrap.dedent(f"""\
        set -eu
        mount -t tmpfs tmpfs /run
        mount --bind {private}/etc-ufw /etc/ufw
        mount --bind {private}/default/ufw /etc/default/ufw
        {commands}
        ufw status verbose
        """)
    return subprocess.run([*enter, "unshare", "--mount", "--propagation", "private", "bash", "-c", inner],
                          capture_output=True, text=True, timeout=timeout)


def borrowed_usr_image(writable: Sequence[str] = ("tmp",), extra_dirs: Sequence[str] = ()) -> bytes:
    """A root filesystem of mount points and merged-/usr symlinks (``docker import`` input);
    run it with ``-v /usr:/usr:ro``. ``writable``: directories created 1777; ``extra_dirs``:
    more mount points (0755 unless writable)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("usr", "etc", "tmp", "proc", "sys", "dev", "run", *extra_dirs):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory in writable else 0o755
            tar.addfile(info)
        for link in ("bin", "lib", "lib64", "sbin"):
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, f"usr/{link}"
            tar.addfile(info)
    return buffer.getvalue()


def tool_image(*tools: str) -> bytes:
    """A root filesystem (``docker import`` input) that holds the host's ``tools`` (absolute paths)
    and the shared libraries ``ldd`` names for them, at the paths the loader looks them up, and
    nothing else: an image that runs on its own (no ``/usr`` mount), as a service's image does."""
    files: dict[str, str] = {}
    for tool in tools:
        files[tool] = tool
        listed = subprocess.run(["ldd", tool], capture_output=True, text=True).stdout
        for line in listed.splitlines():
            path = line.split("=>")[-1].split("(")[0].strip()
            if path.startswith("/"):
                files[path] = path
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("tmp", "etc", "proc", "sys", "dev"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        for path in sorted(files):
            real = os.path.realpath(path)
            info = tar.gettarinfo(real, arcname=path.lstrip("/"))
            with open(real, "rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()
