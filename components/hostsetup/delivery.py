"""The host-delivery path: the prelude and epilogue every setup script runs in, and the one
way a file reaches a host (``deliver_file``, or ``staged_file`` for the files of a directory
committed together; a quoted heredoc written only when it differs, then validated, applied and
committed) or a directory does (``directories_section``)."""

from __future__ import annotations

import shlex
from typing import Sequence


DEPLOY_USER = "deploy"

# The scripts still name components/hostsetup.py, the package's former module: a host re-runs
# every script whose text changes, so the header stays as it was.
PRELUDE = r"""#!/usr/bin/env bash
# Rendered by components/hostsetup.py. Idempotent: a second run reports 0 changes.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
CHANGES=0

note_change() {
  CHANGES=$((CHANGES + 1))
  echo "changed: $1"
}

# Every file put_file replaces is a transaction: the previous version (or the fact that there
# was none) is kept under $PENDING until the script ends well. A run that stops after replacing
# it (an apply that fails, a lost connection) leaves it there, and the next run puts it back
# first, so that run finds the file different and applies it again instead of skipping it.
PENDING=/var/lib/platform/pending
STAGED=()

pending_path() {
  echo "$PENDING/${1//\//%}"
}

# restore_previous PATH -- puts back the version of PATH that put_file replaced.
restore_previous() {
  local saved
  saved="$(pending_path "$1")"
  if [ -e "$saved.absent" ]; then
    rm -f "$1" "$saved.absent"
  elif [ -e "$saved" ]; then
    mv -f "$saved" "$1"
  fi
}

# put_file PATH MODE OWNER:GROUP < content -- writes only when the content differs; returns 1
# when it was already current. Callers test it with `if`, which suspends `set -e` inside the
# function, so every failure here exits explicitly.
put_file() {
  local path="$1" mode="$2" owner="$3" tmp format=%a:%U:%G saved
  # A numeric owner or group (an image's uid:gid) is compared as numbers: the host may have no
  # such name, or a name for it.
  case "${owner%%:*}" in *[!0-9]*) ;; *) format=%a:%u:${format##*:} ;; esac
  case "${owner##*:}" in *[!0-9]*) ;; *) format=${format%:*}:%g ;; esac
  saved="$(pending_path "$path")"
  if [ -e "$saved" ] || [ -e "$saved.absent" ]; then
    echo "restoring $path: the run that replaced it did not finish"
    restore_previous "$path" || exit 1
  fi
  tmp="$(mktemp)" || exit 1
  cat >"$tmp" || exit 1
  if [ -f "$path" ] && cmp -s "$tmp" "$path" \
    && [ "$(stat -c "$format" "$path")" = "${mode#0}:${owner}" ]; then
    rm -f "$tmp"
    return 1
  fi
  install -d -m 0700 "$PENDING" || exit 1
  if [ -e "$path" ]; then cp -p "$path" "$saved" || exit 1; else : >"$saved.absent" || exit 1; fi
  STAGED+=("$path")
  install -D -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$tmp" "$path" \
    || { echo "cannot write $path" >&2; rm -f "$tmp"; restore_previous "$path"; exit 1; }
  rm -f "$tmp"
  note_change "$path"
}

# run_step COMMAND-LINE -- the command line (it may call this script's functions) in a subshell
# with errexit, so every command of it counts: its status is the status of the step.
run_step() {
  local status
  set +e
  (set -e; eval "$1")
  status=$?
  set -e
  return "$status"
}

# commit_files VALIDATE APPLY PATH... -- after put_file replaced the PATHs: VALIDATE judges them
# where the tool reads them (sshd -t, nginx -t, visudo -c see the whole configuration, includes
# and all), then APPLY makes the service use them. If either fails, the previous files are put
# back (and APPLY run again, so the service is back on them) and the script fails; the next
# run finds the files different and tries again.
commit_files() {
  local validate="$1" apply="$2" path
  shift 2
  if ! run_step "$validate"; then
    for path in "$@"; do restore_previous "$path"; done
    echo "rejected: $* fails its check ($validate); the previous version is back in place" >&2
    exit 1
  fi
  if ! run_step "$apply"; then
    local previous=no
    for path in "$@"; do
      [ -e "$(pending_path "$path")" ] && previous=yes
      restore_previous "$path"
    done
    if [ "$previous" = no ]; then
      # Nothing to go back to (a first run): the new file is removed, and nothing re-applied.
      echo "failed: applying $* ($apply); the new version is removed again, the next run retries" >&2
    elif run_step "$apply"; then
      echo "failed: applying $* ($apply); the previous version is back in place and applied" >&2
    else
      echo "failed: applying $* ($apply); the previous version is back in place, and applying it failed too" >&2
    fi
    exit 1
  fi
}

# wait_for SECONDS COMMAND... -- succeeds as soon as COMMAND does (tried once a second), fails
# after SECONDS tries.
wait_for() {
  local seconds="$1" try
  shift
  for try in $(seq 1 "$seconds"); do
    "$@" >/dev/null 2>&1 && return 0
    if [ "$try" -lt "$seconds" ]; then sleep 1; fi
  done
  return 1
}

# listening PORT -- a TCP socket listens on PORT (a status command: sshd, the session collector).
listening() {
  ss -Hltn "sport = :$1" | grep -q .
}

missing_packages() {
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
  done
}

ensure_packages() {
  local missing=()
  [ -n "$(missing_packages "$@")" ] || return 0
  # pulumi-command runs a host's scripts in parallel, and apt refuses at once when another apt
  # holds its locks: take turns (flock), and wait for apt's own timers (DPkg::Lock::Timeout).
  exec 9>/var/lib/apt/platform-setup.lock
  flock -w 900 9 || { echo "ensure_packages: apt busy for 15 minutes" >&2; exit 1; }
  mapfile -t missing < <(missing_packages "$@")
  if [ "${#missing[@]}" -gt 0 ]; then
    apt-get -o DPkg::Lock::Timeout=900 update -qq
    apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    note_change "packages ${missing[*]}"
  fi
  exec 9>&-
}

# unit_ready UNIT SECONDS [STATUS COMMAND...] -- succeeds once UNIT is active, its own status
# command (when given) answers, and both still hold on the same run of the unit (InvocationID)
# for three checks a second apart: a unit that starts and dies a moment later (Type=simple
# forks, then exits; Restart= starts it again) is "active" for a moment only. Fails after
# SECONDS tries.
unit_ready() {
  local unit="$1" seconds="$2" try run seen="" steady=0
  shift 2
  for try in $(seq 1 "$seconds"); do
    run="$(systemctl show -p InvocationID --value "$unit" 2>/dev/null)" || run=""
    if systemctl is-active --quiet "$unit" && { [ "$#" -eq 0 ] || "$@" >/dev/null 2>&1; }; then
      if [ "$run" = "$seen" ]; then steady=$((steady + 1)); else seen="$run" steady=1; fi
      [ "$steady" -lt 3 ] || return 0
    else
      steady=0 seen=""
      # Failed (it exited and no Restart= brings it back): nothing to wait for.
      ! systemctl is-failed --quiet "$unit" || return 1
    fi
    if [ "$try" -lt "$seconds" ]; then sleep 1; fi
  done
  return 1
}

# apply_unit ACTION UNIT SECONDS [STATUS COMMAND...] -- the one way a script restarts or reloads
# a systemd unit: ACTION is restart, reload or service-restart (the unit's init script: auditd
# refuses `systemctl restart`); try-ACTION acts only when the unit is active (one not running
# yet is started, and proven, by ensure_service_enabled). Then the unit must be proven running
# (unit_ready) within SECONDS; if not, its status command's answer and its journal tail go to
# stderr and this fails naming the unit, so commit_files puts back the files that triggered
# it, applies again and fails the step, and the next run retries.
apply_unit() {
  local action="$1" unit="$2" seconds="$3"
  shift 3
  case "$action" in
    try-*)
      systemctl is-active --quiet "$unit" || return 0
      action="${action#try-}" ;;
  esac
  case "$action" in
    restart | reload) systemctl "$action" "$unit" || { unit_not_running "$unit" "systemctl $action failed" "$@"; return 1; } ;;
    service-restart) service "$unit" restart || { unit_not_running "$unit" "service $unit restart failed" "$@"; return 1; } ;;
    *) echo "apply_unit: unknown action $action" >&2; return 1 ;;
  esac
  unit_ready "$unit" "$seconds" "$@" \
    || { unit_not_running "$unit" "not proven running ${seconds} s after its ${action}" "$@"; return 1; }
}

# unit_not_running UNIT REASON [STATUS COMMAND...] -- why UNIT failed, on stderr: the reason,
# the unit's state, its status command's answer, its journal tail.
unit_not_running() {
  local unit="$1" reason="$2"
  shift 2
  echo "unit $unit: $reason (state: $(systemctl is-active "$unit" 2>&1))" >&2
  systemctl status --no-pager -n 0 "$unit" >&2 || true
  if [ "$#" -gt 0 ]; then
    echo "unit $unit: its status command '$*' answers:" >&2
    "$@" >&2 || true
  fi
  echo "unit $unit: journal tail:" >&2
  journalctl -u "$unit" -n 20 --no-pager >&2 || true
}

# ensure_service_enabled UNIT [STATUS COMMAND...] -- the unit enabled and proven running: active
# after a start (unit_ready: it stays up), and, when given, its own status command answering
# (retried while it comes up). A change is counted only when the state really changed, so a
# unit whose Condition*= skips it on this host (systemd-timesyncd has
# ConditionVirtualization=!container: a container-based VPS) is reported as skipped on every
# run instead of "changed"; any other unit that stays inactive fails the script with the
# unit's own status and journal.
ensure_service_enabled() {
  local unit="$1"
  shift
  if ! systemctl is-enabled --quiet "$unit" 2>/dev/null; then
    systemctl enable "$unit" >/dev/null || { echo "cannot enable $unit" >&2; exit 1; }
    note_change "service $unit enabled"
  fi
  if ! systemctl is-active --quiet "$unit"; then
    systemctl start "$unit" || { service_not_running "$unit" "its start failed"; }
    if ! systemctl is-active --quiet "$unit" \
      && [ "$(systemctl show -p ConditionResult --value "$unit")" = "no" ]; then
      echo "skipped: $unit does not run on this host (a Condition of the unit is not met)"
      return 0
    fi
    unit_ready "$unit" 30 "$@" || { unit_not_running "$unit" "not proven running 30 s after its start" "$@"; exit 1; }
    note_change "service $unit started"
    return 0
  fi
  if [ "$#" -gt 0 ] && ! wait_for 30 "$@"; then
    "$@" >&2 || true
    service_not_running "$unit" "its status command '$*' fails"
  fi
}

service_not_running() {
  echo "service $1 is enabled but not running: $2" >&2
  systemctl status --no-pager "$1" >&2 || true
  journalctl -u "$1" -n 20 --no-pager >&2 || true
  exit 1
}
"""

EPILOGUE = """
# The run ended well: every file it replaced is committed.
for staged in ${STAGED[@]+"${STAGED[@]}"}; do
  rm -f "$(pending_path "$staged")" "$(pending_path "$staged").absent"
done
echo "platform-setup: ${CHANGES} changes"
"""


UNIT_ACTIONS = ("restart", "reload", "service-restart")


def unit_apply(action: str, unit: str, *status: str, seconds: int = 30) -> str:
    """The bash command line (for ``deliver_file``'s ``on_change``) that applies a change to the
    systemd ``unit``: ``action`` is one of ``UNIT_ACTIONS``, or ``try-`` one of them (only when
    the unit is active); then the unit is proven running within ``seconds`` (polled once a
    second): active on one run of it for three checks, and ``status`` (its own status command,
    as words: ``("fail2ban-client", "status", "sshd")``) answering. On failure the step fails
    naming the unit, with its journal tail, and the files that triggered it are put back
    (``apply_unit`` in the prelude). Raises ValueError for an unknown action."""
    if action.removeprefix("try-") not in UNIT_ACTIONS:
        raise ValueError(f"unit action {action!r}: expected one of {UNIT_ACTIONS}, or try- one of them")
    return shlex.join(["apply_unit", action, unit, str(seconds), *status])


def deliver_file(path: str, mode: str, owner: str, content: str, on_change: str = "",
                 validate: str = "") -> str:
    """The host-delivery primitive: every file the program puts on a host is a section this
    renders (``staged_file`` for the files of one directory committed together), run by a
    ``script`` over SSH.

    Bash that writes ``content`` to ``path`` (``mode``, ``owner`` as "user:group", names or
    numbers) when it differs. With ``validate`` or ``on_change`` (bash command lines; they may
    call the script's functions) the write is validate, apply, commit: ``validate`` judges the
    new file in place, ``on_change`` applies it, and if either fails the previous file is put
    back and the script fails, so the next run retries (``commit_files`` in the prelude)."""
    marker = _marker(content)
    body = content if content.endswith("\n") else content + "\n"
    if not on_change and not validate:
        return f"put_file {path} {mode} {owner} <<'{marker}' || true\n{body}{marker}\n"
    steps = f"{shlex.quote(validate or ':')} {shlex.quote(on_change or ':')}"
    # The steps are quoted on purpose: commit_files evaluates them, after the write.
    directive = "  # shellcheck disable=SC2016\n" if "$" in steps else ""
    return (f"if put_file {path} {mode} {owner} <<'{marker}'; then\n{body}{marker}\n"
            f"{directive}  commit_files {steps} {path}\nfi\n")


def staged_file(path: str, mode: str, owner: str, content: str, *, record: str) -> str:
    """Bash that writes ``content`` to ``path`` when it differs and then appends ``path`` to the
    bash array ``record``, for one ``commit_files`` over several files (a service's directory)."""
    marker = _marker(content)
    body = content if content.endswith("\n") else content + "\n"
    return f"if put_file {path} {mode} {owner} <<'{marker}'; then\n{body}{marker}\n  {record}+=({path})\nfi\n"


def commit_staged(validate: str, apply: str, *, record: str = "changed", when: str = '[ -n "$cid" ]') -> str:
    """Bash that commits the files ``staged_file`` recorded in the bash array ``record``, when
    there are any and ``when`` holds (by default: the consumer's container ``$cid`` runs):
    ``validate`` judges them in place, ``apply`` applies them, and if either fails every one is
    put back and the script fails (``commit_files`` in the prelude)."""
    return (f'if [ "${{#{record}[@]}}" -gt 0 ] && {when}; then\n'
            # The steps are quoted on purpose: commit_files evaluates them, with $cid set.
            + ("  # shellcheck disable=SC2016\n" if "$" in validate + apply else "")
            + f'  commit_files {shlex.quote(validate)} {shlex.quote(apply)} "${{{record}[@]}}"\nfi')


HEREDOC_MARKER = "PLATFORM_EOF"
"""The line that ends a delivered file's heredoc (``_marker`` numbers it when the content
holds it); the config boundary refuses values that contain it."""


def _marker(content: str) -> str:
    # The content is often an output (a certificate, a file with a password) rendered inside an
    # apply, where nothing may be rejected; so the marker is chosen to differ from every line
    # of the content (a quoted heredoc ends only at a line equal to its marker).
    lines = set(content.splitlines())
    marker, serial = HEREDOC_MARKER, 0
    while marker in lines:
        serial += 1
        marker = f"{HEREDOC_MARKER}_{serial}"
    return marker


def script(*sections: str) -> str:
    return PRELUDE + "\n" + "\n".join(s.strip("\n") + "\n" for s in sections) + EPILOGUE


def stat_format(owner: str) -> str:
    """The ``stat -c`` format that prints ``mode:owner:group`` in the form ``owner`` is written
    in ("root:adm" or "65534:65534", or mixed), so a comparison holds on a host that has no
    name for an image's numeric uid (stat prints UNKNOWN there) or names the number."""
    user, _, group = owner.partition(":")
    return "%a:" + ("%u" if user.isdigit() else "%U") + ":" + ("%g" if group.isdigit() else "%G")


def directories_section(paths: Sequence[tuple[str, str, str]]) -> str:
    """Directories as (path, mode, owner:group), created or corrected only when they differ."""
    lines = []
    for path, mode, owner in paths:
        lines += [
            f'if [ "$(stat -c {stat_format(owner)} {path} 2>/dev/null)" != "{mode.lstrip("0")}:{owner}" ]; then',
            f"  install -d -m {mode} -o {owner.split(':')[0]} -g {owner.split(':')[1]} {path}",
            f'  note_change "{path}"',
            "fi",
        ]
    return "\n".join(lines)
