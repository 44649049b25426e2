"""The lab services running in the lab's network namespace (``LabServices``): their lifecycle,
addresses, certificates and what they received."""

from __future__ import annotations

import json
import mailbox
import os
import shutil
import subprocess
import sys
import tempfile
import time
from email.message import Message
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from rehearsal.netns import Cleanup, run, stop_pid
from rehearsal.services.plan import ServicePlan, ServicesError
from rehearsal.services.starts import ServiceStarts
from rehearsal.services.tools import LISTENER, PYTHONPATH


class LabServices(ServiceStarts):
    """The services of ``plan``, running in the network namespace ``netns`` (its name, e.g.
    ``lab.netns``). A context manager: ``__enter__`` starts all of them and waits until each
    answers (raises ServicesError naming the service, with its log, after removing everything);
    ``__exit__`` stops them by pid, removes the addresses it added and its directory.

    ``ca``: the :class:`rehearsal.images.TestCA` that signs every service certificate (default:
    the registry's CA in the image cache, which boxes trust). ``workdir``: where configs, keys,
    logs, the Maildir and the webhook posts go (default: a fresh 0700 directory, removed at
    exit; a given one is kept). ``timeout``: seconds each service has to answer.
    ``timings``: service -> seconds to start (until it answered)."""

    def __init__(self, plan: ServicePlan, netns: str, *, ca: Any = None,
                 workdir: Optional[Path] = None, timeout: float = 60.0):
        self.plan = plan
        self.netns = netns
        self._ns_path = Path("/run/netns") / netns
        if ca is None:
            from rehearsal.images import IMAGE_CACHE, TestCA

            ca = TestCA(IMAGE_CACHE / "ca")
        self.ca = ca
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="rehearsal-services-"))
        self.timeout = timeout
        self.timings: dict[str, float] = {}
        self.acme_roots_pem: bytes = b""
        """Pebble's root and intermediate (PEM, root first): what a client must trust to verify
        a certificate pebble issued."""
        self._cleanup = Cleanup()
        self._procs: dict[str, subprocess.Popen] = {}

    # --- public -----------------------------------------------------------------------------

    @property
    def resolvers(self) -> tuple[str, ...]:
        return self.plan.resolvers

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.crt"

    @property
    def maildir(self) -> Path:
        return self.workdir / "mail"

    @property
    def webhook_dir(self) -> Path:
        return self.workdir / "webhook"

    def box_files(self) -> dict[str, bytes]:
        """What a box needs to trust the services (the same file the registry gives it; run
        ``update-ca-certificates`` after writing it)."""
        return {"/usr/local/share/ca-certificates/platform-rehearsal-ca.crt": self.ca.cert_pem}

    def messages(self) -> list[Message]:
        """Every message the SMTP sink received, oldest first (``X-RcptTo``, ``X-MailFrom``,
        ``X-Lab-Auth-Login`` headers included)."""
        if not self.maildir.exists():
            return []
        box = mailbox.Maildir(self.maildir, factory=None, create=False)
        return [m for _, m in sorted(box.items(), key=lambda kv: kv[1].get_date())]

    def webhook_posts(self) -> list[dict]:
        """Every POST the webhook receiver got, oldest first: ``{"host", "path_sha256",
        "content_type", "body"}`` (body as text)."""
        if not self.webhook_dir.exists():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.webhook_dir.glob("*.json"))]

    def stop_service(self, name: str) -> None:
        """Stop one running service (``dns``, ``acme``, ``acme-front``, ``s3``, ``smtp``,
        ``webhook``) by its pid, e.g. to prove that a backup fails when S3 is down; the rest keep
        running. Raises ServicesError for a name that is not running."""
        proc = self._procs.get(name)
        if proc is None or proc.poll() is not None:
            raise ServicesError(f"no running lab service {name!r} (running: "
                                f"{', '.join(n for n, p in self._procs.items() if p.poll() is None)})")
        stop_pid(proc.pid, timeout=10)
        proc.wait(timeout=5)

    def is_running(self, name: str) -> bool:
        """Whether the lab service ``name`` was started and its process still runs."""
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def start_service(self, name: str) -> None:
        """Start again one service that :meth:`stop_service` stopped (``dns``, ``s3``, ``smtp``,
        ``webhook``), on its address with a fresh certificate, and wait until it answers; what
        it held in memory (moto's buckets) is gone, as after a real outage of a stand-in.
        Raises ServicesError for a name still running or not one of those."""
        starts = {"dns": self._start_dns, "s3": self._start_s3, "smtp": self._start_smtp,
                  "webhook": self._start_webhook}
        if name not in starts:
            raise ServicesError(f"{name!r} cannot be started again (only {', '.join(starts)})")
        if self.is_running(name):
            raise ServicesError(f"lab service {name!r} is running")
        starts[name]()

    def listen(self, name: str, port: int) -> str:
        """Accept TCP connections on ``port`` at the lab address of ``name``, an outside host
        the zone names but no stand-in serves (a destination on an egress proxy's list), so a
        client that gets there sees its connection accepted (then closed); stopped, and its
        address removed, with the services. Returns the address. Raises ServicesError for a
        name the zone does not have."""
        address = self.plan.zone.get(name)
        if address is None:
            raise ServicesError(f"{name} is not in the lab's zone")
        key = f"listen-{address}-{port}"
        if key in self._procs and self._procs[key].poll() is None:
            return address
        self._add_address(address)
        log = self._spawn(key, [sys.executable, "-c", LISTENER, address, str(port)])
        self._wait(key, log, ["tcp", address, str(port)])
        return address

    def __enter__(self) -> "LabServices":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop everything (idempotent); raises ServicesError listing what could not be undone."""
        errors = self._cleanup.run()
        if errors:
            raise ServicesError("lab services teardown incomplete: " + "; ".join(errors))

    def start(self) -> None:
        if not self._ns_path.exists():
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            raise ServicesError(f"no network namespace {self.netns}")
        try:
            self._start()
        except BaseException:
            errors = self._cleanup.run()
            if errors:
                print("lab services teardown after failure left: " + "; ".join(errors), file=sys.stderr)
            raise

    # --- start ------------------------------------------------------------------------------

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        if self._own_workdir:
            self._cleanup.push("remove services workdir",
                               lambda: shutil.rmtree(self.workdir, ignore_errors=True))
        self.ca_file.write_bytes(self.ca.cert_pem)
        services = {a for k, a in self.plan.addresses.items() if k != "resolver"}
        for address in sorted(set(self.plan.resolvers) | services):
            self._add_address(address)
        self._start_dns()
        self._start_acme()
        self._start_s3()
        self._start_smtp()
        self._start_webhook()
        self._start_managed()

    def _add_address(self, address: str) -> None:
        """Add ``address``/32 to the namespace's loopback; one already there is used and left."""
        added = run(["ip", "-n", self.netns, "addr", "add", f"{address}/32", "dev", "lo"], check=False)
        if added.returncode == 0:
            self._cleanup.push(f"remove address {address}", lambda: run(
                ["ip", "-n", self.netns, "addr", "del", f"{address}/32", "dev", "lo"], check=False))
        elif b"File exists" not in added.stderr and b"already assigned" not in added.stderr:
            raise ServicesError(f"adding {address} to the namespace: {added.stderr.decode(errors='replace')}")

    def _spawn(self, name: str, argv: Sequence[str], env: Optional[Mapping[str, str]] = None) -> Path:
        log = self.workdir / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(["nsenter", f"--net={self._ns_path}", *argv], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env={**os.environ, **(env or {})},
                                    cwd=self.workdir)
        self._procs[name] = proc

        def stop() -> None:
            stop_pid(proc.pid, timeout=10)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

        self._cleanup.push(f"stop {name} (pid {proc.pid})", stop)
        return log

    def _issue(self, name: str, names: Sequence[str]) -> tuple[Path, Path]:
        issued = self.ca.issue(list(names))
        crt, key = self.workdir / f"{name}.crt", self.workdir / f"{name}.key"
        crt.write_bytes(issued.cert_pem + self.ca.cert_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(issued.key_pem)
        return crt, key

    def _wait(self, name: str, log: Path, probe: Sequence[str]) -> None:
        """Run ``python -m rehearsal.services probe ...`` in the namespace until it exits 0."""
        started = time.monotonic()
        deadline = started + self.timeout
        argv = ["nsenter", f"--net={self._ns_path}", sys.executable, "-m", "rehearsal.services",
                "probe", *probe]
        env = {**os.environ, "PYTHONPATH": PYTHONPATH}
        last = b""
        while time.monotonic() < deadline:
            proc = self._procs[name]
            if proc.poll() is not None:
                raise ServicesError(f"{name} exited {proc.returncode}: {_tail(log)}")
            result = subprocess.run(argv, capture_output=True, env=env, timeout=30)
            if result.returncode == 0:
                self.timings[name] = round(time.monotonic() - started, 3)
                return
            last = result.stderr or result.stdout
            time.sleep(0.2)
        raise ServicesError(f"{name} did not answer within {self.timeout:.0f}s "
                            f"({last.decode(errors='replace').strip()[-300:]}): {_tail(log)}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
