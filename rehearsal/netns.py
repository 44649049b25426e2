"""The lab's network namespace, its lock, its background processes and the harness Docker daemon.

Everything a rehearsal runs that has a network side runs inside one network namespace of its
own, made with ``ip netns add``. The namespace has loopback (also carrying :data:`SERVICE_ADDRESS`)
and the harness daemon's bridges, and no uplink: no route leads out of it, so
nothing in a rehearsal can reach an address outside it, and the Docker daemon's iptables rules
land in the namespace's own tables, never in the build machine's firewall.

Commands enter the namespace with ``nsenter --net=/run/netns/NAME``, not ``ip netns exec``:
the latter also remounts /sys, after which dockerd fails with "Devices cgroup isn't mounted"
(measured, /work/shared/REHEARSAL.md).

Teardown is a :class:`Cleanup` stack: every resource registers its undo as soon as it exists,
and :meth:`Cleanup.run` undoes them newest first, running every step even when one fails.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

DEFAULT_LOCK = Path(os.environ.get("PLATFORM_REHEARSAL_LOCK", "/run/platform-rehearsal.lock"))
"""The lab lock every rehearsal takes unless given another: machine-wide, so that two labs never
share two cores by accident; ``PLATFORM_REHEARSAL_LOCK`` moves it (a developer's lab tier next to
a colleague's rehearsal on a shared machine)."""
SERVICE_ADDRESS = "100.64.0.1"
"""An address of the namespace itself (on its loopback), reachable from every box through
its default route: the local apt repository and the image registry listen on it. It is in the
shared address space of RFC 6598, which no stack file uses."""
NETNS_PREFIX = "platform-rehearsal-"


class LabError(RuntimeError):
    """A lab could not be built, booted or torn down; the message names the part and the cause."""


class LabBusy(LabError):
    """Another rehearsal holds the lab lock."""


def run(argv: Sequence[str], *, check: bool = True, input: Optional[bytes] = None,
        timeout: Optional[float] = None) -> subprocess.CompletedProcess:
    """``subprocess.run`` capturing bytes; on failure raises LabError with the command's stderr."""
    proc = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).decode(errors="replace").strip()[-2000:]
        raise LabError(f"{' '.join(argv[:4])} ... exited {proc.returncode}: {tail}")
    return proc


# --- the lock ---------------------------------------------------------------------------------

class LabLock:
    """An exclusive ``flock`` on ``path``, held while a lab runs; the holder's pid is written in
    the file so that the refusal can name it. Raises LabBusy when held by another process."""

    def __init__(self, path: Path = DEFAULT_LOCK):
        self.path = Path(path)
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LabBusy(
                f"another rehearsal is running (pid {holder}, lock {self.path}); wait for it to "
                f"finish, or stop it (Ctrl-C tears its lab down) and run again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# --- cleanup stack ----------------------------------------------------------------------------

@dataclass
class Cleanup:
    """Undo steps, run newest first. Every step runs even if an earlier one fails; the failures
    are returned (and raised together by :meth:`run` with ``raise_errors``)."""

    steps: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def push(self, what: str, undo: Callable[[], None]) -> None:
        self.steps.append((what, undo))

    def run(self, raise_errors: bool = False) -> list[str]:
        errors = []
        while self.steps:
            what, undo = self.steps.pop()
            try:
                undo()
            except BaseException as exc:  # noqa: BLE001 -- a teardown step must not stop the rest
                errors.append(f"{what}: {exc}")
        if errors and raise_errors:
            raise LabError("teardown incomplete: " + "; ".join(errors))
        return errors


# --- the namespace ----------------------------------------------------------------------------

class Namespace:
    """A named network namespace with loopback up, carrying 127.0.0.1 and SERVICE_ADDRESS."""

    def __init__(self, name: Optional[str] = None):
        self.name = name or NETNS_PREFIX + secrets.token_hex(4)
        self.path = Path("/run/netns") / self.name

    def create(self) -> None:
        run(["ip", "netns", "add", self.name])
        try:
            run(["ip", "-n", self.name, "link", "set", "lo", "up"])
            # On loopback: this kernel has no dummy device type, and a local address is
            # reachable from every bridge of the namespace all the same.
            run(["ip", "-n", self.name, "addr", "add", f"{SERVICE_ADDRESS}/32", "dev", "lo"])
        except LabError:
            self.delete()
            raise

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed so that it runs in this namespace (only the network namespace changes:
        the mounts, /sys and the cgroups stay the build machine's)."""
        return ["nsenter", f"--net={self.path}", *argv]

    def pids(self) -> list[int]:
        proc = run(["ip", "netns", "pids", self.name], check=False)
        return [int(p) for p in proc.stdout.split()]

    def delete(self) -> None:
        """Kill what still runs in the namespace (it is all ours), then delete it."""
        if not self.path.exists():
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                _kill(pid, sig)
            _wait_gone(pids, 10)
        run(["ip", "netns", "delete", self.name])


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        stat = Path(f"/proc/{pid}/stat")
        try:
            return stat.read_text().split(") ", 1)[1][0] != "Z"
        except (OSError, IndexError):
            return False


def _wait_gone(pids: Sequence[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def stop_pid(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if not _alive(pid):
        return
    _kill(pid, signal.SIGTERM)
    if not _wait_gone([pid], timeout):
        _kill(pid, signal.SIGKILL)
        _wait_gone([pid], 5)


def stop_pidfile(pidfile: Path, timeout: float = 20.0) -> None:
    try:
        pid = int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return
    stop_pid(pid, timeout)


def spawn(ns: Namespace, argv: Sequence[str], log: Path, *,
          env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    """Start ``argv`` in the namespace in the background, output to ``log``, in its own session
    (a Ctrl-C in the terminal reaches the harness, which then stops it in order)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(ns.argv(argv), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, **(env or {})})


# --- mounts -----------------------------------------------------------------------------------

def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` in this mount namespace, deepest first."""
    prefix = str(Path(root).resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def unmount_under(root: Path) -> None:
    for point in mounts_under(root):
        run(["umount", "-l", point], check=False)
    left = mounts_under(root)
    if left:
        raise LabError(f"still mounted under {root}: {', '.join(left)}")


# --- the harness Docker daemon ----------------------------------------------------------------

def docker_cli() -> str:
    """Debian's docker client (matches the daemon) when present, else the one on PATH."""
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).exists():
            return candidate
    raise LabError("the docker client is not installed (apt-get install docker.io; "
                   "scripts/bootstrap.sh installs it)")


@dataclass
class DockerDaemon:
    """A dockerd in the namespace; ``host`` is its ``unix://`` socket."""

    ns: Namespace
    data_root: Path
    exec_root: Path
    bip: str
    process: Optional[subprocess.Popen] = None

    @property
    def socket(self) -> Path:
        return self.exec_root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pidfile(self) -> Path:
        return self.exec_root / "docker.pid"

    @property
    def log(self) -> Path:
        return self.exec_root.parent / (self.exec_root.name + "-dockerd.log")

    def cli(self, *args: str) -> list[str]:
        return [docker_cli(), "-H", self.host, *args]

    def start(self, timeout: float = 60.0) -> None:
        dockerd = shutil.which("dockerd", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        if dockerd is None:
            raise LabError("dockerd is not installed (apt-get install --no-install-recommends "
                           "docker.io; scripts/bootstrap.sh installs it)")
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.exec_root.mkdir(parents=True, exist_ok=True)
        self.process = spawn(self.ns, [
            dockerd, "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
            "--pidfile", str(self.pidfile), "--host", self.host, "--bip", self.bip,
            "--storage-driver", "overlay2", "--log-driver", "json-file",
            # The boxes run their own dockerd; the harness daemon needs no TCP listener, no
            # userland proxy and no live-restore (it is stopped with its lab).
            "--userland-proxy=false",
        ], self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LabError(f"dockerd exited {self.process.returncode}: "
                               + _tail(self.log))
            if self.socket.exists() and run(self.cli("version"), check=False).returncode == 0:
                return
            time.sleep(0.3)
        raise LabError(f"dockerd did not answer within {timeout:.0f}s: " + _tail(self.log))

    def remove_all_containers(self) -> None:
        if not self.socket.exists():
            return
        ids = run(self.cli("ps", "-aq"), check=False).stdout.split()
        if ids:
            run(self.cli("rm", "-f", "-v", *[i.decode() for i in ids]), check=False, timeout=120)

    def stop(self) -> None:
        if self.process is not None:
            stop_pid(self.process.pid, timeout=30)
            self.process.wait(timeout=5)
        stop_pidfile(self.pidfile, timeout=30)
        # A dockerd killed hard leaves its managed containerd behind.
        stop_pidfile(self.exec_root / "containerd" / "containerd.pid", timeout=10)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
