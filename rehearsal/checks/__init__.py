"""Checks of a converged host with pytest-testinfra; every expected value comes from the capture
(the scripts the stack sent and the containers it created), none is written here.

``check_host(lab, capture, host, state, proven)`` returns ``rehearsal.report.Check`` items:

- files: every ``put_file PATH MODE OWNER`` of the host's scripts (the last writer wins): exists,
  mode, owner:group and content; every directory of a ``directories_section``: mode and owner;
- sshd: every ``Key value`` of the sshd drop-ins written, in effect in ``sshd -T``;
- UFW: active, its default policies, and every rule the scripts add (by its comment);
- fail2ban: the ``sshd`` jail answers ``fail2ban-client status sshd``;
- unattended upgrades: ``apt-config`` shows the periodic settings written, the timer enabled;
- Docker daemon: the settings of the ``daemon.json`` written, read back from ``docker info`` and
  the default bridge (a setting with no effective reader is "not proven");
- users and sudoers: the SSH user exists, may sudo without a password, ``visudo -c`` passes;
- services and timers: every ``ensure_service_enabled`` unit enabled and active;
- containers: every container the converge created runs, is healthy (when it has a health
  check) and has the captured memory, CPUs, user, capabilities and binds. A stand-in without a
  real server (label ``org.platform-rehearsal.proven=false``) makes its health check "not
  proven: no server".

Commands run in the box as root through testinfra's docker backend (``docker exec`` on the lab's
harness daemon), so the checks see the host as its root would.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from typing import Any, Iterable, Optional

from rehearsal.capture import StackCapture, Step
from rehearsal.report import FAIL, NOT_PROVEN, PASS, Check

PUT_FILE = re.compile(r"^(?:if )?put_file (\S+) (\d{3,4}) (\S+) <<'(\w+)'(?: \|\| true|; then)?\n", re.M)
DIRECTORY = re.compile(r'stat -c %a:%[uU]:%[gG] (\S+) 2>/dev/null\)" != "(\d+):(\S+)"')
SERVICE = re.compile(r"^\s*ensure_service_enabled (\S+)", re.M)
UFW_RULE = re.compile(r"^\s*ufw (?:route )?(?:allow|deny|limit|reject) .*comment '([^']+)'", re.M)
UFW_DEFAULT = re.compile(r"^\s*ufw default (allow|deny|reject) (incoming|outgoing|routed)", re.M)
MULTI_VALUED = {"allowusers", "allowgroups", "denyusers", "denygroups"}
LABEL_PROVEN = "org.platform-rehearsal.proven"
MB = 1024 * 1024


def written_files(steps: Iterable[Step]) -> dict[str, dict[str, str]]:
    """{path: {"mode", "owner", "content", "step"}} of every put_file in the scripts, in step
    order (a later script writing the same path wins)."""
    files: dict[str, dict[str, str]] = {}
    for step in steps:
        text = step.inputs.get("stdin") or ""
        for m in PUT_FILE.finditer(text):
            end = text.index(f"\n{m.group(4)}\n", m.end() - 1)
            files[m.group(1)] = {"mode": m.group(2).lstrip("0") or "0", "owner": m.group(3),
                                 "content": text[m.end():end + 1], "step": step.name}
    return files


def directories(steps: Iterable[Step]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for step in steps:
        for m in DIRECTORY.finditer(step.inputs.get("stdin") or ""):
            out[m.group(1)] = (m.group(2), m.group(3))
    return out


def sshd_expectations(files: dict[str, dict[str, str]]) -> list[tuple[str, str, str]]:
    """(file, key, value) of every global setting in the sshd drop-ins written (lowercase key,
    as ``sshd -T`` prints it); settings under a ``Match`` block are left to ``sshd -T -C``."""
    out = []
    for path, f in sorted(files.items()):
        if not path.startswith("/etc/ssh/sshd_config.d/"):
            continue
        for line in f["content"].splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition(" ")
            if key.lower() == "match":
                break
            out.append((path, key.lower(), value.strip()))
    return out


class Box:
    """testinfra's docker backend on the lab's harness daemon."""

    def __init__(self, lab, name: str):
        import testinfra

        os.environ["DOCKER_HOST"] = lab.harness_docker_host
        self.host = testinfra.get_host(f"docker://root@{name}")
        self.name = name

    def run(self, command: str):
        return self.host.run(command)


def _check(checks: list[Check], name: str, ok: bool, detail: str = "") -> None:
    checks.append(Check(name=name, status=PASS if ok else FAIL, detail="" if ok else detail))


def check_files(box: Box, files: dict[str, dict[str, str]], dirs: dict[str, tuple[str, str]],
                checks: list[Check]) -> None:
    for path, f in sorted(files.items()):
        item = box.host.file(path)
        if not item.exists:
            _check(checks, f"file {path}", False, f"missing (written by {f['step']})")
            continue
        owner = _owner_as_expected(item, f["owner"])
        mode = format(item.mode, "o")
        same = item.content_string == f["content"]
        _check(checks, f"file {path} {f['mode']} {f['owner']}",
               mode == f["mode"] and owner == f["owner"] and same,
               f"mode {mode} owner {owner}" + ("" if same else ", content differs from the script's"))
    for path, (mode, owner) in sorted(dirs.items()):
        item = box.host.file(path)
        actual = f"{format(item.mode, 'o')}:{_owner_as_expected(item, owner)}" if item.exists else "missing"
        _check(checks, f"directory {path} {mode} {owner}", actual == f"{mode}:{owner}", actual)


def _owner_as_expected(item, owner: str) -> str:
    """The item's owner:group in the form of ``owner``, part by part: a number as the id, a
    name as the name (the scripts write either; the host may have no name for an image's id)."""
    user, _, group = owner.partition(":")
    return ":".join([str(item.uid) if user.isdigit() else item.user,
                     str(item.gid) if group.isdigit() else item.group])


def check_sshd(box: Box, files, checks: list[Check]) -> None:
    expected = sshd_expectations(files)
    if not expected:
        return
    effective = box.run("sshd -T")
    lines = set(effective.stdout.lower().splitlines())
    for path, key, value in expected:
        values = value.split() if key in MULTI_VALUED else [value]
        missing = [v for v in values if f"{key} {v.lower()}" not in lines]
        _check(checks, f"sshd -T: {key} {value}", effective.rc == 0 and not missing,
               f"sshd -T (rc {effective.rc}) lacks {key} {' '.join(missing)}: "
               + " ".join(sorted(l for l in lines if l.startswith(key + " "))))
    active = box.run("systemctl is-active ssh").stdout.strip()
    _check(checks, "service ssh running", active == "active", f"is-active {active}")


def check_ufw(box: Box, scripts: str, checks: list[Check]) -> None:
    if "ufw " not in scripts:
        return
    status = box.run("ufw status verbose")
    _check(checks, "ufw active", "Status: active" in status.stdout, status.stdout[-300:] + status.stderr[-300:])
    for policy, direction in sorted(set(UFW_DEFAULT.findall(scripts))):
        _check(checks, f"ufw default {policy} {direction}", f"{policy} ({direction})" in status.stdout,
               next((l for l in status.stdout.splitlines() if l.startswith("Default:")), ""))
    for comment in sorted(set(UFW_RULE.findall(scripts))):
        _check(checks, f"ufw rule '{comment}'", f"# {comment}" in status.stdout, "no rule with that comment")


def check_fail2ban(box: Box, files, checks: list[Check]) -> None:
    if not any(p.startswith("/etc/fail2ban/") for p in files):
        return
    jail = box.run("fail2ban-client status sshd")
    _check(checks, "fail2ban jail sshd running", jail.rc == 0 and "Currently banned" in jail.stdout,
           (jail.stdout + jail.stderr)[-400:])


def check_unattended(box: Box, files, checks: list[Check]) -> None:
    periodic = files.get("/etc/apt/apt.conf.d/20auto-upgrades")
    if not periodic:
        return
    for key, value in re.findall(r'^(APT::Periodic::[\w-]+) "([^"]*)";', periodic["content"], re.M):
        dump = box.run(f"apt-config dump {shlex.quote(key)}")
        _check(checks, f"apt-config {key} {value}", f'{key} "{value}";' in dump.stdout, dump.stdout.strip())
    _check(checks, "package unattended-upgrades installed", box.host.package("unattended-upgrades").is_installed)
    timer = box.run("systemctl is-enabled apt-daily-upgrade.timer").stdout.strip()
    _check(checks, "apt-daily-upgrade.timer enabled", timer == "enabled", f"is-enabled {timer}")


def check_docker_daemon(box: Box, files, checks: list[Check]) -> None:
    daemon = files.get("/etc/docker/daemon.json")
    if not daemon:
        return
    settings = json.loads(daemon["content"])
    info_run = box.run("docker info --format '{{json .}}'")
    if info_run.rc != 0:
        _check(checks, "docker info", False, info_run.stderr[-300:])
        return
    info = json.loads(info_run.stdout)
    bridge = box.run("docker network inspect bridge --format '{{json .Options}}'")
    options = json.loads(bridge.stdout) if bridge.rc == 0 else {}
    readers = {
        "log-driver": lambda v: info.get("LoggingDriver") == v,
        "live-restore": lambda v: info.get("LiveRestoreEnabled") is bool(v),
        "icc": lambda v: options.get("com.docker.network.bridge.enable_icc") == str(v).lower(),
        "storage-driver": lambda v: info.get("Driver") == v,
        "data-root": lambda v: info.get("DockerRootDir") == v,
    }
    for key, value in sorted(settings.items()):
        reader = readers.get(key)
        if reader is None:
            checks.append(Check(f"docker daemon {key} {json.dumps(value)}", NOT_PROVEN,
                                "no effective-setting reader in docker info for this key"))
        else:
            _check(checks, f"docker daemon {key} {json.dumps(value)}", reader(value),
                   f"docker info: {info.get('LoggingDriver')}, live-restore {info.get('LiveRestoreEnabled')}, "
                   f"bridge options {options}")


def check_users(box: Box, user: str, scripts: str, checks: list[Check]) -> None:
    u = box.host.user(user)
    _check(checks, f"user {user} exists", u.exists)
    sudo = box.run(f"sudo -n -l -U {shlex.quote(user)}")
    _check(checks, f"{user} may sudo without password", "NOPASSWD: ALL" in sudo.stdout, sudo.stdout[-300:])
    visudo = box.run("visudo -c")
    _check(checks, "visudo -c", visudo.rc == 0, (visudo.stdout + visudo.stderr)[-300:])
    if "usermod -aG docker" in scripts:
        _check(checks, f"{user} in group docker", "docker" in u.groups, str(u.groups))


def check_services(box: Box, scripts: str, checks: list[Check]) -> None:
    for unit in sorted(set(SERVICE.findall(scripts))):
        q = shlex.quote(unit)
        enabled = box.run(f"systemctl is-enabled {q}").stdout.strip()
        active = box.run(f"systemctl is-active {q}").stdout.strip()
        name = f"unit {unit} enabled and active"
        if enabled == "enabled" and active != "active" and \
                box.run(f"systemctl show -p ConditionResult --value {q}").stdout.strip() == "no":
            # e.g. systemd-timesyncd's ConditionVirtualization=!container: a box is a container,
            # the VM it stands for is not.
            condition = box.run(f"systemctl status --no-pager {q} | grep -m1 -o 'Condition[A-Za-z]*=.* was not met'").stdout.strip()
            checks.append(Check(name=name, status=NOT_PROVEN,
                                detail=f"enabled; its Condition skips it in a box (a container): {condition[:200]}"))
            continue
        missing = _missing_kernel_feature(box, unit) if enabled != "enabled" else None
        if missing:
            checks.append(Check(name=name, status=NOT_PROVEN, detail=f"{missing}; is-enabled {enabled}"))
            continue
        _check(checks, name, enabled == "enabled" and active == "active",
               f"is-enabled {enabled or 'no such unit'}, is-active {active}")


# Units the program's scripts leave disabled, on purpose, where the kernel lacks what they need
# (a container VPS, such as a box): the probe the script itself runs, and what its failure means.
# Kernel audit answers only the initial PID namespace; WireGuard needs the kernel module or
# /dev/net/tun for wireguard-go.
KERNEL_FEATURES = {
    "auditd": ("auditctl -s", "the kernel refuses audit in a box (a container)"),
    "wg-quick@": ("[ -d /sys/module/wireguard ] || modprobe -q wireguard 2>/dev/null || [ -c /dev/net/tun ]",
                  "no WireGuard in the box's kernel and no /dev/net/tun (a container)"),
}


def _missing_kernel_feature(box: Box, unit: str) -> Optional[str]:
    """Why ``unit`` cannot run in ``box`` (the probe's failure, with its output), or None when
    the unit has no such probe or the probe passes (then a disabled unit is a failure)."""
    for prefix, (probe, reason) in KERNEL_FEATURES.items():
        if unit == prefix or (prefix.endswith("@") and unit.startswith(prefix)):
            result = box.run(probe)
            if result.rc != 0:
                output = (result.stdout + result.stderr).strip()[:160]
                return f"{reason}: {probe.split(' ||')[0]}: {output}" if output else reason
    return None


def _inspect(box: Box, ident: str) -> Optional[dict]:
    out = box.run(f"docker inspect {shlex.quote(ident)}")
    if out.rc != 0:
        return None
    return json.loads(out.stdout)[0]


def check_containers(box: Box, steps: list[Step], state: dict[str, Any], proven: dict[str, bool],
                     checks: list[Check], health_timeout_s: float = 240.0) -> None:
    containers = [s for s in steps if s.kind == "container"]
    pending = {}
    for step in containers:
        recorded = state.get(step.urn)
        if not recorded:
            _check(checks, f"container {step.name} created", False, "the converge did not create it")
            continue
        pending[step.name] = (step, recorded["id"])
    deadline = time.monotonic() + health_timeout_s
    final: dict[str, dict] = {}
    while pending:
        for name, (step, ident) in list(pending.items()):
            data = _inspect(box, ident)
            health = (data or {}).get("State", {}).get("Health", {}).get("Status")
            if data is None or health in (None, "healthy", "unhealthy") or time.monotonic() > deadline:
                final[name] = data or {}
                del pending[name]
        if pending:
            time.sleep(3)
    for step in containers:
        if step.name not in final:
            continue
        i, data = step.inputs, final[step.name]
        if not data:
            _check(checks, f"container {step.name} exists", False, "docker inspect found nothing")
            continue
        state_ = data["State"]
        hc, cfg = data["HostConfig"], data["Config"]
        labels = cfg.get("Labels") or {}
        _check(checks, f"container {step.name} running", state_.get("Running") is True,
               f"{state_.get('Status')} exit {state_.get('ExitCode')} restarts {data.get('RestartCount')}")
        if i.get("healthcheck"):
            health = state_.get("Health") or {}
            status = health.get("Status")
            log = (health.get("Log") or [{}])[-1].get("Output", "")[-300:] if health.get("Log") else ""
            if labels.get(LABEL_PROVEN) == "false":
                checks.append(Check(f"container {step.name} healthy", NOT_PROVEN,
                                    f"not proven: no server ({i.get('image')} is a stand-in that only "
                                    f"answers its health check; status {status})"))
            else:
                _check(checks, f"container {step.name} healthy", status == "healthy", f"health {status}: {log}")
        if i.get("memory"):
            _check(checks, f"container {step.name} memory {i['memory']} MB",
                   hc.get("Memory") == int(i["memory"]) * MB, f"Memory {hc.get('Memory')}")
        if i.get("memoryReservation"):
            _check(checks, f"container {step.name} memory reservation {i['memoryReservation']} MB",
                   hc.get("MemoryReservation") == int(i["memoryReservation"]) * MB,
                   f"MemoryReservation {hc.get('MemoryReservation')}")
        if i.get("cpus"):
            _check(checks, f"container {step.name} cpus {i['cpus']}",
                   hc.get("NanoCpus") == int(round(float(i["cpus"]) * 1e9)), f"NanoCpus {hc.get('NanoCpus')}")
        if i.get("user"):
            _check(checks, f"container {step.name} user {i['user']}", cfg.get("User") == i["user"],
                   f"User {cfg.get('User')!r}")
        caps = i.get("capabilities") or {}
        if caps:
            _check(checks, f"container {step.name} capabilities",
                   sorted(hc.get("CapAdd") or []) == sorted(caps.get("adds") or [])
                   and sorted(hc.get("CapDrop") or []) == sorted(caps.get("drops") or []),
                   f"CapAdd {hc.get('CapAdd')} CapDrop {hc.get('CapDrop')}")
        expected_binds = {(v.get("hostPath") or v.get("volumeName"), v["containerPath"], not v.get("readOnly"))
                          for v in i.get("volumes") or []}
        actual = {(m.get("Source") if m.get("Type") == "bind" else m.get("Name"), m.get("Destination"),
                   bool(m.get("RW"))) for m in data.get("Mounts") or []}
        _check(checks, f"container {step.name} mounts", expected_binds <= actual,
               f"missing {sorted(expected_binds - actual)}")
        if i.get("readOnly"):
            _check(checks, f"container {step.name} read-only root", hc.get("ReadonlyRootfs") is True)


def check_host(lab, capture: StackCapture, host: str, state: dict[str, Any],
               proven: dict[str, bool]) -> list[Check]:
    """Every check of ``host`` (see the module docstring); a check that cannot run is a fail."""
    steps = capture.host_steps(host)
    commands = [s for s in steps if s.kind == "command"]
    scripts = "\n".join(s.inputs.get("stdin") or "" for s in commands)
    files = written_files(commands)
    checks: list[Check] = []
    box = Box(lab, host)
    families = [
        ("files", lambda: check_files(box, files, directories(commands), checks)),
        ("sshd", lambda: check_sshd(box, files, checks)),
        ("ufw", lambda: check_ufw(box, scripts, checks)),
        ("fail2ban", lambda: check_fail2ban(box, files, checks)),
        ("unattended upgrades", lambda: check_unattended(box, files, checks)),
        ("docker daemon", lambda: check_docker_daemon(box, files, checks)),
        ("users", lambda: check_users(box, capture.hosts[host].user, scripts, checks)),
        ("units", lambda: check_services(box, scripts, checks)),
        ("containers", lambda: check_containers(box, steps, state, proven, checks)),
    ]
    for family, run in families:
        try:
            run()
        except Exception as exc:  # noqa: BLE001 - a check that cannot run is a failure, never a pass
            checks.append(Check(f"{family} checks ran", FAIL, f"{type(exc).__name__}: {exc}"))
    return checks
