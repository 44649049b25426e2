"""What each container listens on, published or not (issue #16: "try every port that any host or
container listens on"), read from a synth capture alone (pure; no lab, no renderer).

``container_ports(inputs, files)`` -> {port: bind} for one ``docker:index/container:Container``'s
inputs, ``bind`` ``"all"`` (every address of the container: its bridge reaches it) or
``"loopback"`` (127.0.0.1 inside the container: nothing outside the container reaches it, so no
matrix target). ``files``: path -> content of every file the host scripts write
(``rehearsal.checks.written_files``), for the configs a container binds. The sources, each what
the program itself says about a listener:

1. every published port's ``internal`` port;
2. nginx: each ``listen`` directive of the config files under the container's binds (the only
   thing that decides nginx's ports: the image's own ``EXPOSE`` is not added for nginx);
3. the command's listening flags: ``--port``/``--tls-port`` (Redis, MongoDB, cAdvisor; 0 means
   none), ``-c port=N`` (PostgreSQL), ``--address``/``--console-address`` (MinIO),
   ``--web.listen-address`` (Prometheus and its exporters), ``--cluster.listen-address``
   (Alertmanager; empty means none), with ``127.0.0.1:``/``localhost:`` read as loopback;
4. the ``PORT`` variable (the products' Node services listen on every address of it);
5. the HTTP health check's port (``http://127.0.0.1:N/``): the process listens there, on every
   address unless a source above says loopback (nginx's ``listen 127.0.0.1:8081``);
6. the upstream image's default ports (:data:`IMAGE_PORTS`: its Dockerfile's ``EXPOSE``, and
   Alertmanager's cluster port 9094, which it opens though no Dockerfile exposes it) where no
   flag of (3) moves them.

Why that is all: a process in a container listens where its command, its environment or its
config says, else where its image's server does by default; the first three are in the capture
whole, and for the product images (no default of their own but the stand-in's) the service's
``PORT`` and health check are what the stack gives. Not covered: UDP (Alertmanager's gossip on
9094 is the only UDP listener, and ``nc -u`` cannot tell a dropped datagram from an accepted
one, so its refusal cannot be proven), and a default an upstream image adds in a version the
table does not know.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

_WEB = ("--web.listen-address",)
IMAGE_PORTS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    (r"(^|/)postgres$", 5432, ("port=",)), (r"^pgvector/pgvector$", 5432, ("port=",)),
    (r"(^|/)redis$", 6379, ("--port", "--tls-port")), (r"(^|/)valkey$", 6379, ("--port", "--tls-port")),
    (r"(^|/)mongo$", 27017, ("--port",)), (r"^minio/minio$", 9000, ("--address",)),
    (r"^prom/prometheus$", 9090, _WEB), (r"^prom/alertmanager$", 9093, _WEB),
    # Alertmanager's cluster port, which it opens unless told otherwise (TCP; its UDP gossip on
    # the same port is no target: nc cannot tell a dropped datagram from an accepted one).
    (r"^prom/alertmanager$", 9094, ("--cluster.listen-address",)),
    (r"^prom/node-exporter$", 9100, _WEB), (r"^prom/blackbox-exporter$", 9115, _WEB),
    (r"(^|/)cadvisor/cadvisor$", 8080, ("--port",)), (r"^grafana/grafana(-oss)?$", 3000, ()),
    (r"^ubuntu/squid$", 3128, ()),
)
"""(repository path pattern, port, the flags that move it) of each upstream image the stacks run:
the port its server listens on by default (its Dockerfile's ``EXPOSE``, and Alertmanager's
cluster port), added unless the command gives one of those flags."""

_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
_LISTEN = re.compile(r"^\s*listen\s+([^;\s]+)[^;]*;", re.M)
_FLAG = re.compile(r"(?:^|\s)(--port|--tls-port|--address|--console-address|--web\.listen-address"
                   r"|--cluster\.listen-address)(?:=|\s+)(\S*)")
_PG_PORT = re.compile(r"(?:^|\s)port=(\d+)(?:\s|$)")
_HEALTH_HTTP = re.compile(r"https?://(?:127\.0\.0\.1|localhost):(\d+)")


def repository(image: str) -> str:
    """``nginxinc/nginx-unprivileged`` of ``nginxinc/nginx-unprivileged:1.27.3-alpine`` (the
    registry host and ``library/`` dropped)."""
    name = image.split("@", 1)[0]
    head, _, tail = name.rpartition(":")
    if head and "/" not in tail:
        name = head
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    return "/".join(parts).removeprefix("library/")


def _address_port(value: str) -> tuple[str, int] | None:
    """("all" or "loopback", port) of ``8081``, ``:9000``, ``127.0.0.1:8081``, ``[::]:80``."""
    host, _, port = value.rpartition(":")
    if not port.isdigit():
        return None
    return ("loopback" if host in _LOOPBACK else "all", int(port))


def _mounted_files(inputs: Mapping[str, Any], files: Mapping[str, str]) -> list[str]:
    out = []
    for volume in inputs.get("volumes") or []:
        source = str(volume.get("hostPath") or "").rstrip("/")
        if source:
            out += [content for path, content in sorted(files.items())
                    if path == source or path.startswith(source + "/")]
    return out


def _add(ports: dict[int, str], port: int, bind: str) -> None:
    """An address of every interface wins over loopback (nginx can listen on both)."""
    if port > 0 and ports.get(port) != "all":
        ports[port] = bind


def container_ports(inputs: Mapping[str, Any], files: Mapping[str, str]) -> dict[int, str]:
    """{port: "all" | "loopback"} of one container (see the module docstring), TCP."""
    ports: dict[int, str] = {}
    for p in inputs.get("ports") or []:
        _add(ports, int(p["internal"]), "all")
    repo = repository(str(inputs.get("image") or ""))
    said: set[int] = set()
    if "nginx" in repo:
        for text in _mounted_files(inputs, files):
            for match in _LISTEN.finditer(text):
                found = _address_port(match.group(1))
                if found:
                    _add(ports, found[1], found[0])
                    said.add(found[1])
    command = " ".join(str(a) for a in inputs.get("command") or [])
    flags = set()
    for flag, value in _FLAG.findall(command):
        flags.add(flag)
        found = _address_port(value.strip("'\""))
        if found:
            _add(ports, found[1], found[0])
            said.add(found[1])
    for value in _PG_PORT.findall(command):
        flags.add("port=")
        _add(ports, int(value), "all")
    for env in inputs.get("envs") or []:
        key, _, value = str(env).partition("=")
        if key == "PORT" and value.isdigit():
            _add(ports, int(value), "all")
    test = " ".join(str(a) for a in (inputs.get("healthcheck") or {}).get("tests") or [])
    for value in _HEALTH_HTTP.findall(test):
        if int(value) not in said:
            _add(ports, int(value), "all")
    if "nginx" not in repo:
        for pattern, port, moving in IMAGE_PORTS:
            if re.search(pattern, repo) and not flags & set(moving):
                _add(ports, port, "all")
    return dict(sorted(ports.items()))


def unpublished(inputs: Mapping[str, Any], files: Mapping[str, str]) -> list[int]:
    """The ports a container listens on, on its bridge address, that it does not publish."""
    published = {int(p["internal"]) for p in inputs.get("ports") or []}
    return [port for port, bind in container_ports(inputs, files).items()
            if bind == "all" and port not in published]


def host_files(resources: list[Mapping[str, Any]], hosts: set[str]) -> dict[str, dict[str, str]]:
    """Host component URN (of ``hosts``) -> {path: content} of the files its scripts write (every
    ``command:remote:Command`` below it, through ``parent``; ``rehearsal.checks.written_files``)."""
    from types import SimpleNamespace

    from rehearsal.checks import written_files

    by_urn = {r["urn"]: r for r in resources}

    def host_of(resource: Mapping[str, Any]) -> str | None:
        parent = resource.get("parent")
        while parent and parent not in hosts:
            parent = (by_urn.get(parent) or {}).get("parent")
        return parent

    steps: dict[str, list] = {urn: [] for urn in hosts}
    for r in resources:
        if r["type"] == "command:remote:Command":
            owner = host_of(r)
            if owner:
                steps[owner].append(SimpleNamespace(name=r["name"], inputs=r.get("inputs") or {}))
    return {urn: {path: f["content"] for path, f in written_files(found).items()}
            for urn, found in steps.items()}
