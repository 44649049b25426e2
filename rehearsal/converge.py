"""Converge: apply a captured (and overlaid) stack to the lab's boxes as ``pulumi up`` would.

- ``command:remote:Command``: its ``create`` command over real SSH (paramiko,
  ``rehearsal/ssh_transport.py``) as the captured user, through the captured jump host, with
  ``environment`` sent as SSH env requests and ``stdin`` piped, as pulumi-command's remote
  Command does. Its exit code decides success; the
  host scripts' last line ``platform-setup: N changes`` gives the change count.
- Docker networks, images (``RemoteImage``: a pull through the host's own daemon) and containers
  through the Engine API over ``ssh://`` with the ``docker`` library (``rehearsal.dockerapi``).
- Steps run in dependency order; independent steps run in parallel (``workers``), as the engine
  does. A failed step blocks everything that depends on it; independent steps go on, so one
  run reports every broken host.
- A second run (``run=2``) re-runs every command (each must report 0 changes) and finds every
  Docker resource the first run made by its recorded id (none may be recreated or gone), which
  is what ``pulumi up`` with unchanged inputs leaves alone.
- A run after a config change (``expect_changes``: a drill's first converge) may report
  changes; a container whose captured inputs changed is replaced as ``pulumi up`` replaces it,
  under a new name: with ``delete_before_replace`` the old one is removed first; otherwise the
  new one is created next to it (``wait``: until healthy) and the old one is removed at the end
  of the run, after every other step, and only when no step failed. A new container that never
  becomes healthy fails its step (its error carries the last healthcheck output) and leaves the
  old one running; the failed one is removed by the next run that replaces the step.

This module runs inside the lab's network namespace (``python -m rehearsal.converge``, started
with ``Lab.netns_argv``) so that every connection it opens originates there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from rehearsal.capture import StackCapture, Step, container_name
from rehearsal.ssh_transport import Connections, write_ssh_config

CHANGES = re.compile(r"^platform-setup: (\d+) changes$", re.M)
PENDING_DELETES = "pending_deletes"  # state key: replaced containers not yet removed
FAILED_CREATE = "failed-create"  # a recorded container's inputs digest when its create failed
TAIL_LINES = 20


@dataclass
class StepResult:
    """What one step did in one run: ``status`` ok, failed, changed (a second run that changed
    something) or blocked (a dependency failed);
    ``changes`` the script's own count (None: not a script, or it did not say); ``seconds``
    wall time; ``tail`` the last lines of its output when it failed."""

    urn: str
    name: str
    host: str
    kind: str
    run: int
    status: str
    seconds: float = 0.0
    exit_code: Optional[int] = None
    changes: Optional[int] = None
    changed: list[str] = field(default_factory=list)
    resource_id: Optional[str] = None
    error: Optional[str] = None
    tail: list[str] = field(default_factory=list)


class Converger:
    def __init__(self, capture: StackCapture, workdir: Path, run: int, workers: int = 4,
                 expect_changes: bool = False, progress_path: Optional[Path] = None):
        self.capture = capture
        self.expect_changes = expect_changes
        self.workdir = workdir
        self.run_no = run
        self.workers = workers
        self.progress_path = progress_path
        self.home = workdir / "home"
        self.state_path = workdir / "state.json"
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.state_lock = threading.Lock()
        write_ssh_config(capture, self.home)
        os.environ["HOME"] = str(self.home)
        # The docker library runs `ssh` by name; OpenSSH finds ~/.ssh/config through the passwd
        # entry, not $HOME, so a wrapper first in PATH hands it the harness's config.
        bin_dir = workdir / "bin"
        bin_dir.mkdir(exist_ok=True)
        wrapper = bin_dir / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {self.home / ".ssh" / "config"} "$@"\n')
        wrapper.chmod(0o755)
        os.environ["PATH"] = f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        self.ssh = Connections(capture, self.home)
        self.docker_clients: dict[str, Any] = {}
        self.docker_lock = threading.Lock()
        # Containers that create-before-delete replacements left behind in this run.
        self.pending_deletes: list[dict[str, Any]] = []

    def docker(self, host_name: str):
        import docker

        with self.docker_lock:
            client = self.docker_clients.get(host_name)
            if client is None:
                host = self.capture.hosts[host_name]
                # The first SSH connection (a command) recorded the host key the ssh client checks.
                self.ssh.client(host_name)
                # The ssh binary, one connection per Engine API connection, as the Docker CLI's
                # connection helper does for the Docker provider (`ssh ... docker system
                # dial-stdio`); paramiko's one connection would hit sshd's MaxSessions (10).
                client = docker.DockerClient(base_url=host.docker_host, use_ssh_client=True, timeout=600)
                self.docker_clients[host_name] = client
            return client

    def execute(self, step: Step) -> StepResult:
        started = time.monotonic()
        result = StepResult(urn=step.urn, name=step.name, host=step.host, kind=step.kind,
                            run=self.run_no, status="ok")
        try:
            getattr(self, f"_{step.kind}")(step, result)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the step's error
            result.status = "failed"
            result.error = f"{type(exc).__name__}: {exc}"
            result.tail = result.tail or str(exc).splitlines()[-TAIL_LINES:]
        result.seconds = round(time.monotonic() - started, 2)
        return result

    def _command(self, step: Step, result: StepResult) -> None:
        inputs = step.inputs
        user = (inputs.get("connection") or {}).get("user")
        code, out, err = self.ssh.run(step.host, inputs["create"], stdin=inputs.get("stdin"),
                                      environment=dict(inputs.get("environment") or {}), user=user)
        result.exit_code = code
        counts = CHANGES.findall(out)
        result.changes = int(counts[-1]) if counts else None
        result.changed = [line[len("changed: "):] for line in out.splitlines() if line.startswith("changed: ")]
        if code != 0:
            result.status = "failed"
            result.error = f"exit code {code}"
            result.tail = (out.splitlines() + err.splitlines())[-TAIL_LINES:]
        elif self.run_no > 1 and result.changes != 0 and not self.expect_changes:
            # Not idempotent, but the host is as the script left it: dependents still run, so
            # the second run judges every script.
            result.status = "changed"
            result.error = (f"second run changed {result.changes} things: {result.changed}"
                            if result.changes is not None else "the script did not report its changes")
            result.tail = out.splitlines()[-TAIL_LINES:]

    def _recorded(self, step: Step) -> Optional[dict]:
        with self.state_lock:
            return self.state.get(step.urn)

    def _record(self, step: Step, **values) -> None:
        with self.state_lock:
            self.state[step.urn] = values

    def _network(self, step: Step, result: StepResult) -> None:
        from rehearsal.dockerapi import network_create_kwargs

        client = self.docker(step.host)
        recorded = self._recorded(step)
        if recorded:
            network = client.networks.get(recorded["id"])
            result.resource_id = network.id
            return
        network = client.networks.create(**network_create_kwargs(step.inputs))
        result.resource_id = network.id
        self._record(step, id=network.id)

    def _image(self, step: Step, result: StepResult) -> None:
        import docker

        client = self.docker(step.host)
        reference = step.inputs["name"]
        recorded = self._recorded(step)
        if recorded and recorded.get("reference", reference) == reference:
            result.resource_id = client.images.get(reference).id
            if result.resource_id != recorded["id"]:
                raise RuntimeError(f"image {reference} changed from {recorded['id']} to {result.resource_id}")
            return
        if recorded and not self.expect_changes:
            raise RuntimeError(f"image {recorded['reference']} became {reference} on run {self.run_no}, "
                               "which expects no change")
        try:
            image = client.images.get(reference)
        except docker.errors.ImageNotFound:
            repository, _, tag = reference.rpartition(":") if ":" in reference.split("/")[-1] else (reference, "", "latest")
            image = client.images.pull(repository, tag=tag)
        result.resource_id = image.id
        if recorded:  # a new reference replaces the RemoteImage (keepLocally: the old one stays)
            result.changes = 1
            result.changed = [f"image {recorded['reference']} replaced by {reference}"]
        self._record(step, id=image.id, reference=reference)

    def _container(self, step: Step, result: StepResult) -> None:
        from rehearsal.dockerapi import UnhealthyError, create_container, remove_container

        client = self.docker(step.host)
        recorded = self._recorded(step)
        digest = _digest(step.inputs)
        if not recorded:
            name = container_name(step)
            try:
                container = create_container(client, step.inputs, name=name)
            except UnhealthyError as exc:
                # The provider's failed create: Pulumi records the container (with its error)
                # and replaces it on the next update, so it is kept here as a failed one.
                self._record(step, id=exc.container.id, name=name, inputs=FAILED_CREATE,
                             failed=[])
                raise
            result.resource_id = container.id
            self._record(step, id=container.id, name=name, inputs=digest)
            return
        import docker

        name = recorded.get("name") or container_name(step)
        try:
            old = client.containers.get(recorded["id"])
        except docker.errors.NotFound:
            raise RuntimeError(f"container {name} ({recorded['id'][:12]}) is gone after the first run") from None
        if recorded.get("inputs") in (None, digest):
            result.resource_id = old.id
            if old.status != "running":
                raise RuntimeError(f"container {name} is {old.status} on run {self.run_no}")
            return
        if not self.expect_changes and recorded.get("inputs") != FAILED_CREATE:
            raise RuntimeError(f"container {name}: its inputs changed on run {self.run_no}, "
                               "which expects no change")
        # A replacement, as `pulumi up` makes it: the new container gets a fresh auto-name
        # suffix (here derived from its inputs, so a rerun of the same change finds the same
        # name). Delete-first removes the old one before; create-before-delete creates the new
        # one next to it (gated by `wait`) and removes the old one when the whole run is done,
        # as the engine deletes replaced resources last.
        new_name = f"{step.name}-{_digest([step.urn, digest])[:7]}"
        if step.delete_before_replace:
            remove_container(old, recorded.get("remove_inputs") or {})
            with self.state_lock:  # gone: a failed create below leaves nothing to keep
                self.state.pop(step.urn, None)
            result.changed = [f"container {name} replaced delete-first by {new_name}"]
        try:
            container = create_container(client, step.inputs, name=new_name)
        except UnhealthyError as exc:
            # The provider's create fails and leaves the unhealthy container; Pulumi keeps the
            # old one (create-before-delete) and replaces the failed one on the next update.
            if step.delete_before_replace:
                self._record(step, id=exc.container.id, name=new_name, inputs=FAILED_CREATE, failed=[])
            else:
                self._record(step, **{**recorded, "failed": [*recorded.get("failed", []), exc.container.id]})
            raise
        result.changes = 1
        if not step.delete_before_replace:
            result.changed = [f"container {name} replaced create-before-delete by {new_name}"]
            with self.state_lock:
                self.pending_deletes.append({"id": old.id, "host": step.host, "name": name,
                                             "inputs": recorded.get("remove_inputs") or {}})
        for failed in recorded.get("failed", []):
            self.pending_deletes.append({"id": failed, "host": step.host, "name": failed[:12], "inputs": {}})
        result.resource_id = container.id
        self._record(step, id=container.id, name=new_name, inputs=digest,
                     remove_inputs={k: step.inputs[k] for k in ("destroyGraceSeconds",) if k in step.inputs})

    def _delete_replaced(self, results: dict[str, "StepResult"]) -> list[str]:
        """Remove the containers that create-before-delete replacements left (the engine's last
        phase); returns what it removed. A run with a failed step deletes nothing (`pulumi up`
        stops before its deletes): they wait in the state for the next run."""
        import docker

        with self.state_lock:
            pending = self.state.pop(PENDING_DELETES, []) + self.pending_deletes
            self.pending_deletes = []
        if any(r.status in ("failed", "blocked") for r in results.values()):
            with self.state_lock:
                self.state[PENDING_DELETES] = pending
            return []
        from rehearsal.dockerapi import remove_container

        removed = []
        for item in pending:
            try:
                remove_container(self.docker(item["host"]).containers.get(item["id"]), item["inputs"])
            except docker.errors.NotFound:
                continue
            removed.append(item["name"])
            print(f"[run {self.run_no}] {item['host']}: replaced container {item['name']} removed",
                  file=sys.stderr, flush=True)
        return removed

    def _write_progress(self, results: dict[str, "StepResult"], running: Iterable[str]) -> None:
        # What a run that is killed (its timeout) leaves for the report: the steps it finished
        # and the ones it was in the middle of; written whole, then renamed, so never half.
        if self.progress_path is None:
            return
        partial = self.progress_path.with_suffix(".tmp")
        partial.write_text(json.dumps({"done": [asdict(r) for r in results.values()],
                                       "running": sorted(running)}))
        partial.replace(self.progress_path)

    def converge(self) -> list[StepResult]:
        steps = {s.urn: s for s in self.capture.steps}
        waiting = {urn: {d for d in s.depends if d in steps} for urn, s in steps.items()}
        results: dict[str, StepResult] = {}
        order = [s.urn for s in self.capture.steps]
        running: dict[Any, str] = {}
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            while len(results) < len(steps):
                for urn in order:
                    if urn in results or urn in running.values():
                        continue
                    deps = waiting[urn]
                    failed = [d for d in deps if d in results and results[d].status in ("failed", "blocked")]
                    if failed:
                        s = steps[urn]
                        results[urn] = StepResult(urn=urn, name=s.name, host=s.host, kind=s.kind,
                                                  run=self.run_no, status="blocked",
                                                  error=f"blocked by {steps[failed[0]].name}")
                        continue
                    if all(d in results for d in deps) and len(running) < self.workers:
                        running[pool.submit(self.execute, steps[urn])] = urn
                if not running:
                    if len(results) < len(steps) and not any(
                            u not in results and all(d in results for d in waiting[u]) for u in order):
                        raise RuntimeError("no step can start: a dependency cycle")
                    continue
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    urn = running.pop(future)
                    results[urn] = future.result()
                    r = results[urn]
                    self._write_progress(results, running.values())
                    print(f"[run {self.run_no}] {r.host}: {r.name} {r.status} ({r.seconds:.1f}s"
                          + (f", {r.changes} changes" if r.changes is not None else "") + ")"
                          + (f" {r.error}" if r.error else ""), file=sys.stderr, flush=True)
        self._delete_replaced(results)
        self.state_path.write_text(json.dumps(self.state, indent=1))
        self.ssh.close()
        for client in self.docker_clients.values():
            client.close()
        return [results[urn] for urn in order]


def _digest(value: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _quiet_ssh_pipe_teardown(unraisable: Any, default=sys.unraisablehook) -> None:
    # docker's ssh transport flushes the ssh process's stdin when a pooled connection is
    # garbage-collected; if ssh already exited that is a BrokenPipeError with nothing lost.
    if isinstance(unraisable.exc_value, BrokenPipeError):
        return
    default(unraisable)


def progress_path(results: Path) -> Path:
    """Where a run writes its progress (``{"done": [StepResult...], "running": [urn...]}``)
    next to its final ``results``: all a killed run leaves behind."""
    return results.with_name(results.stem + ".progress.json")


def main(argv: Optional[list[str]] = None) -> int:
    sys.unraisablehook = _quiet_ssh_pipe_teardown
    parser = argparse.ArgumentParser(prog="python -m rehearsal.converge",
                                     description="Converge a captured stack onto the lab's boxes "
                                     "(run inside the lab's network namespace).")
    parser.add_argument("plan", type=Path, help="overlaid capture JSON (StackCapture.to_json)")
    parser.add_argument("results", type=Path, help="where to write the step results JSON")
    parser.add_argument("--workdir", type=Path, required=True, help="state, ssh config, known_hosts")
    parser.add_argument("--run", type=int, default=1)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--expect-changes", action="store_true",
                        help="a run after a config change: changes are expected, changed containers replaced")
    args = parser.parse_args(argv)
    capture = StackCapture.from_json(json.loads(args.plan.read_text()))
    results = Converger(capture, args.workdir, args.run, args.workers, args.expect_changes,
                        progress_path=progress_path(args.results)).converge()
    args.results.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
