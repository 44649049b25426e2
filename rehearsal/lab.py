"""The lab: Debian 12 boxes with systemd as PID 1, on bridge networks of a Docker daemon that runs
in a network namespace of the harness's own, with a local apt repository. The public API the
rehearsal (``rehearsal/converge.py`` and the CLI) uses; ``rehearsal/LAB_API.md`` shows it in use.

::

    with Lab({"public": "203.0.113.0/24", "private": "10.41.0.0/24"},
             [BoxSpec("edge", {"public": "203.0.113.10", "private": "10.41.0.10"},
                      root_authorized_keys=(pubkey,))]) as lab:
        lab.exec("edge", ["systemctl", "is-system-running"])
        lab.run_in_netns(["ssh", "root@203.0.113.10", "true"])

A box (``rehearsal/box.py``: ``BoxSpec``, its boot flags and its NoCloud seed) is what a fresh
VPS is; the lab gives each its own ``/var/lib/docker`` on a host directory (overlay2 on the
container's overlay root fails otherwise).

Resources are undone newest first on every exit path of :meth:`Lab.start` and in
:meth:`Lab.close` (``__exit__``): containers removed, services and dockerd stopped by pid,
mounts under the lab's directories unmounted, the namespace deleted (killing anything left in
it), the lock released. ``keep=True`` leaves the lab running and prints how to remove it.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

from rehearsal import aptrepo, rootfs
from rehearsal.box import BOOT_WAIT, BOX_FLAGS, BoxSpec, check_boxes, default_boot_timeout, seed_tar
from rehearsal.netns import (DEFAULT_LOCK, SERVICE_ADDRESS, Cleanup, DockerDaemon, LabBusy,
                             LabError, LabLock, Namespace, run, spawn, stop_pid, unmount_under)

__all__ = ["BoxSpec", "Lab", "LabBusy", "LabError", "SERVICE_ADDRESS"]

WORK_ROOT = Path("/var/tmp/platform-rehearsal")
RUN_ROOT = Path("/run/platform-rehearsal")


class Lab:
    """A running lab (a context manager: ``__enter__`` starts it, ``__exit__`` tears it down
    unless ``keep``). ``networks``: lab network name -> IPv4 CIDR. ``packages``: what the local
    apt repository serves (default :data:`aptrepo.STACK_PACKAGES`). ``workdir``: where per-run
    state goes (default a fresh directory under /var/tmp/platform-rehearsal, removed at
    teardown). ``lock_path``: the lab lock (a second lab on the same path raises LabBusy).
    ``boot_timeout``: seconds for all boxes to boot (default :func:`default_boot_timeout`).
    Raises LabError on bad specs (before anything is created) and on any start failure."""

    def __init__(self, networks: Mapping[str, str], boxes: Sequence[BoxSpec], *,
                 keep: bool = False, workdir: Optional[Path] = None,
                 packages: Optional[Iterable[str]] = None, lock_path: Path = DEFAULT_LOCK,
                 cache_root: Path = rootfs.CACHE_ROOT, boot_timeout: Optional[float] = None):
        self.networks = {name: ipaddress.ip_network(cidr) for name, cidr in networks.items()}
        self.boxes = {box.name: box for box in boxes}
        self.keep = keep
        self.packages = tuple(sorted(set(packages if packages is not None
                                         else aptrepo.STACK_PACKAGES)))
        self.cache_root = cache_root
        self.boot_timeout = boot_timeout or default_boot_timeout(len(boxes))
        self.id = secrets.token_hex(4)
        self.workdir = Path(workdir) if workdir else WORK_ROOT / self.id
        self.run_dir = RUN_ROOT / self.id
        self.timings: dict[str, float] = {}
        self.harness_data_root: Path = self.workdir / "docker"
        check_boxes(boxes, self.networks)
        self._lock = LabLock(lock_path)
        self._cleanup = Cleanup()
        self._ns = Namespace()
        self._daemon: Optional[DockerDaemon] = None
        self._services: dict[str, subprocess.Popen] = {}
        self._started = False
        self._stopping = threading.Event()

    # --- public -------------------------------------------------------------------------------

    @property
    def netns(self) -> str:
        return self._ns.name

    @property
    def harness_docker_host(self) -> str:
        if self._daemon is None:
            raise LabError("the lab is not started")
        return self._daemon.host

    service_address = SERVICE_ADDRESS
    apt_url = "http://deb.debian.org/debian"
    """The repository as boxes see it (their only apt source); served at SERVICE_ADDRESS:80."""

    def box_address(self, box: str, network: str) -> str:
        return self.boxes[box].addresses[network]

    def netns_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed with ``nsenter --net=...``: run it (a Python entry point, ssh, a
        docker client over ssh://) inside the lab's namespace."""
        return self._ns.argv(argv)

    def run_in_netns(self, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        """``subprocess.run(netns_argv(argv), **kwargs)``; captures output unless told not to."""
        kwargs.setdefault("capture_output", True)
        return subprocess.run(self.netns_argv(argv), **kwargs)

    def exec(self, box: str, argv: Sequence[str], *, input: Optional[bytes] = None,
             user: str = "root", timeout: Optional[float] = None) -> subprocess.CompletedProcess:
        """``docker exec -i -u USER BOX ARGV`` on the harness daemon: bytes stdout/stderr, the
        command's own exit status (no exception on non-zero)."""
        if box not in self.boxes:
            raise LabError(f"no box named {box!r} (boxes: {', '.join(sorted(self.boxes))})")
        stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
        return subprocess.run(self._docker("exec", "-i", "-u", user, box, *argv),
                              capture_output=True, timeout=timeout, **stdin)

    def spawn_service(self, name: str, argv: Sequence[str], *,
                      env: Optional[Mapping[str, str]] = None) -> Path:
        """Start ``argv`` in the namespace in the background (a registry, an S3 stand-in); it is
        stopped by its pid at teardown. Returns its log file."""
        if name in self._services:
            raise LabError(f"service {name!r} already runs")
        log = self.workdir / "services" / f"{name}.log"
        proc = spawn(self._ns, argv, log, env=dict(env or {}))
        self._services[name] = proc
        self._cleanup.push(f"stop service {name}", lambda: _stop_popen(proc))
        return log

    def start(self) -> None:
        """Build or reuse the box image and apt repository, start the namespace, the harness
        daemon, the repository's HTTP server and every box, and wait until all booted. On any
        failure everything made so far is removed before the exception propagates."""
        if self._started:
            raise LabError("the lab is already started")
        self._lock.acquire()
        self._cleanup.push("release lock", self._lock.release)
        self._started = True
        if threading.current_thread() is threading.main_thread():
            # `kill PID` tears the lab down as Ctrl-C does, instead of leaving it behind.
            previous = signal.signal(signal.SIGTERM, _interrupt)
            self._cleanup.push("restore SIGTERM handler",
                               lambda: signal.signal(signal.SIGTERM, previous))
        try:
            self._start()
        except BaseException:
            self._stopping.set()
            errors = self._cleanup.run()
            if errors:
                print("lab teardown after failure left: " + "; ".join(errors), file=sys.stderr)
            raise

    def close(self) -> None:
        """Tear everything down (idempotent). Raises LabError listing what could not be undone."""
        self._cleanup.run(raise_errors=True)

    def __enter__(self) -> "Lab":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.keep:
            print(f"lab kept: namespace {self.netns}, docker -H {self.harness_docker_host}; "
                  f"remove it with: python -m rehearsal.lab cleanup {self.run_dir}",
                  file=sys.stderr)
            self._lock.release()
            return
        self.close()

    # --- start --------------------------------------------------------------------------------

    def _start(self) -> None:
        t0 = time.monotonic()
        box = rootfs.ensure_rootfs(self.cache_root)
        self.timings["rootfs"] = time.monotonic() - t0
        t0 = time.monotonic()
        repo = aptrepo.ensure_repo(self.packages, box.status, box.key, self.cache_root)
        self.timings["apt_repo"] = time.monotonic() - t0

        self.workdir.mkdir(parents=True, exist_ok=True)
        self._cleanup.push("remove workdir", lambda: _rmtree_unmounted(self.workdir))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._cleanup.push("remove run dir", lambda: _rmtree_unmounted(self.run_dir))

        t0 = time.monotonic()
        self._ns.create()
        self._cleanup.push(f"delete namespace {self.netns}", self._ns.delete)
        self.harness_data_root = self._claim_data_root()
        _write_state(self.run_dir, self)
        daemon = DockerDaemon(self._ns, self.harness_data_root, self.run_dir / "d",
                              self._harness_bip())
        self._cleanup.push("unmount harness data root",
                           lambda: unmount_under(self.harness_data_root))
        self._cleanup.push("stop harness dockerd", daemon.stop)
        daemon.start()
        self._daemon = daemon
        # What a crashed run may have left in a shared data root goes first, and again at the end.
        daemon.remove_all_containers()
        self._remove_lab_networks()
        self._cleanup.push("remove lab networks", self._remove_lab_networks)
        self._cleanup.push("remove containers", daemon.remove_all_containers)
        self.timings["daemon"] = time.monotonic() - t0

        t0 = time.monotonic()
        if run(self._docker("image", "inspect", box.image), check=False).returncode != 0:
            run(self._docker("import", "-c", 'CMD ["/sbin/init"]', str(box.tarball), box.image),
                timeout=600)
        self.timings["image_import"] = time.monotonic() - t0

        self.spawn_service("apt", [sys.executable, "-u", "-m", "http.server", "--bind",
                                   SERVICE_ADDRESS, "--directory", str(repo.path),
                                   str(rootfs.APT_PORT)])
        for name, net in sorted(self.networks.items()):
            run(self._docker("network", "create", "--driver", "bridge", "--subnet", str(net),
                             "--gateway", str(next(net.hosts())), f"lab-{name}"))

        t0 = time.monotonic()
        for spec in self.boxes.values():
            self._create_box(spec, box.image)
        pool = ThreadPoolExecutor(max_workers=max(1, len(self.boxes)))
        try:
            list(pool.map(self._wait_booted, self.boxes.values()))
        finally:
            # On Ctrl-C the waiting threads see _stopping and return within a poll.
            self._stopping.set()
            pool.shutdown(wait=True, cancel_futures=True)
            self._stopping.clear()
        self.timings["boot"] = time.monotonic() - t0

    def _claim_data_root(self) -> Path:
        """The harness daemon's data root: the shared one in the cache (the box image and R2's
        stand-in images stay imported between runs) when no other lab uses it, else a private
        one in the workdir. A kept lab always gets a private one, since its daemon outlives the
        claim."""
        if not self.keep:
            claim = LabLock(self.cache_root / "harness-docker.lock")
            try:
                claim.acquire()
            except LabBusy:
                pass
            else:
                self._cleanup.push("release harness data root", claim.release)
                shared = self.cache_root / "harness-docker"
                # A dockerd of a harness killed hard still holds it, claim or not.
                if not _dockerd_uses(shared):
                    return shared
        return self.workdir / "docker"

    def _remove_lab_networks(self) -> None:
        listed = run(self._docker("network", "ls", "-q", "--filter", "name=lab-"), check=False)
        ids = [i.decode() for i in listed.stdout.split()]
        if ids:
            run(self._docker("network", "rm", *ids), check=False)

    def _harness_bip(self) -> str:
        """The harness daemon's default bridge: a /24 overlapping no lab network."""
        for third in range(255, 0, -1):
            candidate = ipaddress.ip_network(f"172.31.{third}.0/24")
            if not any(candidate.overlaps(n) for n in self.networks.values()):
                return f"172.31.{third}.1/24"
        raise LabError("no free /24 in 172.31.0.0/16 for the harness daemon's bridge")

    def _create_box(self, spec: BoxSpec, image: str) -> None:
        docker_dir = self.workdir / "boxes" / spec.name / "docker"
        docker_dir.mkdir(parents=True)
        first, *rest = sorted(spec.addresses.items())
        argv = self._docker(
            "create", "--name", spec.name, "--hostname", spec.name, *BOX_FLAGS,
            "-v", f"{docker_dir}:/var/lib/docker",
            *[f"--add-host={host}:{SERVICE_ADDRESS}" for host in rootfs.APT_HOSTS],
            *[f"--add-host={host}:{ip}" for host, ip in sorted(spec.extra_hosts.items())],
            *(["-v", f"{self._resolv_conf(spec)}:/etc/resolv.conf"] if spec.dns else []),
            "--network", f"lab-{first[0]}", "--ip", first[1],
            *(["--memory", f"{spec.memory_mb}m"] if spec.memory_mb else []),
            image)
        run(argv)
        for network, address in rest:
            run(self._docker("network", "connect", "--ip", address, f"lab-{network}", spec.name))
        run(self._docker("cp", "-", f"{spec.name}:/"), input=seed_tar(spec, self.id))
        run(self._docker("start", spec.name))

    def _resolv_conf(self, spec: BoxSpec) -> Path:
        path = self.workdir / "boxes" / spec.name / "resolv.conf"
        path.write_text("".join(f"nameserver {address}\n" for address in spec.dns))
        path.chmod(0o644)
        return path

    def _wait_booted(self, spec: BoxSpec) -> None:
        """One ``docker exec`` per box runs :data:`BOOT_WAIT` inside it (polling from outside
        costs a runc exec per poll, which seven boxes on two cores feel)."""
        proc = subprocess.Popen(
            self._docker("exec", spec.name, "sh", "-c", BOOT_WAIT, "boot-wait",
                         str(int(self.boot_timeout)),
                         "user-data" if spec.user_data is not None else "no-user-data"),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.boot_timeout + 30
        while proc.poll() is None:
            if self._stopping.wait(0.5) or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise LabError(f"box {spec.name}: boot wait interrupted or timed out")
        output = proc.stdout.read().decode(errors="replace").strip()[-1500:]
        unit = {10: None, 11: "cloud-init", 12: "ssh"}.get(proc.returncode)
        if proc.returncode != 0:
            what = {10: "systemd did not reach running", 11: "cloud-init did not finish cleanly",
                    12: "sshd is not listening on port 22"}.get(proc.returncode,
                                                                "the boot wait failed")
            raise LabError(f"box {spec.name}: {what}:\n{output}" + self._journal(spec.name, unit))

    def _journal(self, box: str, unit: Optional[str] = None) -> str:
        argv = ["journalctl", "--no-pager", "-n", "30", "-o", "short"]
        if unit:
            argv += ["-u", unit]
        proc = self.exec(box, argv, timeout=30)
        failed = self.exec(box, ["systemctl", "--failed", "--no-legend", "--plain"], timeout=30)
        return ("\nfailed units:\n" + failed.stdout.decode(errors="replace")
                + "\nlast journal lines:\n" + proc.stdout.decode(errors="replace"))

    def _docker(self, *args: str) -> list[str]:
        if self._daemon is None:
            raise LabError("the lab is not started")
        return self._daemon.cli(*args)

def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _dockerd_uses(data_root: Path) -> bool:
    needle = f"--data-root\0{data_root}\0".encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in cmdline.read_bytes():
                return True
        except OSError:
            continue
    return False


def _stop_popen(proc: subprocess.Popen) -> None:
    stop_pid(proc.pid, timeout=10)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _rmtree_unmounted(path: Path) -> None:
    if path.exists():
        unmount_under(path)
        shutil.rmtree(path)


def _write_state(run_dir: Path, lab: Lab) -> None:
    """What `python -m rehearsal.lab cleanup RUN_DIR` needs to remove a kept lab."""
    (run_dir / "lab.json").write_text(json.dumps({
        "netns": lab.netns, "workdir": str(lab.workdir), "run_dir": str(run_dir),
        "data_root": str(lab.harness_data_root),
    }))


def cleanup_kept(run_dir: Path) -> None:
    """Remove a lab left by ``keep=True``: its containers, daemon, mounts, namespace, dirs."""
    state = json.loads((Path(run_dir) / "lab.json").read_text())
    ns = Namespace(state["netns"])
    daemon = DockerDaemon(ns, Path(state["data_root"]), Path(run_dir) / "d", "")
    steps = Cleanup()
    steps.push("remove workdir", lambda: _rmtree_unmounted(Path(state["workdir"])))
    steps.push("remove run dir", lambda: _rmtree_unmounted(Path(run_dir)))
    steps.push("delete namespace", ns.delete)
    steps.push("stop harness dockerd", daemon.stop)
    steps.push("remove containers", daemon.remove_all_containers)
    steps.run(raise_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "cleanup":
        cleanup_kept(Path(sys.argv[2]))
    else:
        print("usage: python -m rehearsal.lab cleanup RUN_DIR", file=sys.stderr)
        sys.exit(2)
