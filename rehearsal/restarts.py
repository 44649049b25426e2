"""Which services a change restarts (issue #15: "only the services that depend on each change
restart"): the set expected, derived from the program's own scripts and resources in the lab
captures before and after the change, and the set observed on the boxes, from a snapshot of
every container and every platform systemd unit taken before and after the drill's converges.

A service is named ``container:<stack>/<service>`` (by its ``platform.*`` labels) or
``unit:<unit>``.

Expected (``expected_restarts``), per host converged:

- a container whose ``Container`` inputs changed is recreated (the converge replaces it);
- a service's files step (``service_files.render_service_script``) whose staged files changed
  restarts its container when its commit applies by ``docker restart`` (``Reload`` without a
  signal or command); a reload (SIGHUP, ``squid -k``, ``nginx -s reload``) restarts nothing;
- a host step's ``commit_files`` whose files changed restarts each unit its apply names with
  ``apply_unit [try-]restart|service-restart UNIT`` (``hostsetup.unit_apply``); a reload
  restarts nothing; a unit the program delivers with ``PartOf=`` a restarted unit restarts too;
- a restarted or recreated PostgreSQL container restarts the WAL receiver that streams from it
  (``platform-wal-receive-JOB``: pg_receivewal ends with its server and systemd starts it again).

A container without ``platform.*`` labels is a backup unit's one-off tool container (``docker
run --rm``, a new one each start): it is left out, and its unit's restart is what is compared.

Observed (``changed``): a container whose (Id, StartedAt) list differs, a unit whose
(InvocationID, ActiveEnterTimestamp) differs, one that appeared or went away.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from typing import Any, Iterable, Mapping, Optional

from rehearsal.capture import StackCapture, Step

PUT_FILE = re.compile(r"put_file (\S+) (\S+) (\S+) <<'(\w+)'[^\n]*\n(.*?)^\4$", re.M | re.S)
COMMENT = re.compile(r"^\s*#.*$", re.M)
RECORD = re.compile(r"^\s*(\w+)\+=\((\S+)\)$", re.M)
APPLY_UNIT = re.compile(r"apply_unit (try-)?(restart|reload|service-restart) (\S+)")
SERVICE = re.compile(r"ensure_service_enabled (\S+)")
LABEL = re.compile(r"--filter label=platform\.(stack|service)=(\S+?)[\s)\"]")
PART_OF = re.compile(r"^PartOf=(\S+)$", re.M)
UNIT_PATH = re.compile(r"^/etc/systemd/system/([^/]+)$")
RECEIVER_PATH = re.compile(r"^/usr/local/sbin/(platform-wal-receive-\S+)$")


def delivered_files(script: str) -> dict[str, tuple[str, str, str]]:
    """The files a setup script writes: path -> (mode, owner, content), from its heredocs."""
    return {m.group(1): (m.group(2), m.group(3), m.group(5)) for m in PUT_FILE.finditer(script)}


def commits(script: str) -> list[tuple[str, list[str]]]:
    """Each ``commit_files VALIDATE APPLY PATH...`` of a script as (apply, paths); a path
    ``${NAME[@]}`` stands for every path the script records in the array NAME."""
    outside = PUT_FILE.sub("", script)  # a delivered file's own lines are not the script's
    records: dict[str, list[str]] = {}
    for name, path in RECORD.findall(outside):
        records.setdefault(name, []).append(path)
    out = []
    lines = outside.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line.startswith("commit_files "):
            continue
        words: Optional[list[str]] = None
        while words is None:  # a quoted step may span lines
            try:
                words = shlex.split(line)
            except ValueError:
                if i >= len(lines):
                    raise
                line += "\n" + lines[i]
                i += 1
        paths = []
        for word in words[3:]:
            array = re.fullmatch(r"\$\{(\w+)\[@\]\}", word)
            paths += records.get(array.group(1), []) if array else [word]
        out.append((words[2], paths))
    return out


def _labels(script: str) -> Optional[str]:
    found = dict(LABEL.findall(script))
    return f"container:{found['stack']}/{found['service']}" if {"stack", "service"} <= set(found) else None


def restarted_by(apply: str, script: str) -> set[str]:
    """The services an apply command line restarts (not those it only reloads)."""
    out = {f"unit:{unit.removesuffix('.service')}" for _, action, unit in APPLY_UNIT.findall(apply)
           if action != "reload"}
    if re.search(r'docker restart "\$cid"', apply):
        service = _labels(script)
        if service is None:
            raise ValueError(f"an apply restarts a container the script does not name: {apply!r}")
        out.add(service)
    return out


def container_key(inputs: Mapping[str, Any]) -> str:
    labels = {lab.get("label"): lab.get("value") for lab in inputs.get("labels") or []}
    if labels.get("platform.stack") and labels.get("platform.service"):
        return f"container:{labels['platform.stack']}/{labels['platform.service']}"
    return f"container:{inputs.get('name')}"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _script(step: Optional[Step]) -> str:
    return (step.inputs.get("stdin") or "") if step is not None else ""


def expected_restarts(before: StackCapture, after: StackCapture,
                      hosts: Optional[Iterable[str]] = None) -> dict[str, set[str]]:
    """host -> the services the change from ``before`` to ``after`` restarts or recreates on
    it, for ``hosts`` (default: every host of ``after``, the ones converged)."""
    old = {s.urn: s for s in before.steps}
    out: dict[str, set[str]] = {}
    for host in (after.hosts if hosts is None else hosts):
        found: set[str] = set()
        part_of: dict[str, set[str]] = {}
        streams_from: dict[str, set[str]] = {}  # a container's service -> the receivers on it
        for step in after.host_steps(host):
            prior = old.get(step.urn)
            if step.kind == "container":
                if prior is None or _digest(prior.inputs) != _digest(step.inputs):
                    found.add(container_key(step.inputs))
                continue
            if step.kind != "command":
                continue
            script, was = _script(step), delivered_files(_script(prior))
            files = delivered_files(script)
            for path, (_, _, content) in files.items():
                receiver = RECEIVER_PATH.match(path)
                for kind, source in (LABEL.findall(content) if receiver else ()):
                    if kind != "service":
                        continue
                    streams_from.setdefault(source, set()).add(f"unit:{receiver.group(1)}")
                unit = UNIT_PATH.match(path)
                for parent in PART_OF.findall(content) if unit else ():
                    part_of.setdefault(f"unit:{parent.removesuffix('.service')}", set()).add(
                        f"unit:{unit.group(1).removesuffix('.service')}")
            for apply, paths in commits(script):
                if any(files.get(p) != was.get(p) for p in paths):
                    found |= restarted_by(apply, script)
        for source in sorted(k for k in found if k.startswith("container:")):
            found |= streams_from.get(source.rsplit("/", 1)[-1], set())
        for parent in sorted(found):
            found |= part_of.get(parent, set())
        out[host] = found
    return out


def platform_units(captures: Iterable[StackCapture], host: str) -> list[str]:
    """The systemd units the program runs on ``host``: every one its scripts prove running
    (``ensure_service_enabled``) or restart or reload (``apply_unit``)."""
    units: set[str] = set()
    for cap in captures:
        for step in cap.host_steps(host) if host in cap.hosts else ():
            text = COMMENT.sub("", _script(step))  # the prelude's comments name UNIT
            units |= set(SERVICE.findall(text)) | {u for _, _, u in APPLY_UNIT.findall(text)}
    return sorted(u for u in units if not u.startswith(("$", '"')))


def snapshot_script(units: Iterable[str]) -> str:
    """Bash for a box: one line per container (``container|stack|service|name|id|started``) and
    per unit (``unit|name|invocation|active since``)."""
    fmt = ('container|{{index .Config.Labels "platform.stack"}}|{{index .Config.Labels "platform.service"}}'
           '|{{.Name}}|{{.Id}}|{{.State.StartedAt}}')
    lines = ["set -u",
             "if command -v docker >/dev/null; then",
             "  for c in $(docker ps -aq); do docker inspect -f " + shlex.quote(fmt) + ' "$c"; done',
             "fi"]
    for unit in units:
        q = shlex.quote(unit)
        lines.append(f'echo "unit|{unit}|$(systemctl show -p InvocationID --value {q})'
                     f'|$(systemctl show -p ActiveEnterTimestamp --value {q})"')
    return "\n".join(lines) + "\n"


def parse_snapshot(text: str) -> dict[str, tuple]:
    """A ``snapshot_script`` output as service -> identity: a container's sorted (Id, StartedAt)
    pairs (an exited one-off keeps its labels too), a unit's (InvocationID, ActiveEnterTimestamp);
    a unit that never ran is left out."""
    containers: dict[str, list[tuple[str, str]]] = {}
    units: dict[str, tuple] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if fields[0] == "container" and len(fields) == 6:
            _, stack, service, name, cid, started = fields
            if not stack or not service or "<no value>" in (stack, service):
                continue  # a unit's tool container (module docstring)
            containers.setdefault(f"container:{stack}/{service}", []).append((cid, started))
        elif fields[0] == "unit" and len(fields) == 4 and (fields[2] or fields[3]):
            # Scripts name a unit with or without ".service": one key for both.
            units[f"unit:{fields[1].removesuffix('.service')}"] = (fields[2], fields[3])
    return {**{k: tuple(sorted(v)) for k, v in containers.items()}, **units}


def changed(before: Mapping[str, tuple], after: Mapping[str, tuple]) -> set[str]:
    """The services restarted, recreated, started or gone between two parsed snapshots."""
    return {key for key in set(before) | set(after) if before.get(key) != after.get(key)}


def compare(expected: Mapping[str, set[str]], observed: Mapping[str, set[str]]) -> dict[str, dict[str, list[str]]]:
    """Per host: ``extra`` (restarted, not expected), ``missing`` (expected, not restarted),
    ``expected`` and ``observed``; a host with neither set is left out."""
    out = {}
    for host in sorted(set(expected) | set(observed)):
        want, seen = set(expected.get(host, ())), set(observed.get(host, ()))
        if want or seen:
            out[host] = {"expected": sorted(want), "observed": sorted(seen),
                         "extra": sorted(seen - want), "missing": sorted(want - seen)}
    return out


def snapshot(lab, units: Mapping[str, Iterable[str]]) -> dict[str, dict[str, tuple]]:
    """host -> parsed snapshot of each box named in ``units`` (host -> its platform units), by
    ``lab.exec``. Raises RuntimeError naming a box whose snapshot failed."""
    out = {}
    for host, names in units.items():
        proc = lab.exec(host, ["bash", "-c", snapshot_script(names)], timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{host}: the restart snapshot exited {proc.returncode}: "
                               f"{proc.stderr.decode(errors='replace')[-400:]}")
        out[host] = parse_snapshot(proc.stdout.decode(errors="replace"))
    return out


def observed_restarts(before: Mapping[str, Mapping[str, tuple]],
                      after: Mapping[str, Mapping[str, tuple]]) -> dict[str, set[str]]:
    """host -> ``changed`` between two ``snapshot`` results."""
    return {host: changed(before.get(host, {}), after.get(host, {})) for host in set(before) | set(after)}
