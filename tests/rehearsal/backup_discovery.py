"""Which backup jobs a host of a stack capture runs, read from the stack's own commands: what
the backup drill (tests/rehearsal/backup_drill.py) starts on that host, and what it cannot.

- A job is an ``R2Backup``'s ``{job}-backup-install`` command on the host; its kind is the
  header of the scripts it installs (``Rendered by components/backupscripts.py: ... of JOB
  (KIND).``), its tool image the one its ``TOOL_() { docker run ... IMAGE TOOL "$@"; }``
  functions run.
- Its database is ``PGDATABASE`` (or ``MONGO_DATABASE``) of its ``{job}-backup-credentials``
  command; a ``pitr`` job's declared RPO is its ship script's ``# Ship interval: N s, for a
  declared RPO of M min.``
- A job is *not proven* when the lab's stand-in for its tool image is a stub
  (``rehearsal.standin_plan.RULES``: no MongoDB or MinIO server can be had here); the reason is the
  rule's note.
- The monitoring host is the product's host that runs the container labelled
  ``platform.service=prometheus``.

Errors: ``DiscoveryError`` naming the host and the command whose shape is not understood.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from rehearsal.capture import StackCapture, Step
from rehearsal.image_contracts import split_reference
from rehearsal.standin_plan import RULES

_HEADER = re.compile(r"Rendered by components/backupscripts\.py: [^\n]*? of (\S+) "
                     r"\((postgres|mongodb|redis|minio|pitr)\)\.")
_TOOL = re.compile(r'(\w+)_\(\) \{ docker run [^\n]*? (\S+) \1 "\$@"; \}')
_RPO = re.compile(r"# Ship interval: \d+ s, for a declared RPO of (\d+) min\.")


class DiscoveryError(Exception):
    """A host's backup commands have a shape the discovery does not understand."""


@dataclass(frozen=True)
class Job:
    name: str
    """The job's name: its env file, restic host, state directory and metric label."""
    kind: str
    """postgres, mongodb, redis, minio or pitr."""
    tool_image: str
    """The image its tools run from ('' in host mode)."""
    database: str = ""
    """PGDATABASE (postgres, pitr) or MONGO_DATABASE (mongodb); '' otherwise."""
    rpo_minutes: Optional[int] = None
    """A pitr job's declared RPO; None for a dump."""
    not_proven: str = ""
    """Why the lab cannot run it (the stub rule's note); '' when it can."""

    @property
    def backup_unit(self) -> str:
        """The unit its timer starts to back up: a dump, or a pitr job's base backup."""
        return f"platform-{'base-backup' if self.kind == 'pitr' else 'backup'}-{self.name}.service"

    @property
    def restore_unit(self) -> str:
        """The unit that tests a restore: the restore test, or a pitr job's PITR test."""
        return f"platform-{'pitr-test' if self.kind == 'pitr' else 'restore-test'}-{self.name}.service"


@dataclass(frozen=True)
class HostBackups:
    host: str
    jobs: tuple[Job, ...]
    monitoring: Optional[str]
    """The host whose Prometheus scrapes this one; None when the product has none."""

    @property
    def drilled(self) -> tuple[Job, ...]:
        """The jobs the lab can run, by name."""
        return tuple(j for j in self.jobs if not j.not_proven)

    @property
    def dumps(self) -> tuple[Job, ...]:
        """The drilled jobs that dump (every kind but pitr)."""
        return tuple(j for j in self.drilled if j.kind != "pitr")

    @property
    def pitr(self) -> Optional[Job]:
        """The host's one PITR job (one per cluster; a host runs one cluster), or None."""
        found = [j for j in self.drilled if j.kind == "pitr"]
        if len(found) > 1:
            raise DiscoveryError(f"{self.host}: more than one pitr job ({', '.join(j.name for j in found)})")
        return found[0] if found else None

    @property
    def not_proven(self) -> dict[str, str]:
        """{job name: why the lab cannot run it}."""
        return {j.name: j.not_proven for j in self.jobs if j.not_proven}


def _text(step: Step) -> str:
    return "".join(str(step.inputs.get(key) or "") for key in ("create", "stdin"))


def _stub_note(image: str) -> str:
    if not image:
        return ""
    _, path, _ = split_reference(image)
    rule = next((r for r in RULES if re.match(r.pattern, path)), None)
    return rule.note if rule is not None and rule.kind == "stub" else ""


def _job(host: str, install: Step, credentials: Optional[Step]) -> Job:
    text = _text(install)
    headers = set(_HEADER.findall(text))
    if len(headers) != 1:
        raise DiscoveryError(f"{host}: {install.name} installs scripts of {sorted(headers) or 'no job'}; "
                             "expected one job's (components/backupscripts.py headers)")
    (name, kind), = headers
    images = {image for _, image in _TOOL.findall(text)}
    if len(images) > 1:
        raise DiscoveryError(f"{host}: {install.name} runs tools from several images: {sorted(images)}")
    image = images.pop() if images else ""
    database = ""
    if credentials is not None:
        found = re.search(r'^(?:PGDATABASE|MONGO_DATABASE)="([^"]*)"$', _text(credentials), re.M)
        database = found.group(1) if found else ""
    rpo = None
    if kind == "pitr":
        found = _RPO.search(text)
        if not found:
            raise DiscoveryError(f"{host}: {install.name} has no '# Ship interval' line in its ship script")
        rpo = int(found.group(1))
    return Job(name=name, kind=kind, tool_image=image, database=database, rpo_minutes=rpo,
               not_proven=_stub_note(image))


def discover(capture: StackCapture, host: str) -> HostBackups:
    """The backup jobs ``host`` runs in ``capture``, sorted by name, and its monitoring host.
    Raises DiscoveryError for an unknown host or a command of an unknown shape."""
    if host not in capture.hosts:
        raise DiscoveryError(f"{host}: not a host of the {capture.stack} capture "
                             f"(hosts: {', '.join(sorted(capture.hosts))})")
    steps = {s.name: s for s in capture.host_steps(host) if s.kind == "command"}
    jobs = [_job(host, step, steps.get(name.removesuffix("-install") + "-credentials"))
            for name, step in sorted(steps.items()) if name.endswith("-backup-install")]
    product = capture.hosts[host].product
    monitoring = sorted({s.host for s in capture.steps if s.kind == "container"
                         and capture.hosts[s.host].product == product
                         and {"label": "platform.service", "value": "prometheus"} in (s.inputs.get("labels") or [])})
    if len(monitoring) > 1:
        raise DiscoveryError(f"{host}: product {product} has Prometheus on several hosts: {monitoring}")
    return HostBackups(host=host, jobs=tuple(sorted(jobs, key=lambda j: j.name)),
                       monitoring=monitoring[0] if monitoring else None)
