"""Container policies (docker provider ``Container`` and ``RemoteImage`` inputs), anchored on the
CIS Docker Benchmark v1.6.0 section 5 (numbers below are that edition's) and KICS's Docker
Compose queries (query ids)."""

from __future__ import annotations

import fnmatch
import posixpath
import re

from policy.rules.base import (ADVISORY, CRITICAL, HIGH, LOW, MANDATORY, MEDIUM, T_CONTAINER,
                               T_IMAGE, Case, integer, items, labels_of, mapping, resource_policy)
from policy.rules.fixtures import container, doc, res
from synth.replacements import maintenance_of, writable_data_mounts

# The bound of components.containers.health_wait_timeout_s (the pack does not import the program).
WAIT_TIMEOUT_MAX_S = 600

C = [T_CONTAINER]
SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
           "/var/run/containerd/containerd.sock")
# KICS "Volume Has Sensitive Host Directory" and CIS Docker 5.5; a mount of one or of anything
# under it is flagged (/ only itself). components.containers.SENSITIVE_HOST_DIRS is the same list.
SENSITIVE_DIRS = ("/boot", "/dev", "/etc", "/lib", "/proc", "/sys", "/usr", "/root", "/var/lib/docker",
                  "/var/lib/kubelet", "/var/run", "/run", "/home", "/bin", "/sbin")


def normal_path(path: str) -> str:
    """``path`` as the kernel resolves its ``..``, ``.`` and doubled slashes (no symlinks)."""
    return posixpath.normpath("/" + path.lstrip("/"))


def sensitive_dir(path: str):
    """The sensitive directory ``path`` is or lies under, ``/`` for the root itself, or None."""
    clean = normal_path(path)
    if clean == "/":
        return "/"
    return next((d for d in SENSITIVE_DIRS if clean == d or clean.startswith(d + "/")), None)


def kics(uuid: str, name: str) -> str:
    return f"KICS {uuid} ({name})"


def host_paths(props):
    """(input, host path) of every bind: volumes[].hostPath, mounts[] of type bind, devices[]."""
    for volume in items(props.get("volumes")):
        path = mapping(volume).get("hostPath")
        if path:
            yield "volumes", str(path)
    for mount in items(props.get("mounts")):
        mount = mapping(mount)
        if mount.get("type") == "bind" and mount.get("source"):
            yield "mounts", str(mount.get("source"))
    for device in items(props.get("devices")):
        path = mapping(device).get("hostPath")
        if path:
            yield "devices", str(path)


def _check_privileged(props, args):
    if props.get("privileged"):
        yield "the container is privileged; it would own the host"


resource_policy(
    "docker-container-disallow-privileged", "Containers never run privileged.",
    level=MANDATORY, severity=CRITICAL, category="containers",
    sources=["CIS Docker 5.4 (privileged containers)", kics("ae5b6871-7f45-42e0-bb4c-ab300c4d2026", "Privileged Containers Enabled")],
    fix="Drop privileged; add the one capability the service needs instead.",
    types=C, check=_check_privileged,
    cases=Case(doc(container()), [(doc(container(privileged=True)), ["the container is privileged; it would own the host"])]))


def _check_data_replaced_first(props, args):
    # The one classification of state (synth.replacements), which `synth diff` uses too: a
    # container with a writable data mount keeps its data on the host or in a named volume,
    # so a replacement keeps the data, but created before the old one is gone it would be a
    # second server writing the same files (PostgreSQL's data directory, MongoDB's, Prometheus'
    # TSDB), which corrupts them. Such containers are replaced, not protected: protection would
    # refuse every image update at `pulumi up`; `synth diff` is what stops a production
    # replacement in review.
    paths = writable_data_mounts({"type": T_CONTAINER, "inputs": props})
    if paths and not args.opts.delete_before_replace:
        yield (f"the container writes data to {', '.join(paths)} but is not deleted before its "
               "replacement; a replacement would run two servers on the same data")


_DATA = [{"hostPath": "/srv/pg", "containerPath": "/var/lib/postgresql/data"}]
resource_policy(
    "docker-container-enable-delete-before-replace-with-data",
    "Containers that write data to the host or a named volume are deleted before their replacement starts.",
    level=MANDATORY, severity=HIGH, category="data",
    sources=["Pulumi docs: deleteBeforeReplace resource option",
             "PostgreSQL docs: one server per data directory (postmaster.pid interlock)"],
    fix="Set delete_before_replace on the container (components.containers.replaced_delete_first).",
    types=C, check=_check_data_replaced_first,
    cases=Case(doc({**container(volumes=_DATA), "delete_before_replace": True}, container("web")),
               [(doc(container(volumes=_DATA)),
                 ["the container writes data to /var/lib/postgresql/data but is not deleted before "
                  "its replacement; a replacement would run two servers on the same data"]),
                (doc(container(mounts=[{"type": "volume", "source": "pgdata", "target": "/data"}])),
                 ["the container writes data to /data but is not deleted before its replacement; "
                  "a replacement would run two servers on the same data"])]))


def fixed_addresses(props) -> list[str]:
    """The fixed addresses (``networksAdvanced[].ipv4Address``/``ipv6Address``) a container
    asks for; Docker gives one address to one container at a time."""
    return [str(a) for n in items(props.get("networksAdvanced")) for key in ("ipv4Address", "ipv6Address")
            if (a := mapping(n).get(key))]


_PINNED = [{"name": "net", "aliases": ["api"], "ipv4Address": "172.31.251.12"}]


def _check_stateless_replaced_first(props, args):
    # The other half of the classification above: a container with neither writable data, nor
    # a published host port, nor a fixed address can run next to its replacement, so replacing
    # it delete-first only takes the service down for the whole pull-and-start of the new one,
    # on every deploy. create-before-delete is only as good as its gate: without `wait` the old
    # container is removed as soon as the new one runs, healthy or not.
    fixed = fixed_addresses(props)
    if fixed and not args.opts.delete_before_replace:
        # Docker refuses the new container the address the old one holds ("Address already in
        # use"), so a create-first replacement fails every deploy (found by
        # tests/test_converge_replacement_real.py on the staging capture).
        yield (f"the container has a fixed address ({', '.join(fixed)}) but is replaced create-before-delete; "
               "the new container cannot take the address while the old one holds it, so every deploy fails")
    if writable_data_mounts({"type": T_CONTAINER, "inputs": props}) or items(props.get("ports")) or fixed:
        return
    if args.opts.delete_before_replace:
        yield ("the container holds no data, publishes no host port and has no fixed address but is "
               "deleted before its replacement; every deploy would take the service down")
    if props.get("wait") is not True:
        yield ("the container is replaced create-before-delete without `wait`; the old one would be "
               "removed before the new one is healthy")
    else:
        timeout = integer(props.get("waitTimeout"))
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 < timeout <= WAIT_TIMEOUT_MAX_S:
            yield (f"the container's `waitTimeout` ({timeout}) is not between 1 and {WAIT_TIMEOUT_MAX_S} "
                   "seconds; a deploy waits for it without a bound")


resource_policy(
    "docker-container-enable-health-gated-replacement",
    "Stateless containers are replaced create-before-delete, gated on their healthcheck with a bounded "
    "wait; a container at a fixed address is replaced delete-first.",
    level=MANDATORY, severity=MEDIUM, category="containers",
    sources=["Pulumi docs: deleteBeforeReplace resource option (false overrides a provider's default)",
             "pulumi-docker Container: wait, waitTimeout",
             "Kamal docs: kamal-proxy switches traffic once the new container passes its healthcheck",
             "Docker docs: docker network connect --ip (one container per address: \"Address already in use\")"],
    fix="Leave delete_before_replace False (components.containers.replaced_delete_first) and keep "
        "wait / wait_timeout from components.containers.container_plan; a container with a fixed "
        "address is deleted first (replaced_delete_first(fixed_address=True)).",
    types=C, check=_check_stateless_replaced_first,
    cases=Case(doc(container(wait=True, waitTimeout=170),
                   {**container("pg", volumes=_DATA), "delete_before_replace": True},
                   {**container("api", wait=True, waitTimeout=170, networksAdvanced=_PINNED),
                    "delete_before_replace": True}),
               [(doc({**container(wait=True, waitTimeout=170), "delete_before_replace": True}),
                 ["the container holds no data, publishes no host port and has no fixed address but is "
                  "deleted before its replacement; every deploy would take the service down"]),
                (doc(container(wait=True, waitTimeout=170, networksAdvanced=_PINNED)),
                 ["the container has a fixed address (172.31.251.12) but is replaced create-before-delete; "
                  "the new container cannot take the address while the old one holds it, so every deploy fails"]),
                (doc(container()),
                 ["the container is replaced create-before-delete without `wait`; the old one would be "
                  "removed before the new one is healthy"]),
                (doc(container(wait=True, waitTimeout=3600)),
                 [f"the container's `waitTimeout` (3600) is not between 1 and {WAIT_TIMEOUT_MAX_S} "
                  "seconds; a deploy waits for it without a bound"])]))


MAINTENANCE_KEYS = ("image", "replaces", "backup", "restore_test", "window")
_WINDOW = re.compile(r"^(\d{4}-\d{2}-\d{2})T\d{2}:\d{2}:\d{2}Z/PT(\d+)M$")


def _check_maintenance(props, args):
    # The acknowledgement `synth diff` accepts for a datastore's image patch (a service's
    # `maintenance`, components.containers.Maintenance), checked again where the engine sees it:
    # complete, on a container that writes data and is deleted before its replacement, with the
    # restore test green no later than the window. The stack config checks the same before any
    # resource is registered; this catches a hand-made or stale state.
    plan = maintenance_of({"type": T_CONTAINER, "inputs": props})
    if not plan:
        return
    missing = [k for k in MAINTENANCE_KEYS if not plan.get(k)]
    if missing:
        yield f"the maintenance acknowledgement lacks {', '.join(missing)}; state all of {', '.join(MAINTENANCE_KEYS)}"
        return
    if not writable_data_mounts({"type": T_CONTAINER, "inputs": props}):
        yield "the container writes no data, so a maintenance acknowledgement does not apply; remove it"
    elif not args.opts.delete_before_replace:
        yield "the acknowledged replacement is not deleted first; set delete_before_replace"
    window = _WINDOW.match(str(plan["window"]))
    if not window or not 15 <= int(window.group(2)) <= 480:
        yield f"the maintenance window {plan['window']!r} is not START/PTnM in UTC, 15 to 480 minutes"
    elif not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(plan["restore_test"])) or str(plan["restore_test"]) > window.group(1):
        yield (f"the restore test ({plan['restore_test']}) is not a day on or before the window "
               f"({window.group(1)}); the restore of the backup goes green first")
    if plan["image"] == plan["replaces"]:
        yield "the maintenance acknowledgement replaces an image by itself; remove it"


def _maintained(**labels):
    keys = {"image": "postgres:17.3", "replaces": "postgres:17.2", "backup": "restic 4f1a2b3c",
            "restore_test": "2026-12-05", "window": "2026-12-06T02:00:00Z/PT60M", **labels}
    return {**container("pg", volumes=_DATA, labels=[{"label": "platform.maintenance." + k, "value": v}
                                                    for k, v in keys.items() if v is not None]),
            "delete_before_replace": True}


resource_policy(
    "docker-container-configure-complete-maintenance-acknowledgement",
    "A datastore image patch acknowledged for maintenance names its backup, a restore test green before the window, and the window.",
    level=MANDATORY, severity=HIGH, category="data",
    sources=["README: Patching a datastore's image in production",
             "PostgreSQL docs: versioning policy (minor releases keep the storage format)"],
    fix="Complete the service's maintenance in the stack config (components.containers.Maintenance).",
    types=C, check=_check_maintenance,
    cases=Case(doc(_maintained(), container("web")),
               [(doc(_maintained(backup=None)),
                 ["the maintenance acknowledgement lacks backup; state all of image, replaces, backup, "
                  "restore_test, window"]),
                (doc(_maintained(restore_test="2026-12-07")),
                 ["the restore test (2026-12-07) is not a day on or before the window (2026-12-06); "
                  "the restore of the backup goes green first"]),
                (doc({**_maintained(), "delete_before_replace": False}),
                 ["the acknowledged replacement is not deleted first; set delete_before_replace"]),
                (doc({**container("web", labels=_maintained()["inputs"]["labels"])}),
                 ["the container writes no data, so a maintenance acknowledgement does not apply; remove it"])]))


def _check_memory(props, args):
    if not props.get("memory"):
        yield "the container has no memory limit"


resource_policy(
    "docker-container-configure-memory-limit", "Containers have a memory limit.",
    level=ADVISORY, severity=MEDIUM, category="containers",
    sources=["CIS Docker 5.10", kics("bb9ac4f7-e13b-423d-a010-c74a1bfbe492", "Memory Not Limited")],
    fix="Set memory (MiB) from the service's budget.",
    types=C, check=_check_memory,
    cases=Case(doc(container()), [(doc(container(memory=None)), ["the container has no memory limit"])]))


def _check_cpu(props, args):
    if not props.get("cpus") and not props.get("cpuShares") and not props.get("cpuQuota"):
        yield "the container has no CPU limit"


resource_policy(
    "docker-container-configure-cpu-limit", "Containers have a CPU limit.",
    level=ADVISORY, severity=MEDIUM, category="containers",
    sources=["CIS Docker 5.11", "KICS cpus_not_limited (Cpus Not Limited)"],
    fix="Set cpus from the service's budget.",
    types=C, check=_check_cpu,
    cases=Case(doc(container()), [(doc(container(cpus=None)), ["the container has no CPU limit"])]))


def _check_healthcheck(props, args):
    tests = items(mapping(props.get("healthcheck")).get("tests"))
    if not tests or tests[0] == "NONE":
        yield "the container has no healthcheck"


resource_policy(
    "docker-container-enable-healthcheck", "Containers declare a healthcheck.",
    level=ADVISORY, severity=MEDIUM, category="containers",
    sources=["CIS Docker 4.6", kics("698ed579-b239-4f8f-a388-baa4bcb13ef8", "Healthcheck Not Set")],
    fix="Give the container a healthcheck command.",
    types=C, check=_check_healthcheck,
    cases=Case(doc(container()), [(doc(container(healthcheck={"tests": ["NONE"]})), ["the container has no healthcheck"])]))


def image_is_pinned(image: str) -> bool:
    if re.search(r"@sha256:[a-f0-9]{64}$", image):
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and last.rsplit(":", 1)[1] not in ("", "latest")


def _check_image_pinned(props, args):
    image = props.get("name") if args.resource_type == T_IMAGE else props.get("image")
    if isinstance(image, str) and not image.startswith("sha256:") and not image_is_pinned(image):
        yield f"image {image} is not pinned; use a version tag (not latest) or an @sha256 digest"


resource_policy(
    "docker-image-disallow-unpinned-tag", "Images are pinned by a version tag or digest, never latest or untagged.",
    level=ADVISORY, severity=MEDIUM, category="containers",
    sources=["Hadolint DL3007", "KICS Image Version Using 'latest'", "CIS Docker 5.27"],
    fix="Pin the image to a version tag or an @sha256 digest.",
    types=[T_IMAGE, T_CONTAINER], check=_check_image_pinned,
    cases=Case(doc(res(T_IMAGE, "i", {"name": "nginx:1.27.3-alpine"})),
               [(doc(res(T_IMAGE, "i", {"name": "nginx:latest"}), res(T_IMAGE, "j", {"name": "redis"})),
                 ["image nginx:latest is not pinned; use a version tag (not latest) or an @sha256 digest",
                  "image redis is not pinned; use a version tag (not latest) or an @sha256 digest"])]))


def _check_non_root(props, args):
    user = str(props.get("user") or "")
    if not user:
        yield "the container runs as the image's default user (often root); set user"
    elif user.split(":", 1)[0] in ("root", "0"):
        yield f"the container runs as root (user {user}); set user to the image's unprivileged uid:gid"


resource_policy(
    "docker-container-configure-non-root-user", "Containers run as a non-root user where the image allows it.",
    level=ADVISORY, severity=MEDIUM, category="containers",
    sources=["CIS Docker 4.1"],
    fix="Set user to the image's unprivileged uid:gid.",
    types=C, check=_check_non_root,
    cases=Case(doc(container()), [(doc(container(user="0:0")), ["the container runs as root (user 0:0); set user to the image's unprivileged uid:gid"]),
                                  (doc(container(user="root")), ["the container runs as root (user root); set user to the image's unprivileged uid:gid"]),
                                  (doc(container(user="")), ["the container runs as the image's default user (often root); set user"])]))


def _check_socket(props, args):
    for source, path in host_paths(props):
        if normal_path(path) in SOCKETS:
            yield f"the container mounts the container runtime socket {path} (through {source}), which gives it the host"


resource_policy(
    "docker-container-disallow-docker-socket", "No container mounts the Docker or containerd socket, through any input.",
    level=MANDATORY, severity=CRITICAL, category="containers",
    sources=["CIS Docker 5.31", kics("d6355c88-1e8d-49e9-b2f2-f8a1ca12c75b", "Docker Socket Mounted In Container")],
    fix="Remove the socket mount; read container metrics from cgroups instead.",
    types=C, check=_check_socket,
    cases=Case(doc(container(volumes=[{"hostPath": "/srv/app/data", "containerPath": "/data"}])),
               [(doc(container(volumes=[{"hostPath": "/var/run/docker.sock", "containerPath": "/s"}])),
                 ["the container mounts the container runtime socket /var/run/docker.sock (through volumes), which gives it the host"]),
                (doc(container(mounts=[{"type": "bind", "source": "/run/docker.sock", "target": "/s"}])),
                 ["the container mounts the container runtime socket /run/docker.sock (through mounts), which gives it the host"]),
                (doc(container(volumes=[{"hostPath": "/var/run/../run/docker.sock", "containerPath": "/t"}])),
                 ["the container mounts the container runtime socket /var/run/../run/docker.sock (through volumes), which gives it the host"])]))


def _check_host_paths(props, args):
    for source, path in host_paths(props):
        sensitive = sensitive_dir(path) if source != "devices" else None
        if sensitive == normal_path(path):
            yield f"the container mounts the host's {sensitive} (through {source})"
        elif sensitive:
            yield f"the container mounts the host's {normal_path(path)}, under {sensitive} (through {source})"


resource_policy(
    "docker-container-disallow-sensitive-host-paths", "Containers mount no sensitive host directory (/, /etc, /proc, /sys, /var/lib/docker, ...) nor anything under one.",
    level=MANDATORY, severity=HIGH, category="containers",
    sources=["CIS Docker 5.5", kics("1c1325ff-831d-43a1-973e-839ae57dfcc0", "Volume Has Sensitive Host Directory")],
    fix="Mount only the service's own directory under /srv. Only the exporters the program adds "
        "(node-exporter, cAdvisor) read the host, under the named waivers node-exporter-host-root and cadvisor-host-paths.",
    types=C, check=_check_host_paths,
    cases=Case(doc(container(volumes=[{"hostPath": "/srv/app/data", "containerPath": "/data"}])),
               [(doc(container(volumes=[{"hostPath": "/", "containerPath": "/host"}],
                               mounts=[{"type": "bind", "source": "/etc/", "target": "/e"}])),
                 ["the container mounts the host's / (through volumes)", "the container mounts the host's /etc (through mounts)"]),
                (doc(container(volumes=[{"hostPath": "/srv/../etc", "containerPath": "/e"},
                                        {"hostPath": "/root/.ssh", "containerPath": "/k"}])),
                 ["the container mounts the host's /etc (through volumes)",
                  "the container mounts the host's /root/.ssh, under /root (through volumes)"])]))


def _check_devices(props, args):
    for device in items(props.get("devices")):
        yield f"the container is given host device {mapping(device).get('hostPath')}"


resource_policy(
    "docker-container-disallow-host-devices", "Containers are given no host devices.",
    level=ADVISORY, severity=HIGH, category="containers",
    sources=["CIS Docker 5.17 (host devices not directly exposed)"],
    fix="Remove devices; a service that needs one gets a waiver with its reason.",
    types=C, check=_check_devices,
    cases=Case(doc(container()), [(doc(container(devices=[{"hostPath": "/dev/sda"}])), ["the container is given host device /dev/sda"])]))


def _namespace_check(key, label):
    def check(props, args):
        if props.get(key) == "host":
            yield f"the container shares the host's {label} namespace"
    return check


for _key, _label, _cis, _kics in [
        ("networkMode", "network", "CIS Docker 5.9", kics("071a71ff-f868-47a4-ac0b-3c59e4ab5443", "Shared Host Network Namespace")),
        ("pidMode", "PID", "CIS Docker 5.15", kics("4f31dd9f-2cc3-4751-9b53-67e4af83dac0", "Host Namespace is Shared")),
        ("ipcMode", "IPC", "CIS Docker 5.16", kics("baa3890f-bed7-46f5-ab8f-1da8fc91c729", "Shared Host IPC Namespace")),
        ("usernsMode", "user", "CIS Docker 5.30", kics("8af7162d-6c98-482f-868e-0d33fb675ca8", "Shared Host User Namespace"))]:
    _short = {"network": "network", "PID": "pid", "IPC": "ipc", "user": "userns"}[_label]
    resource_policy(
        f"docker-container-disallow-host-{_short}", f"Containers do not share the host's {_label} namespace.",
        level=ADVISORY, severity=HIGH, category="containers", sources=[_cis, _kics],
        fix=f"Remove {_key}=host; use a Docker network and published ports.",
        types=C, check=_namespace_check(_key, _label),
        cases=Case(doc(container()), [(doc(container(**{_key: "host"})), [f"the container shares the host's {_label} namespace"])]))


def _check_data_namespaces(props, args):
    if labels_of(props).get("platform.tier") != "data":
        return
    for key, label in (("networkMode", "network"), ("pidMode", "PID"), ("ipcMode", "IPC"), ("usernsMode", "user")):
        if props.get(key) == "host":
            yield f"a data-tier container shares the host's {label} namespace; the data tier is reachable only through its published port"


DATA = [{"label": "platform.tier", "value": "data"}]
resource_policy(
    "docker-container-disallow-host-namespaces-in-data-tier", "Data-tier containers never share the host's network, PID, IPC or user namespace.",
    level=MANDATORY, severity=CRITICAL, category="containers",
    sources=["CIS Docker 5.9, 5.15, 5.16, 5.30", "Kredete tier model (data reachable from app only)"],
    fix="Remove the host namespace; publish the datastore port on the private address.",
    types=C, check=_check_data_namespaces,
    cases=Case(doc(container(labels=DATA)),
               [(doc(container(labels=DATA, networkMode="host", pidMode="host")),
                 ["a data-tier container shares the host's network namespace; the data tier is reachable only through its published port",
                  "a data-tier container shares the host's PID namespace; the data tier is reachable only through its published port"])]))


def _check_no_new_privileges(props, args):
    opts = [str(o) for o in items(props.get("securityOpts"))]
    if not any(o in ("no-new-privileges", "no-new-privileges:true", "no-new-privileges=true") for o in opts):
        yield "the container does not set no-new-privileges"


resource_policy(
    "docker-container-enable-no-new-privileges", "Containers set no-new-privileges.",
    level=ADVISORY, severity=MEDIUM, category="containers",
    sources=["CIS Docker 5.25", kics("27fcc7d6-c49b-46e0-98f1-6c082a6a2750", "No New Privileges Not Set")],
    fix="Add no-new-privileges:true to security_opts.",
    types=C, check=_check_no_new_privileges,
    cases=Case(doc(container()), [(doc(container(securityOpts=[])), ["the container does not set no-new-privileges"])]))


def _check_unconfined(props, args):
    for opt in items(props.get("securityOpts")):
        kind, _, value = str(opt).replace("=", ":", 1).partition(":")
        if kind in ("seccomp", "apparmor") and value == "unconfined":
            yield f"the container runs with {kind}=unconfined; keep Docker's default {kind} profile"
        if kind == "label" and value == "disable":
            yield "the container disables SELinux labelling"


resource_policy(
    "docker-container-disallow-unconfined-profiles", "Containers keep the default seccomp and AppArmor profiles.",
    level=MANDATORY, severity=HIGH, category="containers",
    sources=["CIS Docker 5.1 (AppArmor)", "CIS Docker 5.21 (seccomp)", kics("404fde2c-bc4b-4371-9747-7054132ac953", "Seccomp Disabled"),
             kics("610e266e-6c12-4bca-9925-1ed0cd29742b", "Security Opt Not Set")],
    fix="Remove seccomp=unconfined / apparmor=unconfined from security_opts.",
    types=C, check=_check_unconfined,
    cases=Case(doc(container(securityOpts=["no-new-privileges:true", "seccomp=/etc/docker/seccomp.json"])),
               [(doc(container(securityOpts=["no-new-privileges:true", "seccomp=unconfined", "apparmor:unconfined"])),
                 ["the container runs with seccomp=unconfined; keep Docker's default seccomp profile",
                  "the container runs with apparmor=unconfined; keep Docker's default apparmor profile"])]))


def _check_capabilities(props, args):
    caps = mapping(props.get("capabilities"))
    config = args.get_config() or {}
    allowed = set()
    for pattern, names in mapping(config.get("allowed")).items():
        if fnmatch.fnmatchcase(args.name, pattern):
            allowed |= {str(n).upper().removeprefix("CAP_") for n in items(names)}
    added = [str(c).upper().removeprefix("CAP_") for c in items(caps.get("adds"))]
    extra = [c for c in added if c not in allowed]
    if "ALL" in extra:
        yield "the container adds ALL capabilities"
    elif extra:
        yield (f"the container adds {', '.join(extra)}, beyond what config allows it; declare the "
               "capabilities the service provably needs under allowed, with the reason")


resource_policy(
    "docker-container-disallow-added-capabilities", "Containers add no capability beyond the few declared (with a reason) for that service.",
    level=MANDATORY, severity=HIGH, category="containers",
    sources=["CIS Docker 5.3 (restrict Linux kernel capabilities)", kics("ce76b7d0-9e77-464d-b86f-c5c48e03e22d", "Container Capabilities Unrestricted")],
    fix="Remove the capability, or list it under allowed.<container glob> in policy/config.<stack>.json with the entrypoint's reason.",
    types=C, check=_check_capabilities,
    config={"allowed": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}},
    cases=Case(doc(container("pencom-data-postgres", capabilities={"drops": ["ALL"], "adds": ["CHOWN", "SETUID"]})),
               [(doc(container("pencom-data-postgres", capabilities={"drops": ["ALL"], "adds": ["CHOWN", "SYS_ADMIN", "NET_ADMIN"]})),
                 ["the container adds SYS_ADMIN, NET_ADMIN, beyond what config allows it; declare the capabilities the service provably needs under allowed, with the reason"]),
                (doc(container("web", capabilities={"adds": ["ALL"]})), ["the container adds ALL capabilities"])],
               config={"allowed": {"*-postgres": ["CHOWN", "SETUID"]}}))


def _check_drop_all(props, args):
    drops = [str(c).upper() for c in items(mapping(props.get("capabilities")).get("drops"))]
    if "ALL" not in drops:
        yield "the container keeps Docker's default capabilities; drop ALL and add back what it needs"


resource_policy(
    "docker-container-configure-drop-all-capabilities", "Containers drop all capabilities before adding any back.",
    level=ADVISORY, severity=MEDIUM, category="containers",
    sources=["CIS Docker 5.3", "KICS check_cap_add_cap_drop"],
    fix="Set capabilities.drops to [\"ALL\"].",
    types=C, check=_check_drop_all,
    cases=Case(doc(container()), [(doc(container(capabilities={"adds": ["CHOWN"]})),
                                   ["the container keeps Docker's default capabilities; drop ALL and add back what it needs"])]))


def _check_read_only(props, args):
    if not props.get("readOnly"):
        yield "the container's root filesystem is writable; set read_only and give it tmpfs or volumes"


resource_policy(
    "docker-container-enable-read-only-rootfs", "Containers mount their root filesystem read-only.",
    level=ADVISORY, severity=LOW, category="containers",
    sources=["CIS Docker 5.12"],
    fix="Set read_only and mount tmpfs where the image writes.",
    types=C, check=_check_read_only,
    cases=Case(doc(container()), [(doc(container(readOnly=False)),
                                   ["the container's root filesystem is writable; set read_only and give it tmpfs or volumes"])]))


def _check_restart(props, args):
    policy = str(props.get("restart") or "no")
    if policy == "always":
        yield "the container restarts always, even after a deliberate stop; use unless-stopped or on-failure"
    elif policy == "no":
        yield "the container has no restart policy; use unless-stopped or on-failure"


resource_policy(
    "docker-container-configure-restart-policy", "Containers restart on failure or unless stopped.",
    level=ADVISORY, severity=LOW, category="containers",
    sources=["CIS Docker 5.14", kics("2fc99041-ddad-49d5-853f-e35e70a48391", "Restart Policy On Failure Not Set To 5")],
    fix="Set restart to unless-stopped (or on-failure with max_retry_count 5).",
    types=C, check=_check_restart,
    cases=Case(doc(container()), [(doc(container(restart=None)), ["the container has no restart policy; use unless-stopped or on-failure"])]))


def _check_log_rotation(props, args):
    opts = mapping(props.get("logOpts"))
    if props.get("logDriver", "json-file") in ("json-file", "local") and "max-size" not in opts:
        yield "the container's logs do not rotate; set log_opts max-size and max-file"


resource_policy(
    "docker-container-configure-log-rotation", "Container logs rotate by size.",
    level=ADVISORY, severity=LOW, category="containers",
    sources=["Docker docs: json-file logging driver (max-size, max-file)"],
    fix="Set log_opts max-size and max-file.",
    types=C, check=_check_log_rotation,
    cases=Case(doc(container()), [(doc(container(logOpts={})), ["the container's logs do not rotate; set log_opts max-size and max-file"])]))


def _check_publish_all(props, args):
    if props.get("publishAllPorts"):
        yield "the container publishes every exposed port on all interfaces (publish_all_ports)"


resource_policy(
    "docker-container-disallow-publish-all-ports", "Containers never publish all their exposed ports.",
    level=MANDATORY, severity=HIGH, category="containers",
    sources=["CIS Docker 5.8 (only needed ports open)", kics("451d79dc-0588-476a-ad03-3c7f0320abb3", "Container Traffic Not Bound To Host Interface")],
    fix="Remove publish_all_ports and list the ports with their host address.",
    types=C, check=_check_publish_all,
    cases=Case(doc(container()), [(doc(container(publishAllPorts=True)),
                                   ["the container publishes every exposed port on all interfaces (publish_all_ports)"])]))


def _check_privileged_host_ports(props, args):
    edge = labels_of(props).get("platform.tier") == "edge"
    for port in items(props.get("ports")):
        external = mapping(port).get("external")
        if isinstance(external, (int, float)) and 0 < external < 1024 and not (edge and external in (80, 443)):
            yield f"the container maps privileged host port {int(external)}; only the edge proxy takes 80 and 443"


resource_policy(
    "docker-container-disallow-privileged-host-ports", "Only the edge proxy maps a privileged host port (below 1024), and only 80 and 443.",
    level=ADVISORY, severity=MEDIUM, category="containers",
    sources=["CIS Docker 5.7 (privileged ports not mapped)", kics("bc2908f3-f73c-40a9-8793-c1b7d5544f79", "Privileged Ports Mapped In Container")],
    fix="Map a host port above 1023, or route through the edge proxy.",
    types=C, check=_check_privileged_host_ports,
    cases=Case(doc(container(labels=[{"label": "platform.tier", "value": "edge"}],
                             ports=[{"internal": 8443, "external": 443, "ip": "0.0.0.0"}])),
               [(doc(container(ports=[{"internal": 8080, "external": 80, "ip": "10.0.0.2"}, {"internal": 25, "external": 25, "ip": "127.0.0.1"}])),
                 ["the container maps privileged host port 80; only the edge proxy takes 80 and 443",
                  "the container maps privileged host port 25; only the edge proxy takes 80 and 443"])]))


def _check_cgroups(props, args):
    if props.get("cgroupParent"):
        yield f"the container runs under cgroup parent {props.get('cgroupParent')}, outside Docker's own limits"
    if props.get("cgroupnsMode") == "host":
        yield "the container shares the host's cgroup namespace"


resource_policy(
    "docker-container-configure-default-cgroups", "Containers keep Docker's cgroup parent and a private cgroup namespace.",
    level=ADVISORY, severity=MEDIUM, category="containers",
    sources=["CIS Docker 5.24 (cgroup usage confirmed)", kics("4d9f44c6-2f4a-4317-9bb5-267adbea0232", "Cgroup Not Default")],
    fix="Remove cgroup_parent and cgroupns_mode=host.",
    types=C, check=_check_cgroups,
    cases=Case(doc(container()), [(doc(container(cgroupParent="/system.slice", cgroupnsMode="host")),
                                   ["the container runs under cgroup parent /system.slice, outside Docker's own limits",
                                    "the container shares the host's cgroup namespace"])]))


T_DOKS = "digitalocean:index/kubernetesCluster:KubernetesCluster"


def _check_doks_upgrades(props, args):
    if not props.get("autoUpgrade"):
        yield f"Kubernetes cluster {props.get('name')} does not upgrade itself; set auto_upgrade"
    if not props.get("surgeUpgrade"):
        yield f"Kubernetes cluster {props.get('name')} upgrades without surge nodes; set surge_upgrade"


resource_policy(
    "digitalocean-kubernetescluster-enable-upgrades", "DigitalOcean Kubernetes clusters upgrade automatically, with surge nodes.",
    level=ADVISORY, severity=MEDIUM, category="containers",
    sources=["Trivy AVD-DIG-0005 (digitalocean-compute-kubernetes-auto-upgrades-not-enabled)",
             "Trivy AVD-DIG-0008 (digitalocean-compute-surge-upgrades-not-enabled)"],
    fix="Set auto_upgrade and surge_upgrade (no stack runs DOKS today; the rule keeps the anchor floor).",
    types=[T_DOKS], check=_check_doks_upgrades,
    cases=Case(doc(res(T_DOKS, "k", {"name": "k", "autoUpgrade": True, "surgeUpgrade": True})),
               [(doc(res(T_DOKS, "k", {"name": "k"})),
                 ["Kubernetes cluster k does not upgrade itself; set auto_upgrade",
                  "Kubernetes cluster k upgrades without surge nodes; set surge_upgrade"])]))
