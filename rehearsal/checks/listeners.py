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
3. the command's listening flags: ``--port``/``--tls-port`` (Redis, MongoDB; 0 means none),
   ``-c port=N`` (PostgreSQL), ``--address``/``--console-address`` (MinIO),
   ``--web.listen-address`` (Prometheus and its exporters), with ``127.0.0.1:``/``localhost:``
   read as loopback;
4. the ``PORT`` variable (the products' Node services listen on every address of it);
5. the HTTP health check's port (``http://127.0.0.1:N/``): the process listens there, on every
   address unless a source above says loopback (nginx's ``listen 127.0.0.1:8081``);
6. the upstream image's documented port (:data:`IMAGE_PORTS`, its Dockerfile's ``EXPOSE``) when
   no flag of (3) moved it.

Not covered, and why: a port an image opens on its own beyond its ``EXPOSE`` (Alertmanager's
cluster port 9094, which no stack config names) and UDP (no service of the stacks uses it).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

IMAGE_PORTS: tuple[tuple[str, int], ...] = (
    (r"(^|/)postgres$", 5432), (r"^pgvector/pgvector$", 5432), (r"(^|/)redis$", 6379),
    (r"(^|/)valkey$", 6379), (r"(^|/)mongo$", 27017), (r"^minio/minio$", 9000),
    (r"^prom/prometheus$", 9090), (r"^prom/alertmanager$", 9093), (r"^prom/node-exporter$", 9100),
    (r"^prom/blackbox-exporter$", 9115), (r"(^|/)cadvisor/cadvisor$", 8080),
    (r"^grafana/grafana(-oss)?$", 3000), (r"^ubuntu/squid$", 3128),
)
"""(repository path pattern, port) of each upstream image the stacks run: the port its official
Dockerfile ``EXPOSE`` s and its server listens on by default."""

_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
_LISTEN = re.compile(r"^\s*listen\s+([^;\s]+)[^;]*;", re.M)
_FLAG = re.compile(r"(?:^|\s)(--port|--tls-port|--address|--console-address|--web\.listen-address)"
                   r"(?:=|\s+)(\S+)")
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
    moved = False
    for flag, value in _FLAG.findall(command):
        found = _address_port(value.strip("'\""))
        if found:
            moved |= flag in ("--port", "--tls-port", "--address", "--web.listen-address")
            _add(ports, found[1], found[0])
            said.add(found[1])
    for value in _PG_PORT.findall(command):
        moved = True
        _add(ports, int(value), "all")
    for env in inputs.get("envs") or []:
        key, _, value = str(env).partition("=")
        if key == "PORT" and value.isdigit():
            _add(ports, int(value), "all")
    test = " ".join(str(a) for a in (inputs.get("healthcheck") or {}).get("tests") or [])
    for value in _HEALTH_HTTP.findall(test):
        if int(value) not in said:
            _add(ports, int(value), "all")
    if "nginx" not in repo and not moved:
        for pattern, port in IMAGE_PORTS:
            if re.search(pattern, repo):
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
