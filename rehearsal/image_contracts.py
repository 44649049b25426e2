"""What a stack expects of each image it names (``ImageContract``, read from a synth capture by
``contracts_from_state``), and how a Docker daemon resolves a reference (``split_reference``).
The stand-ins of ``rehearsal/standin_plan.py`` are planned from these contracts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence


class ImageError(RuntimeError):
    """A stand-in could not be planned, built, pushed or served; the message names the reference."""


# --- contracts --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageContract:
    """What the stack expects of one image reference, merged over every container that uses it.

    ``ports``: TCP ports the image must listen on (published ``internal`` ports and the port of
    an HTTP health check), sorted. ``healthchecks``: each distinct captured ``tests`` argv (with
    its leading ``CMD``/``CMD-SHELL``). ``users``: each distinct ``user`` ("" = image default).
    ``commands``: each distinct ``command`` argv. ``data_paths``: container paths of the volumes.
    ``env_keys``: names of the variables passed (empty when the capture masks ``envs``: synth
    the stack with ``reveal_secrets=True`` to see them). ``containers``: the containers' names.
    """

    reference: str
    ports: tuple[int, ...] = ()
    healthchecks: tuple[tuple[str, ...], ...] = ()
    users: tuple[str, ...] = ()
    commands: tuple[tuple[str, ...], ...] = ()
    data_paths: tuple[str, ...] = ()
    env_keys: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()

    @property
    def health_paths(self) -> tuple[str, ...]:
        """HTTP paths the health checks GET on 127.0.0.1 (``/health``), sorted."""
        return tuple(sorted({path for _, path in http_targets(self.healthchecks)}))


_HTTP_URL = re.compile(r"https?://(?:127\.0\.0\.1|localhost):(\d+)(/[^'\"\s)]*)?")


def http_targets(healthchecks: Iterable[Sequence[str]]) -> set[tuple[int, str]]:
    """(port, path) of every HTTP URL on 127.0.0.1 or localhost that the health checks GET."""
    found = set()
    for test in healthchecks:
        for match in _HTTP_URL.finditer(" ".join(test)):
            found.add((int(match.group(1)), match.group(2) or "/"))
    return found


def contracts_from_state(state: Mapping[str, Any]) -> list[ImageContract]:
    """One :class:`ImageContract` per distinct RemoteImage ``name`` in a synth capture.

    ``state`` is the dict ``python -m synth STACK --json`` writes (``resources`` list). A
    container belongs to the image resource of the same provider named ``<container>-image``
    (components/droplet_stack.py names them so; the ``image`` input itself is an output, unknown
    at synth time). A reference no container uses still gets a contract (no ports, no check).
    Raises ImageError when a container has no image resource. Sorted by reference.
    """
    resources = state["resources"]
    images = {(r.get("provider"), r["name"]): r["inputs"]["name"] for r in resources
              if r["type"] == "docker:index/remoteImage:RemoteImage"}
    merged: dict[str, dict[str, set]] = {
        ref: {k: set() for k in ("ports", "hc", "users", "cmds", "paths", "env", "names")}
        for ref in images.values()}
    for res in resources:
        if res["type"] != "docker:index/container:Container":
            continue
        key = (res.get("provider"), f"{res['name']}-image")
        if key not in images:
            raise ImageError(f"container {res['name']}: no RemoteImage named {key[1]} on its "
                             f"provider; name the image resource <container>-image")
        inputs, acc = res["inputs"], merged[images[key]]
        acc["names"].add(res["name"])
        acc["ports"].update(int(p["internal"]) for p in inputs.get("ports") or [])
        tests = tuple((inputs.get("healthcheck") or {}).get("tests") or ())
        if tests:
            acc["hc"].add(tests)
            acc["ports"].update(port for port, _ in http_targets([tests]))
        acc["users"].add(inputs.get("user") or "")
        acc["cmds"].add(tuple(inputs.get("command") or ()))
        acc["paths"].update(v["containerPath"] for v in inputs.get("volumes") or [])
        envs = inputs.get("envs")
        if isinstance(envs, list):
            acc["env"].update(e.split("=", 1)[0] for e in envs)
    return [ImageContract(reference=ref, ports=tuple(sorted(a["ports"])),
                          healthchecks=tuple(sorted(a["hc"])), users=tuple(sorted(a["users"])),
                          commands=tuple(sorted(a["cmds"])), data_paths=tuple(sorted(a["paths"])),
                          env_keys=tuple(sorted(a["env"])), containers=tuple(sorted(a["names"])))
            for ref, a in sorted(merged.items())]


# --- references -------------------------------------------------------------------------------

def split_reference(reference: str) -> tuple[str, str, str]:
    """``(registry host, repository path, tag)`` as a Docker daemon resolves a reference:
    ``postgres:17`` -> ``("registry-1.docker.io", "library/postgres", "17")``. Digests are
    refused (a stand-in cannot match one): ImageError."""
    if "@" in reference:
        raise ImageError(f"{reference}: a digest reference cannot have a stand-in; use a tag")
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:
        name, tag = reference, "latest"
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = "registry-1.docker.io", name
    if host in ("docker.io", "index.docker.io"):
        host = "registry-1.docker.io"
    if host == "registry-1.docker.io" and "/" not in path:
        path = f"library/{path}"
    return host, path, tag


