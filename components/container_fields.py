"""The parts of a container's config (``components.containers.ContainerSpec``): its image
reference, healthcheck, published ports, bind mounts and the acknowledgement of a planned image
patch (``Maintenance``), each validated at the config boundary."""

from __future__ import annotations

import datetime
import posixpath
import re
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from validation.fields import IsoDate, IsoDateTime, StrictModel
from validation.formats import check_pinned_image, parse_image_reference


def image_is_pinned(image: str) -> bool:
    """A valid OCI reference pinned by a tag other than ``latest`` or a full sha256 digest."""
    try:
        return parse_image_reference(image).pinned
    except ValueError:
        return False


PinnedImage = Annotated[str, AfterValidator(check_pinned_image)]
"""An image reference (OCI grammar) pinned by a version tag (one with a digit) or by a sha256 digest."""


def check_exec_form(command: list[str]) -> list[str]:
    """An exec-form command (``[executable, *arguments]``): no empty or blank item.

    Docker runs ``command[0]`` without a shell, so an empty executable never starts and a
    healthcheck made of it keeps the container unhealthy forever; an empty argument is
    almost always a templating slip. Raises ValueError naming the first bad index."""
    for index, item in enumerate(command):
        if not item.strip():
            what = "the executable" if index == 0 else "an argument"
            raise ValueError(f"item {index} is {what} and is empty; exec form runs it without a shell, "
                             "so give every item text")
    return command


# The longest a deploy waits for one container to become healthy, in seconds.
WAIT_TIMEOUT_MAX_S = 600

DOCKER_TEST_FORMS = ("CMD", "CMD-SHELL", "NONE")
"""The first word of a Docker healthcheck test (Docker Engine API, ``HealthConfig.Test``)."""


class HealthCheck(StrictModel):
    command: list[str] = Field(
        min_length=1,
        description="command run inside the container (exec form, no shell unless you call one); "
        "exit 0 means healthy",
    )
    interval_s: int = Field(default=30, gt=0, le=600, description="seconds between checks")
    timeout_s: int = Field(default=5, gt=0, le=120, description="seconds before a check fails")
    retries: int = Field(default=3, gt=0, le=20, description="failures before unhealthy")
    start_period_s: int = Field(default=30, ge=0, le=900,
                                description="grace period after start, in seconds")

    @field_validator("command")
    @classmethod
    def _exec_form(cls, value: list[str]) -> list[str]:
        check_exec_form(value)
        # Docker's HEALTHCHECK test starts with its form (CMD, CMD-SHELL, NONE); the program adds
        # CMD itself, so a Compose-style list would run a program named "CMD-SHELL" and the
        # container would never be healthy (docs.docker.com/reference/dockerfile/#healthcheck).
        if value[0].strip().upper() in DOCKER_TEST_FORMS:
            raise ValueError(
                f"item 0 is {value[0]!r}, Docker's test form, which the program adds itself (CMD): give the "
                "command alone, e.g. [curl, -f, http://localhost/health], or [/bin/sh, -c, '...'] for a shell")
        return value

    @model_validator(mode="after")
    def _first_probe_within_the_wait(self) -> "HealthCheck":
        # Docker runs the first probe `interval` after the start (Docker Engine before 25 has
        # no start interval), so a healthy container is seen healthy only after interval plus
        # that probe; a deploy that waits at most WAIT_TIMEOUT_MAX_S would time out every time.
        if self.interval_s + self.timeout_s >= WAIT_TIMEOUT_MAX_S:
            message = (f"interval_s + timeout_s is {self.interval_s + self.timeout_s} s, but a deploy waits at "
                       f"most {WAIT_TIMEOUT_MAX_S} s for a new container to become healthy and its first probe "
                       "ends only then: keep their sum under that (e.g. interval_s: 30)")
            raise ValidationError.from_exception_data("HealthCheck", [InitErrorDetails(
                type=PydanticCustomError("rule", message), loc=("interval_s",), input=self.interval_s)]) from None
        return self


class PublishedPort(StrictModel):
    host_port: int = Field(gt=0, lt=65536, description="port on the host")
    container_port: int = Field(gt=0, lt=65536, description="port inside the container")
    loopback: bool = Field(default=False, description="publish on 127.0.0.1 only (reached through an SSH tunnel)")


RUNTIME_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
                   "/var/run/containerd/containerd.sock")
"""Host paths of the container runtime's API sockets (CIS Docker Benchmark v1.6.0 5.31)."""

SENSITIVE_HOST_DIRS = ("/boot", "/dev", "/etc", "/lib", "/proc", "/sys", "/usr", "/root", "/home", "/bin",
                       "/sbin", "/var/lib/docker", "/var/lib/kubelet", "/var/run", "/run")
"""Host directories no service container mounts, nor anything under them, read-only or not: the
"sensitive host system directories" of CIS Docker Benchmark v1.6.0 5.5 (/, /boot, /dev, /etc, /lib,
/proc, /sys, /usr) and KICS 1c1325ff "Volume Has Sensitive Host Directory" (/root, /home with their
SSH keys, the runtimes' state and socket directories). ``/`` itself is refused too (not what is
under it: every service directory is). The policy pack keeps the same list (policy/rules/container_isolation.py)."""


def normal_host_path(path: str) -> str:
    """The absolute ``path`` as the kernel resolves its ``.``, ``..`` and repeated slashes
    (``//run//x/../docker.sock`` is ``/run/docker.sock``); symlinks are not followed."""
    return posixpath.normpath("/" + path.lstrip("/"))


def sensitive_host_path(path: str) -> str | None:
    """The sensitive directory (``SENSITIVE_HOST_DIRS``, or ``/``) that the absolute host ``path``
    is or lies under once normalised (``/srv/../etc/x`` is ``/etc``), or None."""
    clean = normal_host_path(path)
    if clean == "/":
        return "/"
    return next((d for d in SENSITIVE_HOST_DIRS if clean == d or clean.startswith(d + "/")), None)


class Mount(StrictModel):
    """A bind mount of a service container. The host path is normalised before it is judged, so
    ``..`` and doubled slashes reach no socket or system directory."""

    host_path: str = Field(pattern=r"^/[^\s]*$", description="absolute path on the host, not /, not "
                           "under a sensitive host directory (CIS Docker 5.5: /etc, /root, /proc, ...)")
    container_path: str = Field(pattern=r"^/[^\s]*$", description="absolute path in the container, not /")
    read_only: bool = Field(default=True, description="mounted read-only unless false")

    @field_validator("container_path")
    @classmethod
    def _not_the_root(cls, value: str) -> str:
        if normal_host_path(value) == "/":
            raise ValueError("is the container's root: the mount would hide the image's whole "
                             "filesystem; mount at a directory such as /data")
        return value

    @model_validator(mode="after")
    def _not_the_host(self) -> "Mount":
        # A model validator (an exporter's rule reads read_only too), its error put at host_path.
        path = normal_host_path(self.host_path)
        try:
            if path in RUNTIME_SOCKETS:
                raise ValueError(f"{self.host_path} is the container runtime's socket: mounting it gives the "
                                 "container the host, even read-only (CIS Docker 5.31); remove the mount")
            self._check_host_dir(path)
        except ValueError as exc:
            raise ValidationError.from_exception_data("Mount", [InitErrorDetails(
                type=PydanticCustomError("rule", str(exc)),
                loc=("host_path",), input=self.host_path)]) from None
        return self

    def _check_host_dir(self, path: str) -> None:
        sensitive = sensitive_host_path(path)
        if sensitive == "/":
            raise ValueError("mounting the host's / gives the container the host, even read-only "
                             "(CIS Docker 5.5); mount the service's own directory under /srv")
        if sensitive:
            raise ValueError(f"{self.host_path} is under the sensitive host directory {sensitive} "
                             "(CIS Docker 5.5); mount the service's own directory under /srv")


class ExporterMount(Mount):
    """A mount of an exporter the program adds itself (node-exporter reads / read-only, cAdvisor
    /sys, /var/lib/docker and /dev/disk): the one named exemption from the sensitive-directory
    rule, never reachable from a stack file. The runtime socket stays refused; the policy pack
    excuses these containers by the waivers node-exporter-host-root and cadvisor-host-paths."""

    def _check_host_dir(self, path: str) -> None:
        if not self.read_only:
            raise ValueError("an exporter reads the host; mount it read_only")


MAINTENANCE_LABEL = "platform.maintenance."
"""Prefix of the container labels that carry a maintenance acknowledgement (``image``,
``replaces``, ``backup``, ``restore_test``, ``window``): ``synth diff`` and the policy pack read
them from the desired state (synth/replacements.py ``maintenance_of``)."""


WINDOW_AHEAD_DAYS_MAX = 90
"""A maintenance window starts at most this many days after today: the backup and restore test
it records are evidence for a change made soon, not a standing permission."""
RESTORE_TEST_AGE_DAYS_MAX = 30
"""The restore test went green at most this many days before the window's day: an older one
proves little about the backup (and the database) the window changes."""


class Maintenance(StrictModel):
    """A planned replacement of a container that writes data, acknowledged for one image change.

    The image patch of a self-hosted datastore (``postgres:17.2`` to ``17.3``) replaces its
    container: ``synth diff`` blocks that in production and the policy pack checks the
    acknowledgement. Stated here, it is accepted for exactly this change (``replaces`` to
    ``image``) once the runbook's steps are recorded: the backup taken for it and the day its
    restore test went green, no later than the window. Runbook: README "Patching a datastore's
    image in production". The acknowledgement stays until the next patch replaces it; removing it
    alone changes the container's labels, which replaces the container again."""

    image: PinnedImage = Field(description="the image the service moves to; equal to the service's image")
    replaces: PinnedImage = Field(description="the image the service runs now, same repository and major version")
    backup: str = Field(min_length=3, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._:/@+=(),-]*$",
                        description="the backup taken for this change: the restic snapshot id and "
                        "repository, or the dump's path")
    restore_test: IsoDate = Field(description="the day (UTC) the restore test of that backup "
                                        "went green; no later than the window's day")
    window_start: IsoDateTime = Field(description="start of the maintenance window, ISO 8601 "
                                            "in UTC, e.g. 2026-12-06T02:00:00Z")
    window_minutes: int = Field(default=60, ge=15, le=480, description="length of the window in minutes")

    @field_validator("window_start")
    @classmethod
    def _utc(cls, value: datetime.datetime) -> datetime.datetime:
        if value.tzinfo is None or value.utcoffset() != datetime.timedelta(0):
            raise ValueError("give the window in UTC, ending in Z (2026-12-06T02:00:00Z)")
        return value

    def labels(self) -> list[dict[str, str]]:
        """The container labels that carry it into the desired state (``MAINTENANCE_LABEL``)."""
        start = self.window_start.strftime("%Y-%m-%dT%H:%M:%SZ")
        return [{"label": MAINTENANCE_LABEL + key, "value": value} for key, value in (
            ("image", self.image), ("replaces", self.replaces), ("backup", self.backup),
            ("restore_test", self.restore_test.isoformat()),
            ("window", f"{start}/PT{self.window_minutes}M"))]


# A PostgreSQL major in a tag: pgvector's 0.8.0-pg17, a pg17 suffix or part.
_PG_MAJOR = re.compile(r"(?:^|[-_.])pg(\d+)(?=$|[-_.])")
# Repositories whose tag starts with the PostgreSQL major (postgres:17.2, postgis/postgis:16-3.4).
_POSTGRES_REPOSITORIES = ("postgres", "postgresql", "postgis")
# Repositories that carry PostgreSQL but version the tag by something else (pgvector 0.8.0):
# only a pgNN part names their PostgreSQL major.
_POSTGRES_EXTENSION_REPOSITORIES = ("pgvector",)


def image_major(reference: str) -> tuple[str, str] | None:
    """The major version of the data files an image writes, as (software, major):
    ``("PostgreSQL", "17")`` of ``pgvector/pgvector:0.8.0-pg17`` (a ``pgNN`` part of the tag)
    or of ``postgres:17.2-bookworm`` (the tag's leading number, for a PostgreSQL repository),
    ``("", "7")`` of ``mongo:7.0.15`` (the leading number, ``v`` allowed). None when the tag
    names none: a digest without a tag, ``RELEASE.2025-04-22T22-12-26Z``, or a pgvector tag
    without ``pgNN`` (its leading number is pgvector's, not PostgreSQL's)."""
    parsed = parse_image_reference(reference)
    tag = parsed.tag or ""
    repository = parsed.path.rsplit("/", 1)[-1]
    pg = _PG_MAJOR.search(tag)
    if pg:
        return ("PostgreSQL", str(int(pg.group(1))))
    if repository in _POSTGRES_EXTENSION_REPOSITORIES:
        return None
    digits = re.match(r"^v?(\d+)", tag)
    if not digits:
        return None
    return ("PostgreSQL" if repository in _POSTGRES_REPOSITORIES else "", str(int(digits.group(1))))
