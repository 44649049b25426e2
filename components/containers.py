"""One container type for every host (droplets and on-prem VPS nodes) and its pure planner.

``ContainerSpec`` is both the config schema of a container and the input of the planner that
turns it into ``pulumi_docker.Container`` arguments with the hardening every container gets:
pinned image, memory and CPU limits, healthcheck, log rotation, no-new-privileges, all
capabilities dropped unless listed, never privileged, and ports bound by tier. Its parts live in
``components.container_fields`` and its environment checks in ``components.container_env``;
the names other modules use are importable from here too.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Iterator, Literal

import pulumi
from pydantic import Field, Strict, field_validator

from components.container_env import check_env, check_env_names, tls_switched_off
from components.container_fields import (MAINTENANCE_LABEL, RESTORE_TEST_AGE_DAYS_MAX, RUNTIME_SOCKETS,
                                         SENSITIVE_HOST_DIRS, WAIT_TIMEOUT_MAX_S, WINDOW_AHEAD_DAYS_MAX,
                                         ExporterMount, HealthCheck, Maintenance, Mount, PinnedImage,
                                         PublishedPort, check_exec_form, image_is_pinned, image_major,
                                         normal_host_path, sensitive_host_path)
from components.tiers import Tier, container_bind_address
from validation.fields import ResourceName, StrictModel
from validation.formats import parse_image_reference
from validation import clock
from validation.rules import Finding, RuleContext, each, rule
from validation.users import runs_as_root, signed_id

__all__ = ["HOST_DIRECTORIES", "MAINTENANCE_LABEL", "RUNTIME_SOCKETS", "SENSITIVE_HOST_DIRS", "WAIT_TIMEOUT_MAX_S",
           "ContainerSpec", "ExporterMount", "HealthCheck", "Maintenance", "Mount", "PinnedImage",
           "PublishedPort", "check_env", "check_env_names", "container_plan", "health_wait_timeout_s",
           "image_is_pinned", "normal_host_path", "replaced_delete_first", "sensitive_host_path",
           "tls_switched_off"]

LOG_OPTS = {"max-size": "10m", "max-file": "5"}


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

    cpus: float = Field(ge=0.01, le=64, description="CPU limit in cores, e.g. 0.5; at least 0.01 (Docker's "
                        "smallest --cpus); where the host is known its size bounds it too")
    healthcheck: HealthCheck = Field(description="how Docker decides the container is healthy")
    env: dict[str, str] = Field(default_factory=dict,
                                description="plain environment variables (no secrets); each NAME=value "
                                "under 128 KiB and all of them at most 1 MiB (execve's limits)")
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

    @field_validator("user", mode="before")
    @classmethod
    def _unsigned(cls, value: object) -> object:
        # Before the pattern, so "+0" gets this error rather than a regex.
        if isinstance(value, str) and signed_id(value) is not None:
            raise ValueError(f"has the signed id {signed_id(value)}: Docker reads -0 and +0 as uid 0 (Go's "
                             "strconv.Atoi); write the uid:gid without a sign (e.g. 1000:1000)")
        return value

    @field_validator("user")
    @classmethod
    def _not_root(cls, value: str | None) -> str | None:
        if value is not None and runs_as_root(value):
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


SERVICE_ROOT = "/srv"
"""Where every host keeps its services' data: ``/srv/<host>/<service>`` (the hosts'
``data_dir`` is ``/srv/<host>``)."""


def own_directory(host_path: str, service: str) -> bool:
    """Whether ``host_path``, normalised, is ``/srv/<host dir>/<service>`` or lies under it."""
    parts = normal_host_path(host_path).split("/")[1:]
    return len(parts) >= 3 and parts[0] == SERVICE_ROOT.strip("/") and parts[2] == service


HOST_DIRECTORIES = {"acme": "the ingress's", "alertmanager": "the monitoring stack's",
                    "files": "every service's delivered files", "grafana": "the monitoring stack's",
                    "nginx": "the ingress's", "prometheus": "the monitoring stack's",
                    "tls": "the ingress's private keys"}
"""The directories the host setup keeps for itself in ``/srv/<host>/``, with whose they are. A
service of one of these names would own that directory (``own_directory``: a service named
``tls`` could mount nginx's private keys), so none may take one (tests/test_config_review_holes.py
checks the list against the synthesized stacks)."""


@rule(ContainerSpec)
def _not_a_host_directory(spec: ContainerSpec, ctx: RuleContext) -> Iterator[Finding]:
    """A stack file's service is not named like a directory of the host (``HOST_DIRECTORIES``)."""
    if spec.name in HOST_DIRECTORIES:
        reserved = ", ".join(f"{name} ({whose})" for name, whose in HOST_DIRECTORIES.items())
        yield Finding(("name",), f"{spec.name} is a directory the host keeps for itself in /srv/<host dir>/ "
                      f"({reserved}) and a service's directory is /srv/<host dir>/<its name>; rename the service")


@rule(ContainerSpec)
def _mounts_in_own_directory(spec: ContainerSpec, ctx: RuleContext) -> Iterator[Finding]:
    """A service mounts only its own directory, ``/srv/<host dir>/<service>`` or below: a mount
    of /srv or of a host's whole directory hands it every service's data (the databases' files,
    the delivered keys under files/), a mount of another service's directory that service's.
    A stack-file rule only: the program's own containers (the nginx it adds reads the host's
    tls/ and acme/) are built in code."""
    for index, mount in each(spec.mounts):
        # A mount that did not validate (a Partial) has its own error already.
        if isinstance(mount, Mount) and spec.name not in HOST_DIRECTORIES \
                and not own_directory(mount.host_path, spec.name):
            yield Finding(("mounts", index, "host_path"), f"{mount.host_path} is not the service's own "
                          f"directory; mount /srv/<host dir>/{spec.name} or a directory under it (a mount "
                          "of /srv, of a host's whole directory or of another service's directory gives "
                          "the container their data)")


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
    else:
        yield from _same_major(plan.replaces, plan.image)
    yield from _dates(plan)


def _dates(plan: Maintenance) -> Iterator[Finding]:
    """The window at most ``WINDOW_AHEAD_DAYS_MAX`` days ahead and the restore test at most
    ``RESTORE_TEST_AGE_DAYS_MAX`` days before it. A past window is not refused here: the
    acknowledgement stays in the stack file after its patch (removing it changes the labels,
    which replaces the container; README "Patching a datastore's image in production"), so
    this boundary, which runs on every deploy, cannot tell a stale one from a new one."""
    day, today = plan.window_start.date(), clock.today()
    latest = today + datetime.timedelta(days=WINDOW_AHEAD_DAYS_MAX)
    if day > latest:
        yield Finding(("maintenance", "window_start"), f"({day}) is more than {WINDOW_AHEAD_DAYS_MAX} days "
                      f"ahead (today {today}, at the latest {latest}); set the window of this change, with its "
                      "backup and restore test, when it is near")
    if plan.restore_test > day:
        yield Finding(("maintenance", "restore_test"), f"({plan.restore_test}) is after the window "
                      f"({day}); the restore test of the backup goes green before it")
    elif plan.restore_test < day - datetime.timedelta(days=RESTORE_TEST_AGE_DAYS_MAX):
        yield Finding(("maintenance", "restore_test"), f"({plan.restore_test}) is more than "
                      f"{RESTORE_TEST_AGE_DAYS_MAX} days before the window ({day}); run the restore test of "
                      "this change's backup again and record its day")


def _same_major(replaces: str, image: str) -> Iterator[Finding]:
    """The major versions of both tags can be read and are equal; when either cannot be read
    the change is refused rather than guessed a patch (``image_major``)."""
    old, new = image_major(replaces), image_major(image)
    if old is None or new is None:
        unread = " and ".join(r for r, m in ((replaces, old), (image, new)) if m is None)
        yield Finding(("maintenance", "replaces"), f"the major version cannot be read from {unread}: an "
                      "acknowledgement covers a patch within one major version, so tag both images with "
                      "their version (e.g. 17.3-bookworm, 0.8.0-pg17)")
    elif old != new:
        software = f"the {old[0]} " if old[0] else "the "
        yield Finding(("maintenance", "replaces"), f"{replaces} to {image} changes {software}major version "
                      f"({old[1]} to {new[1]}): the data files need an upgrade (pg_upgrade, or a dump and "
                      "restore), which a container replacement does not do")


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
