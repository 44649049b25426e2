"""The pulumi-docker provider's Engine API calls, made with the ``docker`` library.

``container_create_kwargs`` translates a captured ``docker:index/container:Container``'s inputs
into ``DockerClient.containers.create`` keyword arguments the way the provider
(terraform-provider-docker, ``resourceDockerContainerCreate``, bridged as pulumi-docker 5.2.0)
builds its ``container.Config`` and ``HostConfig``:

- ``memory``, ``memoryReservation``, ``memorySwap`` (> 0), ``shmSize`` are MB: times 1024*1024;
- ``cpus`` is a decimal string of CPUs: ``NanoCPUs`` = cpus * 1e9;
- ``ports``: ``internal/protocol`` (protocol default tcp) bound to ``ip`` (default 0.0.0.0) and
  ``external`` (a random port when unset);
- ``volumes`` with ``hostPath`` (or ``volumeName``) are binds ``src:dst[:ro]``, others anonymous;
- ``healthcheck`` durations are Go durations (``30s``) in nanoseconds;
- ``networksAdvanced`` are connected after create (the default bridge disconnected first) with
  their aliases and ``ipv4Address``; ``mustRun`` starts the container and requires it running;
- ``wait`` then polls its health once a second until healthy, up to ``waitTimeout`` seconds;
  ``destroyGraceSeconds`` stops it (SIGTERM) before a removal.

An input the translator does not know raises ``TranslationError`` (naming the key): a rehearsal
never silently drops what the stack asks for.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import docker
from docker.types import IPAMConfig, IPAMPool, LogConfig, Mount

MB = 1024 * 1024

# Inputs that the provider itself consumes (not Engine API fields) or that change nothing here.
PROVIDER_ONLY = {"mustRun", "keepLocally", "start", "destroyGraceSeconds", "wait", "waitTimeout",
                 "removeVolumes", "rm", "attach", "logs", "name", "image"}
CONTAINER_INPUTS = {
    "capabilities", "command", "cpus", "envs", "healthcheck", "labels", "logDriver", "logOpts",
    "memory", "memoryReservation", "memorySwap", "mounts", "networksAdvanced", "ports",
    "privileged", "readOnly", "restart", "maxRetryCount", "securityOpts", "tmpfs", "user",
    "volumes", "entrypoint", "workingDir", "hostname", "shmSize", "cpuShares", "cpuSet",
    "init", "groupAdds", "sysctls", "dns", "hosts", "networkMode", "ulimits", "stopSignal",
    "stopTimeout",
} | PROVIDER_ONLY
NETWORK_INPUTS = {"name", "driver", "options", "ipamConfigs", "internal", "attachable", "labels",
                  "ipv6", "checkDuplicate", "ipamDriver"}


class TranslationError(Exception):
    """A captured input that the rehearsal cannot hand to the Engine API as the provider would."""


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
            "m": 60_000_000_000, "h": 3_600_000_000_000}


def go_duration_ns(text: str) -> int:
    """Go's ``time.ParseDuration`` for the units Docker uses (``1m30s`` -> 90e9); ``0`` -> 0.

    Raises TranslationError on anything else."""
    if text in ("0", ""):
        return 0
    parts = _DURATION.findall(text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise TranslationError(f"healthcheck duration {text!r} is not a Go duration")
    return int(sum(float(n) * _UNIT_NS[u] for n, u in parts))


def nano_cpus(cpus: str) -> int:
    """``"0.5"`` -> 500_000_000 (as ``docker run --cpus``)."""
    try:
        return int(round(float(cpus) * 1e9))
    except ValueError as exc:
        raise TranslationError(f"cpus {cpus!r} is not a number") from exc


def container_create_kwargs(inputs: dict[str, Any], *, name: str,
                            image: Optional[str] = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(``containers.create`` kwargs, networks to connect after create as
    ``{"name", "aliases", "ipv4_address"}``) for one captured Container.

    Raises TranslationError for an input outside ``CONTAINER_INPUTS`` or a malformed value."""
    unknown = sorted(set(inputs) - CONTAINER_INPUTS)
    if unknown:
        raise TranslationError(f"container {name}: inputs {unknown} have no Engine API translation")
    image = image or inputs.get("image")
    if not image:
        raise TranslationError(f"container {name}: no image")
    kw: dict[str, Any] = {"image": image, "name": name, "detach": True}
    if inputs.get("envs"):
        kw["environment"] = list(inputs["envs"])
    if inputs.get("command"):
        if any(c == "" for c in inputs["command"]):
            raise TranslationError(f"container {name}: values for command may not be empty")
        kw["command"] = list(inputs["command"])
    if inputs.get("entrypoint"):
        kw["entrypoint"] = list(inputs["entrypoint"])
    for key, arg in (("user", "user"), ("workingDir", "working_dir"), ("hostname", "hostname"),
                     ("stopSignal", "stop_signal")):
        if inputs.get(key):
            kw[arg] = inputs[key]
    if inputs.get("ports"):
        ports: dict[str, Any] = {}
        for p in inputs["ports"]:
            key = f"{int(p['internal'])}/{p.get('protocol') or 'tcp'}"
            binding = (p.get("ip") or "0.0.0.0", int(p["external"]) if p.get("external") else None)
            ports.setdefault(key, []).append(binding)
        kw["ports"] = ports
    binds: list[str] = []
    anonymous: list[str] = []
    for v in inputs.get("volumes") or []:
        source = v.get("hostPath") or v.get("volumeName")
        if v.get("fromContainer"):
            raise TranslationError(f"container {name}: volumes.fromContainer is not translated")
        if source:
            binds.append(f"{source}:{v['containerPath']}" + (":ro" if v.get("readOnly") else ""))
        else:
            anonymous.append(v["containerPath"])
    if binds:
        kw["volumes"] = binds
    if anonymous:
        raise TranslationError(f"container {name}: anonymous volumes {anonymous} are not translated")
    if inputs.get("mounts"):
        kw["mounts"] = [Mount(target=m["target"], source=m.get("source") or "", type=m.get("type", "volume"),
                              read_only=bool(m.get("readOnly")),
                              propagation=(m.get("bindOptions") or {}).get("propagation"))
                        for m in inputs["mounts"]]
    if inputs.get("labels"):
        kw["labels"] = {entry["label"]: entry["value"] for entry in inputs["labels"]}
    if inputs.get("healthcheck"):
        h = inputs["healthcheck"]
        kw["healthcheck"] = {
            "test": list(h["tests"]),
            "interval": go_duration_ns(h.get("interval", "0s")),
            "timeout": go_duration_ns(h.get("timeout", "0s")),
            "start_period": go_duration_ns(h.get("startPeriod", "0s")),
            "retries": int(h.get("retries", 0)),
        }
    kw["privileged"] = bool(inputs.get("privileged", False))
    kw["read_only"] = bool(inputs.get("readOnly", False))
    kw["restart_policy"] = {"Name": inputs.get("restart", "no"),
                            "MaximumRetryCount": int(inputs.get("maxRetryCount", 0))}
    kw["log_config"] = LogConfig(type=inputs.get("logDriver", "json-file"),
                                 config=dict(inputs.get("logOpts") or {}))
    if inputs.get("tmpfs"):
        kw["tmpfs"] = dict(inputs["tmpfs"])
    caps = inputs.get("capabilities") or {}
    if caps.get("adds"):
        kw["cap_add"] = list(caps["adds"])
    if caps.get("drops"):
        kw["cap_drop"] = list(caps["drops"])
    if inputs.get("securityOpts"):
        kw["security_opt"] = list(inputs["securityOpts"])
    if inputs.get("memory"):
        kw["mem_limit"] = int(inputs["memory"]) * MB
    if inputs.get("memoryReservation"):
        kw["mem_reservation"] = int(inputs["memoryReservation"]) * MB
    if inputs.get("memorySwap"):
        swap = int(inputs["memorySwap"])
        kw["memswap_limit"] = swap * MB if swap > 0 else swap
    if inputs.get("shmSize"):
        kw["shm_size"] = int(inputs["shmSize"]) * MB
    if inputs.get("cpus"):
        kw["nano_cpus"] = nano_cpus(inputs["cpus"])
    if inputs.get("cpuShares"):
        kw["cpu_shares"] = int(inputs["cpuShares"])
    if inputs.get("cpuSet"):
        kw["cpuset_cpus"] = inputs["cpuSet"]
    if inputs.get("groupAdds"):
        kw["group_add"] = list(inputs["groupAdds"])
    if inputs.get("sysctls"):
        kw["sysctls"] = dict(inputs["sysctls"])
    if inputs.get("dns"):
        kw["dns"] = list(inputs["dns"])
    if inputs.get("hosts"):
        kw["extra_hosts"] = {h["host"]: h["ip"] for h in inputs["hosts"]}
    if inputs.get("networkMode"):
        kw["network_mode"] = inputs["networkMode"]
    if inputs.get("ulimits"):
        from docker.types import Ulimit

        kw["ulimits"] = [Ulimit(name=u["name"], soft=int(u["soft"]), hard=int(u["hard"]))
                         for u in inputs["ulimits"]]
    kw["init"] = bool(inputs.get("init", False))
    networks = [{"name": n["name"], "aliases": list(n.get("aliases") or []),
                 "ipv4_address": n.get("ipv4Address") or None}
                for n in inputs.get("networksAdvanced") or []]
    return kw, networks


def network_create_kwargs(inputs: dict[str, Any]) -> dict[str, Any]:
    """``DockerClient.networks.create`` kwargs for a captured ``docker:index/network:Network``.

    Raises TranslationError for an input outside ``NETWORK_INPUTS``."""
    unknown = sorted(set(inputs) - NETWORK_INPUTS)
    if unknown:
        raise TranslationError(f"network {inputs.get('name')}: inputs {unknown} have no translation")
    kw: dict[str, Any] = {"name": inputs["name"], "driver": inputs.get("driver", "bridge"),
                          "check_duplicate": True}
    if inputs.get("options"):
        kw["options"] = dict(inputs["options"])
    if inputs.get("internal"):
        kw["internal"] = True
    if inputs.get("attachable"):
        kw["attachable"] = True
    if inputs.get("labels"):
        kw["labels"] = {entry["label"]: entry["value"] for entry in inputs["labels"]}
    if inputs.get("ipamConfigs"):
        kw["ipam"] = IPAMConfig(driver=inputs.get("ipamDriver", "default"), pool_configs=[
            IPAMPool(subnet=c.get("subnet"), iprange=c.get("ipRange"), gateway=c.get("gateway"),
                     aux_addresses=c.get("auxAddress"))
            for c in inputs["ipamConfigs"]])
    return kw


class UnhealthyError(RuntimeError):
    """A container created with ``wait`` that did not become healthy within ``waitTimeout``;
    ``container`` is left running, as the provider leaves it (a failed create)."""

    def __init__(self, message: str, container: Any):
        super().__init__(message)
        self.container = container


WAIT_TIMEOUT_DEFAULT_S = 60  # the provider's default waitTimeout


def health_report(container: Any) -> str:
    """The container's health status and its last healthcheck run (exit code, output), as
    ``docker inspect --format '{{json .State.Health}}'`` shows them."""
    health = (container.attrs.get("State") or {}).get("Health") or {}
    log = health.get("Log") or []
    last = log[-1] if log else {}
    output = " ".join(str(last.get("Output") or "").split())[:400]
    return (f"health {health.get('Status', 'none')}, {health.get('FailingStreak', 0)} failing; "
            f"last healthcheck: exit {last.get('ExitCode', '-')}: {output or '(no output)'}")


def wait_healthy(container: Any, name: str, timeout_s: float, poll_s: float = 1.0) -> None:
    """Poll until Docker calls ``container`` healthy, as the provider's ``wait`` does (once a
    second, up to ``waitTimeout``). Raises UnhealthyError with the healthcheck's last output
    when the time is up or the container stopped. The provider's own error names only the
    timeout; the output is what an operator would read next with ``docker inspect``."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        container.reload()
        state = container.attrs.get("State") or {}
        if not state.get("Health"):
            raise UnhealthyError(f"container {name} has no healthcheck; wait needs one", container)
        if state["Health"].get("Status") == "healthy":
            return
        if not state.get("Running"):
            raise UnhealthyError(f"container {name} stopped while waiting to be healthy "
                                 f"(exit {state.get('ExitCode')}); {health_report(container)}", container)
        if time.monotonic() > deadline:
            raise UnhealthyError(f"container {name} failed to be in healthy state within "
                                 f"{timeout_s:g} s; {health_report(container)}", container)
        time.sleep(poll_s)


def remove_container(container: Any, inputs: dict[str, Any]) -> None:
    """Remove a container as the provider's delete does: stopped first with
    ``destroyGraceSeconds`` (SIGTERM, then SIGKILL after that many seconds) when set, then
    force-removed."""
    grace = int(inputs.get("destroyGraceSeconds") or 0)
    if grace > 0:
        try:
            container.stop(timeout=grace)
        except docker.errors.NotFound:
            return
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass


def create_container(client: docker.DockerClient, inputs: dict[str, Any], *, name: str,
                     image: Optional[str] = None, timeout_s: float = 15.0):
    """Create, connect and start a container as the provider does; return it.

    Raises TranslationError, docker.errors.APIError, or RuntimeError when ``mustRun`` and the
    container is not running ``timeout_s`` after start (the provider's read refresh: 15 s);
    UnhealthyError when ``wait`` and it is not healthy within ``waitTimeout`` (default 60 s)."""
    import time

    kwargs, networks = container_create_kwargs(inputs, name=name, image=image)
    container = client.containers.create(**kwargs)
    if networks:
        try:
            client.networks.get("bridge").disconnect(container)
        except docker.errors.APIError as exc:
            if "is not connected to the network bridge" not in str(exc):
                raise
        for n in networks:
            client.networks.get(n["name"]).connect(container, aliases=n["aliases"] or None,
                                                   ipv4_address=n["ipv4_address"])
    if inputs.get("start", True):
        container.start()
    if inputs.get("mustRun", True):
        deadline = time.monotonic() + timeout_s
        while True:
            container.reload()
            if container.status == "running":
                break
            if time.monotonic() > deadline or container.status in ("exited", "dead"):
                logs = container.logs(tail=20).decode(errors="replace")
                raise RuntimeError(f"container {name} failed to be in running state "
                                   f"({container.status}, exit {container.attrs['State'].get('ExitCode')}): {logs}")
            time.sleep(0.2)
    if inputs.get("wait"):
        wait_healthy(container, name, float(inputs.get("waitTimeout") or WAIT_TIMEOUT_DEFAULT_S))
    return container
