"""One container type for every host (droplets and on-prem VPS nodes) and its pure planner.

``ContainerSpec`` is both the config schema of a container and the input of the planner that
turns it into ``pulumi_docker.Container`` arguments with the hardening every container gets:
pinned image, memory and CPU limits, healthcheck, log rotation, no-new-privileges, all
capabilities dropped unless listed, never privileged, and ports bound by tier.
"""

from __future__ import annotations

import datetime
import posixpath
import re
from typing import Annotated, Literal

import pulumi
from typing import Iterator

from pydantic import AfterValidator, Field, Strict, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from components.tiers import Tier, container_bind_address
from validation.rules import Finding, RuleContext, rule
from validation.formats import check_pinned_image, looks_secret_name, parse_image_reference
from validation.fields import IsoDate, IsoDateTime, ResourceName, StrictModel

LOG_OPTS = {"max-size": "10m", "max-file": "5"}
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def image_is_pinned(image: str) -> bool:
    """A valid OCI reference pinned by a tag other than ``latest`` or a full sha256 digest."""
    try:
        return parse_image_reference(image).pinned
    except ValueError:
        return False


def looks_secret(env_name: str) -> bool:
    return looks_secret_name(env_name)


PinnedImage = Annotated[str, AfterValidator(check_pinned_image)]

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

"""An image reference (OCI grammar) pinned by a tag other than latest or by a sha256 digest."""


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
        return check_exec_form(value)


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
under it: every service directory is). The policy pack keeps the same list (policy/rules/containers.py)."""


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
    container_path: str = Field(pattern=r"^/[^\s]*$", description="absolute path in the container")
    read_only: bool = Field(default=True, description="mounted read-only unless false")

    @model_validator(mode="after")
    def _not_the_host(self) -> "Mount":
        path = normal_host_path(self.host_path)
        if path in RUNTIME_SOCKETS:
            raise ValueError(f"{self.host_path} is the container runtime's socket: mounting it gives the "
                             "container the host, even read-only (CIS Docker 5.31); remove the mount")
        self._check_host_dir(path)
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


def _major(reference: str) -> str | None:
    """The leading number of an image tag (``17`` of ``17.2-bookworm``, ``7`` of ``7.0.15``), or
    None when the tag does not start with one (``RELEASE.2025-04-22T22-12-26Z``)."""
    tag = parse_image_reference(reference).tag or ""
    digits = re.match(r"^v?(\d+)", tag)
    return digits.group(1) if digits else None


class ContainerSpec(StrictModel):
    """A service container. Limits and a healthcheck are required: the audit found both missing."""

    name: ResourceName = Field(description="service name; also its DNS alias on the host network")
    image: PinnedImage = Field(description="image pinned by tag (not latest) or by @sha256 digest")
    # Strict(False): a stack file names the tier as text; the models are strict otherwise.
    tier: Annotated[Tier, Strict(False)] = Field(default=Tier.APP,
                                                 description="tier of the service: edge, app, data or mgmt")
    port: int | None = Field(default=None, gt=0, lt=65536,
                             description="port the service listens on inside the container")
    publish: list[PublishedPort] = Field(
        default_factory=list,
        description="ports published on the host; only edge containers listen on all interfaces, "
        "the others on loopback or the host's private address",
    )
    memory_mb: int = Field(gt=0, le=262144, description="hard memory limit in MiB, at most 262144 (256 GiB, the "
                           "largest DigitalOcean Droplet; where the host is known its size bounds it too)")
    memory_reservation_mb: int | None = Field(default=None, gt=0, le=262144,
                                              description="soft memory limit in MiB, below memory_mb")

    cpus: float = Field(gt=0, le=64, description="CPU limit in cores, e.g. 0.5")
    healthcheck: HealthCheck = Field(description="how Docker decides the container is healthy")
    env: dict[str, str] = Field(default_factory=dict,
                                description="plain environment variables (no secrets)")
    secret_env: dict[str, str] = Field(
        default_factory=dict,
        description="environment variable -> secret config key (set with pulumi config set "
        "--secret platform:<key>)",
    )
    user: str | None = Field(default=None, pattern=r"^[a-z0-9_-]+(:[a-z0-9_-]+)?$",
                             description="user[:group] to run as, never root or uid 0; unset keeps "
                             "the image's USER (an image that must start as root leaves it unset and "
                             "gets a named waiver of docker-container-configure-non-root-user in "
                             "policy/config.STACK.json)")
    read_only_root: bool = Field(default=False, description="mount the root filesystem read-only")
    cap_add: list[Literal["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID",
                          "NET_BIND_SERVICE", "KILL"]] = Field(
        default_factory=list,
        description="capabilities kept; all others are dropped",
    )
    mounts: list[Mount] = Field(default_factory=list, description="bind mounts from the host")
    command: list[str] | None = Field(default=None, description="overrides the image's CMD")
    restart: Literal["unless-stopped", "always", "on-failure"] = Field(
        default="unless-stopped", description="Docker restart policy")
    maintenance: Maintenance | None = Field(
        default=None, description="acknowledges a planned image patch of a container that writes "
        "data (its replacement), with the backup and restore test it needs; README \"Patching a "
        "datastore's image in production\"")

    @field_validator("user")
    @classmethod
    def _not_root(cls, value: str | None) -> str | None:
        if value is not None and value.split(":", 1)[0] in ("root", "0"):
            raise ValueError("runs the service as root (CIS Docker 4.1); set the image's unprivileged "
                             "uid:gid (e.g. 1000:1000). An image that must start as root leaves user "
                             "unset and is named in a waiver of docker-container-configure-non-root-user "
                             "in policy/config.STACK.json, with its reason")
        return value

    @field_validator("env")
    @classmethod
    def _no_plaintext_secrets(cls, value: dict[str, str]) -> dict[str, str]:
        return check_env(value)

    @field_validator("secret_env")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        return check_env_names(value)

    @field_validator("command")
    @classmethod
    def _exec_form(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else check_exec_form(value)


@rule(ContainerSpec)
def _reservation_below_limit(spec: ContainerSpec, ctx: RuleContext) -> Iterator[Finding]:
    if spec.memory_reservation_mb is not None and spec.memory_reservation_mb >= spec.memory_mb:
        yield Finding(("memory_reservation_mb",), f"({spec.memory_reservation_mb}) must be below "
                      f"{ctx.where('memory_mb')} ({spec.memory_mb})")


@rule(ContainerSpec)
def _not_plain_and_secret(spec: ContainerSpec, ctx: RuleContext) -> Iterator[Finding]:
    for key in sorted(set(spec.env) & set(spec.secret_env)):
        yield Finding(("secret_env", key), f"is also set in {ctx.where('env', key)}; keep one")


@rule(ContainerSpec)
def _maintenance(spec: ContainerSpec, ctx: RuleContext) -> Iterator[Finding]:
    """A maintenance acknowledgement covers one image patch of a container that writes data.
    Major versions: PostgreSQL's minor releases never change the storage format, a major one
    needs pg_upgrade or a dump and restore (https://www.postgresql.org/support/versioning/);
    MongoDB and Redis upgrade their data files between major versions too, so a major change is
    a migration, not an image patch."""
    plan = spec.maintenance
    if plan is None:
        return
    if not any(not m.read_only for m in spec.mounts):
        yield Finding(("maintenance",), "only a container that writes data (a mount with read_only: "
                      "false) needs a maintenance acknowledgement; remove it")
    if plan.image != spec.image:
        yield Finding(("maintenance", "image"), f"acknowledges {plan.image} but {ctx.where('image')} is "
                      f"{spec.image}; update the acknowledgement for this change (with its own backup and "
                      "restore test) or remove it")
    if plan.replaces == plan.image:
        yield Finding(("maintenance", "replaces"), "is the same image as maintenance.image; there is "
                      "nothing to acknowledge, remove maintenance")
        return
    old, new = parse_image_reference(plan.replaces), parse_image_reference(plan.image)
    if (old.domain, old.path) != (new.domain, new.path):
        yield Finding(("maintenance", "replaces"), f"is another repository than {plan.image}; an "
                      "acknowledgement covers a patch of one image, a change of image is a migration")
    elif _major(plan.replaces) != _major(plan.image):
        yield Finding(("maintenance", "replaces"), f"{plan.replaces} to {plan.image} changes the major "
                      "version: the data files need an upgrade (pg_upgrade, or a dump and restore), "
                      "which a container replacement does not do")
    if plan.restore_test > plan.window_start.date():
        yield Finding(("maintenance", "restore_test"), f"({plan.restore_test}) is after the window "
                      f"({plan.window_start.date()}); the restore test of the backup goes green before it")


def check_env_names(env: dict[str, str]) -> dict[str, str]:
    import re

    bad = sorted(k for k in env if not re.match(ENV_NAME, k))
    if bad:
        raise ValueError(f"{', '.join(bad)}: environment variable names are letters, digits and _, "
                         "not starting with a digit")
    return env


SECRET_ENV_NAME = ("the name says it holds a secret, and env is plain text in the stack file; move it "
                   "to secret_env (the variable -> a secret config key set with `pulumi config set "
                   "--secret platform:<product>_<name>`, which prompts for the value)")
"""The fix for a plain env var named like a secret (``looks_secret_name``: ``DB_PASS``,
``SENTRY_DSN``...). No braces: it is a pydantic message template."""


ENV_STRING_MAX_BYTES = 32 * 4096
"""Linux's MAX_ARG_STRLEN (include/uapi/linux/binfmts.h: 32 pages, the terminating NUL
included): the longest one ``NAME=value`` string execve takes, so the longest env var a
container's process can start with."""


_TLS_OFF_IN_VALUE = re.compile(r"\b(sslmode=(?:disable|allow|prefer)|(?:tls|ssl)=false|"
                               r"tls(?:Insecure|AllowInvalidCertificates|AllowInvalidHostnames)=true)\b",
                               re.IGNORECASE)
_TLS_OFF_BY_NAME = {"NODE_TLS_REJECT_UNAUTHORIZED": ("0",), "PGSSLMODE": ("disable", "allow", "prefer")}


def tls_switched_off(name: str, value: str) -> str | None:
    """The setting by which env var ``name=value`` turns TLS or certificate verification off
    (``sslmode=disable``, ``tls=false``, ``NODE_TLS_REJECT_UNAUTHORIZED=0``...), or None. The
    same list as the policy pack's platform-connection-disallow-tls-disabled (CWE-295, CWE-319):
    libpq's allow/prefer fall back to plain text, so only require/verify-* keep TLS."""
    if value.strip().lower() in _TLS_OFF_BY_NAME.get(name, ()):
        return f"{name}={value.strip()}"
    match = _TLS_OFF_IN_VALUE.search(value)
    return match.group(1) if match else None


def check_env(env: dict[str, str]) -> dict[str, str]:
    """Plain env: valid names, each ``NAME=value`` shorter than ``ENV_STRING_MAX_BYTES``, none
    that switches TLS off (``tls_switched_off``) and none that holds a secret by its name.

    Raises ValueError for a bad name, and a ValidationError located at each secret-looking
    variable (pydantic nests it under the field: ``...env.API_TOKEN``); the value is never
    quoted."""
    check_env_names(env)
    too_long = sorted(k for k, v in env.items() if len(f"{k}={v}".encode()) >= ENV_STRING_MAX_BYTES)
    if too_long:
        raise ValidationError.from_exception_data("env", [
            InitErrorDetails(type=PydanticCustomError("rule", f"NAME=value is longer than "
                             f"{ENV_STRING_MAX_BYTES - 1} bytes, more than Linux lets one environment "
                             "string be (MAX_ARG_STRLEN, execve fails with E2BIG); put the data in a file"),
                             loc=(key,), input="[value not shown]")
            for key in too_long])
    tls_off = {k: off for k, v in env.items() if (off := tls_switched_off(k, v))}
    if tls_off:
        raise ValidationError.from_exception_data("env", [
            InitErrorDetails(type=PydanticCustomError("rule", f"{off} switches TLS or certificate verification "
                             "off; remove it and verify the server with the CA the program mounts "
                             "(sslmode=verify-full, tls=true)"), loc=(key,), input="[value not shown]")
            for key, off in sorted(tls_off.items())])
    secret_like = sorted(k for k in env if looks_secret(k))
    if secret_like:
        raise ValidationError.from_exception_data("env", [
            InitErrorDetails(type=PydanticCustomError("rule", SECRET_ENV_NAME), loc=(key,),
                             input="[value not shown]")
            for key in secret_like])
    return env


def replaced_delete_first(spec: ContainerSpec, extra_mounts: list[Mount] | None = None, *,
                          fixed_address: bool = False) -> bool:
    """Whether a replacement of the container must delete the old one first, because the two
    could not run at once: it publishes host ports (only one container can hold them), it has
    a fixed address on its network (``fixed_address``: an egress allow-list matches it; Docker
    refuses a second container on it, "Address already in use", so a create-first replacement
    would fail every deploy), or it has a writable mount (its state: two containers on one data
    directory contend for it, as two Prometheus for one TSDB lock, or worse, two databases write
    the same files). Such a replacement is a maintenance step (the service is down from the old
    one's removal until the new one is healthy; README "Deploys without downtime").

    Every other container is stateless and is replaced create-before-delete: the new one starts
    next to the old one under a new name (Pulumi's auto-name suffix is drawn anew for a
    replacement) and shares its network alias; ``wait`` holds the update until it is healthy,
    and only then is the old one removed."""
    return (bool(spec.publish) or fixed_address
            or any(not m.read_only for m in [*spec.mounts, *(extra_mounts or [])]))


# The longest a deploy waits for one container to become healthy, in seconds.
WAIT_TIMEOUT_MAX_S = 600


def health_wait_timeout_s(check: HealthCheck) -> int:
    """Seconds the Docker provider's ``wait`` gives a new container to become healthy
    (``wait_timeout``): by then Docker has decided either way.

    Docker's health model (Dockerfile reference, HEALTHCHECK): the first probe runs ``interval``
    after the start, each may take ``timeout``, and failures inside ``start_period`` do not
    count, so a container is unhealthy at the latest after ``start_period`` plus ``retries + 1``
    probe cycles (``interval + timeout`` each). Capped at ``WAIT_TIMEOUT_MAX_S`` (600 s) so that
    one bad image cannot hold a deploy for longer: a check that needs more is reported by the
    timeout, not waited out. Example: the defaults (30 s, 5 s, 3 retries, 30 s start period) give
    30 + 4 * 35 = 170 s."""
    cycles = (check.retries + 1) * (check.interval_s + check.timeout_s)
    return min(WAIT_TIMEOUT_MAX_S, check.start_period_s + cycles)


def container_plan(spec: ContainerSpec, *, network: pulumi.Input[str], stack: str,
                   private_address: str | None = None,
                   extra_env: dict[str, str] | None = None,
                   extra_mounts: list[Mount] | None = None) -> dict:
    """Plain ``pulumi_docker.Container`` keyword arguments for a spec (no secrets, no image id).

    The caller adds ``image`` (the pulled image id) and the secret environment variables.
    """
    bind = container_bind_address(spec.tier, private_address)
    env = {**spec.env, **(extra_env or {})}
    plan: dict = {
        "restart": spec.restart,
        "memory": spec.memory_mb,
        "cpus": f"{spec.cpus:g}",
        "healthcheck": {
            "tests": ["CMD", *spec.healthcheck.command],
            "interval": f"{spec.healthcheck.interval_s}s",
            "timeout": f"{spec.healthcheck.timeout_s}s",
            "retries": spec.healthcheck.retries,
            "start_period": f"{spec.healthcheck.start_period_s}s",
        },
        "log_driver": "json-file",
        "log_opts": dict(LOG_OPTS),
        "security_opts": ["no-new-privileges:true"],
        "privileged": False,
        "capabilities": {"drops": ["ALL"], **({"adds": list(spec.cap_add)} if spec.cap_add else {})},
        "networks_advanced": [{"name": network, "aliases": [spec.name]}],
        "ports": [{"internal": p.container_port, "external": p.host_port,
                   "ip": "127.0.0.1" if p.loopback else bind, "protocol": "tcp"} for p in spec.publish],
        "envs": [f"{k}={v}" for k, v in sorted(env.items())],
        "volumes": [{"host_path": m.host_path, "container_path": m.container_path,
                     "read_only": m.read_only} for m in [*spec.mounts, *(extra_mounts or [])]],
        "labels": [{"label": "platform.stack", "value": stack},
                   {"label": "platform.service", "value": spec.name},
                   {"label": "platform.tier", "value": spec.tier.value},
                   *(spec.maintenance.labels() if spec.maintenance else [])],
        "read_only": spec.read_only_root,
        "must_run": True,
        # Health-gated: the provider's create returns only once Docker calls the container
        # healthy, so a create-before-delete replacement keeps the old one until then, and a bad
        # image fails the update with the old one still serving. `wait` and `wait_timeout`
        # update in place (no replacement), so adding them replaces nothing.
        "wait": True,
        "wait_timeout": health_wait_timeout_s(spec.healthcheck),
    }
    if spec.memory_reservation_mb:
        plan["memory_reservation"] = spec.memory_reservation_mb
    if spec.user:
        plan["user"] = spec.user
    if spec.read_only_root:
        plan["tmpfs"] = {"/tmp": "rw,noexec,nosuid,size=64m"}
    if spec.command:
        plan["command"] = list(spec.command)
    return plan
