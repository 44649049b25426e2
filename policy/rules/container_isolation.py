"""Container policies on isolation from the host (CIS Docker Benchmark v1.6.0 sections 4 and
5, KICS Docker Compose queries): user, host paths and sockets, devices, namespaces, privileges
and capabilities."""

from __future__ import annotations

import fnmatch
import posixpath

from policy.rules.base import (ADVISORY, CRITICAL, HIGH, MANDATORY, MEDIUM, T_CONTAINER, Case, by_type,
                               items, labels_of, mapping, resource_policy, stack_policy)
from policy.rules.containers import C, kics
from policy.rules.fixtures import container, doc
from validation.users import runs_as_root, signed_id

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


def _check_non_root(props, args):
    user = str(props.get("user") or "")
    if not user:
        yield "the container runs as the image's default user (often root); set user"
    elif runs_as_root(user):
        yield f"the container runs as root (user {user}); set user to the image's unprivileged uid:gid"
    elif signed_id(user) is not None:
        yield (f"the container's user {user} has a signed id (Docker reads -0 and +0 as 0); "
               "set user to the image's unprivileged uid:gid without a sign")


resource_policy(
    "docker-container-configure-non-root-user", "Containers run as a non-root user where the image allows it.",
    level=ADVISORY, severity=MEDIUM, category="containers",
    sources=["CIS Docker 4.1"],
    fix="Set user to the image's unprivileged uid:gid.",
    types=C, check=_check_non_root,
    cases=Case(doc(container()), [(doc(container(user="0:0")), ["the container runs as root (user 0:0); set user to the image's unprivileged uid:gid"]),
                                  (doc(container(user="root")), ["the container runs as root (user root); set user to the image's unprivileged uid:gid"]),
                                  (doc(container(user="00:00")), ["the container runs as root (user 00:00); set user to the image's unprivileged uid:gid"]),
                                  (doc(container(user="0000")), ["the container runs as root (user 0000); set user to the image's unprivileged uid:gid"]),
                                  (doc(container(user="-0")), ["the container runs as root (user -0); set user to the image's unprivileged uid:gid"]),
                                  (doc(container(user="+0:+0")), ["the container runs as root (user +0:+0); set user to the image's unprivileged uid:gid"]),
                                  (doc(container(user="1000:-0")), ["the container's user 1000:-0 has a signed id (Docker reads -0 and +0 as 0); set user to the image's unprivileged uid:gid without a sign"]),
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


def _service_dir_problem(path: str, own: str, services: set[str]):
    """What is wrong with a bind of ``path`` under /srv by service ``own``: /srv itself or a
    host's whole directory, or the directory (or delivered files/) of another service."""
    parts = normal_path(path).split("/")[1:]
    if parts[0] != "srv":
        return None
    if len(parts) < 3 or parts[2:] == ["files"]:
        return f"mounts {normal_path(path)}, which holds every service's data"
    other = parts[3] if parts[2] == "files" else parts[2]
    if other != own and other in services:
        return f"mounts {normal_path(path)}, the directory of service {other}"
    return None


def _check_service_dirs(args):
    containers = by_type(args, T_CONTAINER)
    services = {labels_of(c.props).get("platform.service") for c in containers} - {None}
    for item in containers:
        own = labels_of(item.props).get("platform.service")
        for source, path in host_paths(item.props):
            problem = _service_dir_problem(path, own, services) if source != "devices" else None
            if problem:
                yield f"container {item.name} ({own}) {problem} (through {source}); mount only its own /srv/<host dir>/{own}", item.urn
        targets = [mapping(v).get("containerPath") for v in items(item.props.get("volumes"))]
        targets += [mapping(m).get("target") for m in items(item.props.get("mounts"))]
        if any(isinstance(t, str) and normal_path(t) == "/" for t in targets):
            yield f"container {item.name} mounts a host directory over its root (/); mount at a directory such as /data", item.urn


def _svc(name: str, service: str, *volumes: tuple[str, str]) -> dict:
    return container(name, labels=[{"label": "platform.service", "value": service}],
                     volumes=[{"hostPath": h, "containerPath": c} for h, c in volumes])


stack_policy(
    "docker-container-disallow-other-service-dirs",
    "A container mounts only its own service directory under /srv (/srv/<host dir>/<service>): never /srv, a "
    "host's whole directory, another service's directory or its delivered files, and nothing over its root.",
    level=MANDATORY, severity=HIGH, category="containers",
    sources=["CIS Docker 5.5 (sensitive host directories)", "Kredete tier model (a service reaches only its own data)"],
    fix="Mount the service's own directory: /srv/<host dir>/<service> or a directory under it "
        "(components.containers.own_directory).",
    check=_check_service_dirs,
    cases=Case(doc(_svc("pg", "postgres", ("/srv/h-data/postgres", "/var/lib/postgresql/data")),
                   _svc("api", "api", ("/srv/h-app/files/api/etc/api", "/etc/api"), ("/srv/h-app/api/cache", "/c")),
                   _svc("nginx", "nginx", ("/srv/h-edge/tls", "/tls"))),
               [(doc(_svc("pg", "postgres", ("/srv/h-data/postgres", "/d")),
                     _svc("api", "api", ("/srv", "/s"), ("/srv/h-data", "/h"), ("/srv/h-data/x/../postgres", "/p"),
                          ("/srv/h-app/files/postgres", "/f"), ("/srv/h-app/files", "/g"), ("/srv/h-app/api", "/"))),
                 ["container api (api) mounts /srv, which holds every service's data (through volumes); mount only its own /srv/<host dir>/api",
                  "container api (api) mounts /srv/h-data, which holds every service's data (through volumes); mount only its own /srv/<host dir>/api",
                  "container api (api) mounts /srv/h-data/postgres, the directory of service postgres (through volumes); mount only its own /srv/<host dir>/api",
                  "container api (api) mounts /srv/h-app/files/postgres, the directory of service postgres (through volumes); mount only its own /srv/<host dir>/api",
                  "container api (api) mounts /srv/h-app/files, which holds every service's data (through volumes); mount only its own /srv/<host dir>/api",
                  "container api mounts a host directory over its root (/); mount at a directory such as /data"])]))


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

