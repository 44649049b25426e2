"""Host setup as data: cloud-init and idempotent bash scripts rendered by pure functions.

Cloud-init is kept minimal and constant (a droplet's ``user_data`` forces replacement when it
changes): it only creates the deploy user and closes root and password logins. Everything else
is a script run over SSH by a remote command, re-run only when its text changes. Each script is
``set -euo pipefail``, shellcheck-clean, and idempotent: a second run prints ``0 changes``.
"""

from __future__ import annotations

import json
import shlex
import textwrap
from dataclasses import dataclass, replace
from typing import Sequence

DEPLOY_USER = "deploy"

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

# ensure_service_enabled UNIT [STATUS COMMAND...] -- the unit enabled and proven running: active
# after a start, and, when given, its own status command answering (retried while it comes up).
# A change is counted only when the state really changed, so a unit whose Condition*= skips it
# on this host (systemd-timesyncd has ConditionVirtualization=!container: a container-based VPS)
# is reported as skipped on every run instead of "changed"; any other unit that stays inactive
# fails the script with the unit's own status and journal.
ensure_service_enabled() {
  local unit="$1"
  shift
  if ! systemctl is-enabled --quiet "$unit" 2>/dev/null; then
    systemctl enable "$unit" >/dev/null || { echo "cannot enable $unit" >&2; exit 1; }
    note_change "service $unit enabled"
  fi
  if ! systemctl is-active --quiet "$unit"; then
    systemctl start "$unit" || { service_not_running "$unit" "its start failed"; }
    if systemctl is-active --quiet "$unit"; then
      note_change "service $unit started"
    elif [ "$(systemctl show -p ConditionResult --value "$unit")" = "no" ]; then
      echo "skipped: $unit does not run on this host (a Condition of the unit is not met)"
      return 0
    else
      service_not_running "$unit" "it is not active after its start"
    fi
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


def _marker(content: str) -> str:
    # The content is often an output (a certificate, a file with a password) rendered inside an
    # apply, where nothing may be rejected; so the marker is chosen to differ from every line
    # of the content (a quoted heredoc ends only at a line equal to its marker).
    lines = set(content.splitlines())
    marker, serial = "PLATFORM_EOF", 0
    while marker in lines:
        serial += 1
        marker = f"PLATFORM_EOF_{serial}"
    return marker


def script(*sections: str) -> str:
    return PRELUDE + "\n" + "\n".join(s.strip("\n") + "\n" for s in sections) + EPILOGUE


# --- sshd -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SshdPolicy:
    allow_users: Sequence[str] = (DEPLOY_USER,)
    max_auth_tries: int = 3
    allow_tcp_forwarding: bool = False  # the bastion needs it for ProxyJump to internal hosts
    port: int = 22
    permit_open: Sequence[str] = ()
    """``host:port`` targets local forwarding may reach (an admin API behind the firewall);
    ignored when all forwarding is allowed."""
    key_users: Sequence[str] | None = None
    """The accounts that may log in with a key in their ``~/.ssh/authorized_keys`` (the deploy
    user, a bootstrap user); every other account has none (``AuthorizedKeysFile none``), so an
    engineer's long-lived key left on a host opens nothing. None: every allowed user (no
    certificate authority configured)."""
    trusted_user_ca: bool = False
    """sshd accepts user certificates signed by the stack's SSH certificate authority
    (``USER_CA_PATH``) for the principals listed in ``PRINCIPALS_DIR/<account>``."""


# OpenSSH's default MAC list still offers umac-64 and hmac-sha1 (CIS Ubuntu 24.04 5.1.15,
# dev-sec ssh-baseline sshd-03); these are the strong ones every client since OpenSSH 6.2 speaks.
SSHD_MACS = "hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com"


USER_CA_PATH = "/etc/ssh/platform_user_ca.pub"
PRINCIPALS_DIR = "/etc/ssh/auth_principals"


def render_sshd_config(policy: SshdPolicy) -> str:
    """A drop-in for /etc/ssh/sshd_config.d/. Named 00-* because sshd keeps the first value it
    reads, so it wins over cloud-init's 50-cloud-init.conf.

    With ``trusted_user_ca``: ``TrustedUserCAKeys`` and one ``AuthorizedPrincipalsFile`` per
    account (``%u``: an account without a file accepts no certificate), and authorized_keys read
    only for ``key_users`` (a ``Match User`` block; a Match in an included file ends with that
    file, OpenSSH 8.2+, so it cannot swallow the main file's settings). Raises ValueError when no
    user is allowed."""
    if not policy.allow_users:
        raise ValueError("sshd needs at least one allowed user")
    return _sshd_main(policy) + _sshd_access(policy)


def _sshd_access(policy: SshdPolicy) -> str:
    if not policy.trusted_user_ca and policy.key_users is None:
        return ""
    lines = []
    if policy.trusted_user_ca:
        lines += [f"TrustedUserCAKeys {USER_CA_PATH}",
                  f"AuthorizedPrincipalsFile {PRINCIPALS_DIR}/%u"]
    if policy.key_users is not None:
        lines.append("AuthorizedKeysFile none")
        if policy.key_users:
            lines += [f"Match User {','.join(policy.key_users)}",
                      "    AuthorizedKeysFile .ssh/authorized_keys"]
    return "\n".join(lines) + "\n"


def _sshd_main(policy: SshdPolicy) -> str:
    return textwrap.dedent(f"""\
        # Managed by the platform program (components/hostsetup.py).
        Port {policy.port}
        PermitRootLogin no
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PermitEmptyPasswords no
        PubkeyAuthentication yes
        AuthenticationMethods publickey
        MaxAuthTries {policy.max_auth_tries}
        LoginGraceTime 30
        MaxStartups 10:30:60
        X11Forwarding no
        AllowAgentForwarding no
        AllowTcpForwarding {_forwarding(policy)}
        ClientAliveInterval 300
        ClientAliveCountMax 2
        MACs {SSHD_MACS}
        AllowUsers {" ".join(policy.allow_users)}
        """)


def _forwarding(policy: SshdPolicy) -> str:
    if policy.allow_tcp_forwarding:
        return "yes"
    if policy.permit_open:
        return "local\n        PermitOpen " + " ".join(policy.permit_open)
    return "no"


def sshd_section(policy: SshdPolicy) -> str:
    return deliver_file(
        "/etc/ssh/sshd_config.d/00-platform.conf", "0644", "root:root",
        render_sshd_config(policy),
        validate="sshd -t",
        on_change="systemctl reload ssh 2>/dev/null || systemctl reload sshd",
    )


ADMIN_USER = "ops"
"""The account engineers log in as, with a short-lived certificate from the stack's SSH CA
(``scripts/ssh_cert.py``); it has no authorized_keys and no password."""


@dataclass(frozen=True)
class AdminAccess:
    """Just-in-time SSH: the public half of the stack's SSH certificate authority (an OpenSSH
    public key line, an ``Input`` because it is derived from the secret CA key) and the
    certificate principals that may log in as ``ADMIN_USER``."""

    ca_public_key: "pulumi.Input[str]"
    principals: Sequence[str]


def render_principals(principals: Sequence[str]) -> str:
    """An ``AuthorizedPrincipalsFile``: one principal a line (sshd(8) AUTHORIZED_KEYS FILE
    FORMAT applies to it); an empty file admits no certificate."""
    return "".join(f"{p}\n" for p in principals)


def admin_access_section(ca_public_key: str, principals: Sequence[str],
                         admin_user: str = ADMIN_USER) -> str:
    """The admin account (locked password, passwordless sudo, no authorized_keys), the CA's
    public key sshd trusts and one principals file per account: ``admin_user`` gets
    ``principals``, the deploy user an empty file (its key is its only way in). Runs before the
    sshd drop-in that names these files."""
    sudoers = (f"# Managed by the platform program: engineers with a certificate for {admin_user}.\n"
               f"{admin_user} ALL=(ALL) NOPASSWD:ALL\n")
    return "\n".join([
        f"if ! id -u {admin_user} >/dev/null 2>&1; then",
        f"  useradd --create-home --shell /bin/bash {admin_user}",
        f'  note_change "user {admin_user}"',
        "fi",
        f'if [ "$(passwd -S {admin_user} | cut -d" " -f2)" != "L" ]; then',
        f"  passwd -l {admin_user} >/dev/null",
        f'  note_change "password of {admin_user} locked"',
        "fi",
        # A key someone left there opens nothing (AuthorizedKeysFile none), but it is removed so
        # nobody mistakes it for a way in.
        f"if [ -e /home/{admin_user}/.ssh/authorized_keys ]; then",
        f"  rm -f /home/{admin_user}/.ssh/authorized_keys",
        f'  note_change "long-lived keys of {admin_user} removed"',
        "fi",
        deliver_file(f"/etc/sudoers.d/90-platform-{admin_user}", "0440", "root:root", sudoers,
                     validate=f"visudo -cqf /etc/sudoers.d/90-platform-{admin_user}"),
        directories_section([(PRINCIPALS_DIR, "0755", "root:root")]),
        deliver_file(USER_CA_PATH, "0644", "root:root", ca_public_key.strip() + "\n"),
        deliver_file(f"{PRINCIPALS_DIR}/{admin_user}", "0644", "root:root",
                     render_principals(principals)),
        deliver_file(f"{PRINCIPALS_DIR}/{DEPLOY_USER}", "0644", "root:root", ""),
    ])


# --- session logging -------------------------------------------------------------------------
#
# auditd rather than tlog: the kernel records every execve of a process whose login UID is the
# admin account, whatever runs it (an interactive shell, `ssh host CMD`, a script, `sudo -i`,
# which keeps the login UID), and nothing the session does can switch it off short of root
# stopping auditd, which is itself recorded and shipped first. tlog records a terminal's I/O
# only: `ssh ops@host CMD` with no terminal is not recorded, and Debian 12's tlog failed to set up
# its I/O tap without a utmp (tried here). Kernel audit needs the initial PID namespace: in a
# container (a container-based VPS, the rehearsal's boxes) auditd cannot run, and the section
# says so instead of failing.

SESSION_AUDIT_KEY = "platform-session"
SESSION_LOG_PORT = 6514
"""Syslog over TLS (RFC 5425)."""
SESSION_LOG_FACILITY = "local6"
SESSION_LOG_DIR = "/var/log/platform-sessions"
SESSION_TLS_DIR = "/etc/platform/session-log"


def render_session_audit_rules(admin_user: str = ADMIN_USER) -> str:
    """auditd rules (``/etc/audit/rules.d/``): every execve and execveat, 64- and 32-bit ABI,
    of a process whose login UID (``auid``, kept across sudo and su) is ``admin_user``. The
    key names them in the log; CIS Debian 12 6.3.3 records privileged commands the same way."""
    return "".join(f"-a always,exit -F arch={arch} -S execve,execveat -F auid={admin_user} "
                   f"-F key={SESSION_AUDIT_KEY}\n" for arch in ("b64", "b32"))


AUDISP_SYSLOG = f"""\
# Managed by the platform program: audit events to syslog, where rsyslog ships them.
active = yes
direction = out
path = /sbin/audisp-syslog
type = always
args = LOG_INFO LOG_{SESSION_LOG_FACILITY.upper()}
format = string
"""


@dataclass(frozen=True)
class SessionShipping:
    """Where a host ships its admin sessions' audit records: the monitoring host's collector
    at ``collector`` (an address) whose certificate names ``peer_name``, issued by the CA whose
    PEM certificate is ``ca_pem``."""

    collector: str
    peer_name: str
    ca_pem: "pulumi.Input[str]"
    port: int = SESSION_LOG_PORT


def render_session_forwarding(collector: str, peer_name: str, *, port: int = SESSION_LOG_PORT,
                              ca_file: str = f"{SESSION_TLS_DIR}/ca.pem",
                              queue_name: str = "platform-sessions") -> str:
    """An rsyslog drop-in that ships the audit records (``local6``, from audisp-syslog) and
    sshd's lines (the certificate's key ID names who logged in) to the collector over TLS,
    checking its certificate's name (``x509/name``). A disk-assisted queue keeps what the
    collector has not taken yet, across restarts, and retries for ever."""
    return textwrap.dedent(f"""\
        # Managed by the platform program: admin sessions shipped to the monitoring host.
        if $syslogfacility-text == "{SESSION_LOG_FACILITY}" or $programname == "sshd" then {{
          action(type="omfwd" target="{collector}" port="{port}" protocol="tcp"
                 StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
                 StreamDriverPermittedPeers="{peer_name}" StreamDriver.CAFile="{ca_file}"
                 queue.type="LinkedList" queue.filename="{queue_name}" queue.maxDiskSpace="256m"
                 queue.saveOnShutdown="on" action.resumeRetryCount="-1")
        }}
        """)


def render_session_collector(address: str, *, port: int = SESSION_LOG_PORT,
                             log_dir: str = SESSION_LOG_DIR,
                             tls_dir: str = SESSION_TLS_DIR) -> str:
    """The monitoring host's rsyslog drop-in: a TLS listener on ``address`` that writes what
    each host sends to ``log_dir/<sender's IP>.log`` (the TCP peer's address, not the
    ``HOSTNAME`` a sender claims). Senders are not asked for a certificate: the firewall admits
    only the product's hosts."""
    return textwrap.dedent(f"""\
        # Managed by the platform program: admin sessions of the product's hosts.
        module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
        template(name="platformSessionFile" type="string" string="{log_dir}/%FROMHOST-IP%.log")
        ruleset(name="platformSessions") {{
          action(type="omfile" dynaFile="platformSessionFile" dirCreateMode="0750" fileCreateMode="0640")
        }}
        input(type="imtcp" port="{port}" address="{address}" ruleset="platformSessions"
              StreamDriver.CAFile="{tls_dir}/ca.pem" StreamDriver.CertFile="{tls_dir}/collector.pem"
              StreamDriver.KeyFile="{tls_dir}/collector.key")
        """)


def session_logging_section(admin_user: str = ADMIN_USER) -> str:
    """auditd with the admin session rules and its syslog plugin, and rsyslog, which records
    them locally and, with ``session_shipping_section``, ships them. Where the kernel refuses
    audit (a container), auditd is reported skipped and left disabled, not failed."""
    return "\n".join([
        "ensure_packages auditd audispd-plugins rsyslog rsyslog-gnutls",
        deliver_file("/etc/audit/rules.d/50-platform-sessions.rules", "0640", "root:root",
                     render_session_audit_rules(admin_user),
                     on_change="if auditctl -s >/dev/null 2>&1; then augenrules --load >/dev/null; fi"),
        deliver_file("/etc/audit/plugins.d/syslog.conf", "0640", "root:root", AUDISP_SYSLOG,
                     # auditd refuses `systemctl restart`; its init script is the supported way.
                     on_change="if systemctl is-active --quiet auditd; then service auditd restart; fi"),
        "if auditctl -s >/dev/null 2>&1; then",
        "  ensure_service_enabled auditd auditctl -s",
        "else",
        '  echo "skipped: auditd (the kernel refuses audit here: a container)"',
        "  if systemctl is-enabled --quiet auditd 2>/dev/null; then",
        "    systemctl disable --quiet auditd",
        '    note_change "auditd disabled: no kernel audit on this host"',
        "  fi",
        "fi",
        "ensure_service_enabled rsyslog",
    ])


def session_shipping_section(shipping: SessionShipping, ca_pem: str) -> str:
    """The rsyslog forwarding to the collector (``ca_pem``: its CA, rendered inside an apply),
    validated by ``rsyslogd -N1`` and rolled back when rsyslog rejects it."""
    return "\n".join([
        directories_section([(SESSION_TLS_DIR, "0755", "root:root")]),
        deliver_file(f"{SESSION_TLS_DIR}/ca.pem", "0644", "root:root", ca_pem,
                     on_change="systemctl restart rsyslog"),
        deliver_file("/etc/rsyslog.d/60-platform-sessions.conf", "0644", "root:root",
                     render_session_forwarding(shipping.collector, shipping.peer_name, port=shipping.port),
                     validate="rsyslogd -N1 >/dev/null", on_change="systemctl restart rsyslog"),
    ])


def session_collector_section(address: str, cert_pem: str, key_pem: str, ca_pem: str) -> str:
    """The monitoring host's collector: its certificate and key (rendered inside an apply; the
    key readable by root only) and the listener (``render_session_collector``)."""
    return "\n".join([
        directories_section([(SESSION_TLS_DIR, "0755", "root:root"), (SESSION_LOG_DIR, "0750", "root:adm")]),
        deliver_file(f"{SESSION_TLS_DIR}/ca.pem", "0644", "root:root", ca_pem),
        deliver_file(f"{SESSION_TLS_DIR}/collector.pem", "0644", "root:root", cert_pem),
        deliver_file(f"{SESSION_TLS_DIR}/collector.key", "0600", "root:root", key_pem),
        deliver_file("/etc/rsyslog.d/60-platform-session-collector.conf", "0644", "root:root",
                     render_session_collector(address),
                     validate="rsyslogd -N1 >/dev/null", on_change="systemctl restart rsyslog"),
    ])


# --- fail2ban ---------------------------------------------------------------------------------

def render_fail2ban_jail(ignore_cidrs: Sequence[str] = ()) -> str:
    ignore = " ".join(["127.0.0.1/8", "::1", *ignore_cidrs])
    return textwrap.dedent(f"""\
        # Managed by the platform program (components/hostsetup.py).
        [DEFAULT]
        bantime = 1h
        bantime.increment = true
        findtime = 10m
        maxretry = 5
        ignoreip = {ignore}
        backend = systemd

        [sshd]
        enabled = true
        mode = aggressive
        port = ssh
        """)


def fail2ban_section(ignore_cidrs: Sequence[str] = ()) -> str:
    return "\n".join([
        # backend = systemd needs python3-systemd, which fail2ban only Recommends: without it
        # the sshd jail fails to start ("Failed to initialize any backend"; found on a real
        # Debian host by the rehearsal). Its default banaction (iptables-multiport) needs
        # iptables, also only Recommended ("nftables | iptables").
        "ensure_packages fail2ban python3-systemd iptables",
        deliver_file("/etc/fail2ban/jail.local", "0644", "root:root",
                     render_fail2ban_jail(ignore_cidrs),
                     validate="fail2ban-client -t >/dev/null",
                     on_change="systemctl restart fail2ban && wait_for 30 fail2ban-client status sshd"),
        "ensure_service_enabled fail2ban fail2ban-client status sshd",
    ])


# --- unattended upgrades, journald, time ------------------------------------------------------

AUTO_UPGRADES = """\
APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
APT::Periodic::AutocleanInterval "7";
"""

UNATTENDED_UPGRADES = """\
// Managed by the platform program: security updates only, no automatic reboot.
Unattended-Upgrade::Allowed-Origins {
  "${distro_id}:${distro_codename}-security";
  "${distro_id}ESMApps:${distro_codename}-apps-security";
  "${distro_id}ESM:${distro_codename}-infra-security";
};
Unattended-Upgrade::Remove-Unused-Kernel-Packages "true";
Unattended-Upgrade::Automatic-Reboot "false";
"""

JOURNALD = """\
# Managed by the platform program: bounded logs so a chatty service cannot fill the disk.
[Journal]
SystemMaxUse=500M
SystemKeepFree=1G
MaxRetentionSec=1month
"""


def base_section() -> str:
    return "\n".join([
        # systemd-timesyncd: its own package on Debian 12 (found missing by the rehearsal on a
        # Debian box); preinstalled on Ubuntu 24.04, where this is a no-op.
        # openssl: the file deliveries read each certificate's expiry with it (a Depends of
        # ca-certificates today, named here so nothing rests on that).
        "ensure_packages unattended-upgrades ca-certificates curl systemd-timesyncd openssl",
        deliver_file("/etc/apt/apt.conf.d/20auto-upgrades", "0644", "root:root", AUTO_UPGRADES),
        deliver_file("/etc/apt/apt.conf.d/52platform-unattended-upgrades", "0644", "root:root",
                     UNATTENDED_UPGRADES),
        deliver_file("/etc/systemd/journald.conf.d/10-platform.conf", "0644", "root:root", JOURNALD,
                     on_change="systemctl restart systemd-journald"),
        "ensure_service_enabled systemd-timesyncd",
    ])


# --- docker -----------------------------------------------------------------------------------

DOCKER_DAEMON = {
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m", "max-file": "5"},
    "live-restore": True,
    "no-new-privileges": True,
    "userland-proxy": False,
    "icc": False,
}


def docker_section(deploy_user: str = DEPLOY_USER) -> str:
    """Docker from the distribution (kept patched by unattended-upgrades), hardened defaults,
    and the deploy user in the docker group (the Docker provider connects as that user)."""
    return "\n".join([
        "ensure_packages docker.io",
        deliver_file("/etc/docker/daemon.json", "0644", "root:root",
                     json.dumps(DOCKER_DAEMON, indent=2, sort_keys=True),
                     # dockerd --validate exists from Docker 23 (Ubuntu 24.04); Debian 12's 20.10
                     # lacks it, and there the restart is the check (rolled back when it fails).
                     validate='case "$(dockerd --help 2>&1)" in *--validate*)'
                          " dockerd --validate --config-file /etc/docker/daemon.json >/dev/null;; esac",
                 on_change="systemctl restart docker && wait_for 60 docker info"),
        "ensure_service_enabled docker docker info",
        f"if ! id -nG {deploy_user} | tr ' ' '\\n' | grep -qx docker; then",
        f"  usermod -aG docker {deploy_user}",
        f'  note_change "{deploy_user} in docker group"',
        "fi",
    ])


SUDOERS = f"# Managed by the platform program: the deploy user runs setup scripts with sudo.\n{DEPLOY_USER} ALL=(ALL) NOPASSWD:ALL\n"


def deploy_user_section(public_key: str, deploy_user: str = DEPLOY_USER) -> str:
    """Creates the deploy user with ``public_key`` (an OpenSSH public key line) as its only key
    and passwordless sudo; run once as an existing sudo user on a host that does not have it yet.

    It renders inside an ``apply`` on the key's public half, so it checks nothing: the private
    key is checked at the config boundary (``SecretKey.format``, ``openssh_key_problem``)."""
    home = f"/home/{deploy_user}"
    return "\n".join([
        f"if ! id -u {deploy_user} >/dev/null 2>&1; then",
        f"  useradd --create-home --shell /bin/bash {deploy_user}",
        f'  note_change "user {deploy_user}"',
        "fi",
        # A locked password: key-only, and sudo needs none.
        f'if [ "$(passwd -S {deploy_user} | cut -d" " -f2)" != "L" ]; then',
        f"  passwd -l {deploy_user} >/dev/null",
        f'  note_change "password of {deploy_user} locked"',
        "fi",
        directories_section([(home, "0750", f"{deploy_user}:{deploy_user}"),
                             (f"{home}/.ssh", "0700", f"{deploy_user}:{deploy_user}")]),
        deliver_file(f"{home}/.ssh/authorized_keys", "0600", f"{deploy_user}:{deploy_user}", public_key),
        deliver_file(f"/etc/sudoers.d/90-platform-{deploy_user}", "0440", "root:root", SUDOERS,
                     validate=f"visudo -cqf /etc/sudoers.d/90-platform-{deploy_user}"),
    ])


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


# --- ufw --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OutboundRule:
    """One allowed outbound flow from a host whose egress is locked down."""

    destination: str
    port: int | None = None
    protocol: str | None = None
    reason: str = ""
    interface: str | None = None
    """Only out through this interface (``ufw allow out on IFACE``), e.g. the host's container bridge."""


def render_ufw_commands(rules, waivers: dict[str, str] | None = None,
                        outbound: Sequence[OutboundRule] | None = None,
                        denied_outbound: Sequence[OutboundRule] = ()) -> str:
    """The UFW commands for a host's inbound rules, default-deny. ``waivers`` maps a rule's
    ``reason`` to a waiver name, written on its line so the policy pack can match it. With
    ``outbound``, outgoing traffic is denied too, except those flows. ``denied_outbound`` are
    flows the host itself may never open, denied before any allow (UFW matches in order): a
    destination only another node may reach, such as Oracle ECRS, on a host whose egress is
    otherwise open."""
    waivers = waivers or {}
    lines = ["ufw --force reset >/dev/null", "ufw default deny incoming",
             f"ufw default {'allow' if outbound is None else 'deny'} outgoing"]
    for out in denied_outbound:
        if out.port is None or out.destination == "any":
            raise ValueError(f"a denied outbound flow names its destination and port: {out}")
        lines.append(f"ufw deny out proto {out.protocol or 'tcp'} to {out.destination} port {out.port}"
                     f" comment '{out.reason.replace(chr(39), '')}'")
    for out in outbound or ():
        line = "ufw allow out"
        if out.interface:
            line += f" on {out.interface}"
        if out.protocol:
            line += f" proto {out.protocol}"
        line += f" to {out.destination}"
        if out.port is not None:
            line += f" port {out.port}"
        lines.append(line + f" comment '{out.reason.replace(chr(39), '')}'")
    for rule in rules:
        port = rule.port_range.replace("-", ":")
        sources = list(rule.cidrs) or ["any"]
        for source in sources:
            comment = rule.reason.replace("'", "")
            line = f"ufw allow proto {rule.protocol} from {source} to any port {port} comment '{comment}'"
            if rule.reason in waivers:
                line += f"  # waiver: {waivers[rule.reason]}"
            lines.append(line)
    lines.append("ufw --force enable >/dev/null")
    return "\n".join(lines) + "\n"


def ufw_section(rules, waivers: dict[str, str] | None = None,
                outbound: Sequence[OutboundRule] | None = None,
                denied_outbound: Sequence[OutboundRule] = ()) -> str:
    """Rules live in a file; they are re-applied when it changes or UFW is not active."""
    commands = render_ufw_commands(rules, waivers, outbound, denied_outbound)
    return "\n".join([
        "ensure_packages ufw",
        "apply_ufw() {",
        *[f"  {line}" for line in commands.splitlines()],
        "}",
        deliver_file("/etc/platform/ufw-rules.sh", "0600", "root:root", commands,
                     on_change="apply_ufw"),
        'if ! ufw status | grep -q "^Status: active"; then',
        "  apply_ufw",
        '  note_change "ufw enabled"',
        "fi",
    ])


# --- cloud-init -------------------------------------------------------------------------------

def render_cloud_init(deploy_user: str = DEPLOY_USER) -> str:
    """Constant user data: it never changes per deploy, so it never replaces a droplet.

    The provider installs the droplet's SSH keys for root before ``runcmd``; they are copied to
    the deploy user, and root and password logins are closed in the same boot.
    """
    document = {
        "users": [{
            "name": deploy_user,
            "groups": ["sudo"],
            "shell": "/bin/bash",
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "lock_passwd": True,
        }],
        "ssh_pwauth": False,
        "disable_root": False,
        "write_files": [{
            "path": "/etc/ssh/sshd_config.d/01-platform-bootstrap.conf",
            "permissions": "0644",
            "content": "PermitRootLogin no\nPasswordAuthentication no\n",
        }],
        "runcmd": [
            ["install", "-d", "-m", "700", "-o", deploy_user, "-g", deploy_user,
             f"/home/{deploy_user}/.ssh"],
            ["install", "-m", "600", "-o", deploy_user, "-g", deploy_user,
             "/root/.ssh/authorized_keys", f"/home/{deploy_user}/.ssh/authorized_keys"],
            ["systemctl", "reload", "ssh"],
        ],
    }
    import yaml

    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)


def host_baseline(*, sshd: SshdPolicy, fail2ban_ignore: Sequence[str] = (),
                  directories: Sequence[tuple[str, str, str]] = (),
                  firewall: str | None = None, proxy: str | None = None,
                  docker_firewall: str | None = None,
                  access: AdminAccess | None = None,
                  wireguard: "pulumi.Input[str] | None" = None) -> dict[str, "pulumi.Input[str]"]:
    """The baseline every host gets, as separately re-runnable scripts. ``firewall`` is a UFW
    section for hosts without a provider firewall in front of them (on-prem); ``proxy`` points
    an egress-locked host's apt and Docker at the egress proxy, before anything is installed;
    ``docker_firewall`` filters Docker-published ports and container egress. With ``access``,
    the sshd script (then an Output: the CA's public key is one) first sets up the admin
    account and the CA files, and sshd trusts the CA and reads authorized_keys only for the
    users in ``sshd.allow_users`` (the deploy user, a bootstrap user). ``wireguard`` is the
    host's management-network script (``components.wireguard``, rendered with its secret key),
    run right after the firewall, so a first deploy under break-glass sets it up early."""
    scripts = {}
    if proxy is not None:
        scripts["proxy"] = script(proxy)
    if firewall is not None:
        scripts["ufw"] = script(firewall)
    if wireguard is not None:
        scripts["wireguard"] = wireguard
    scripts |= {
        "base": script(base_section()),
        "sshd": _sshd_script(sshd, access),
        "fail2ban": script(fail2ban_section(fail2ban_ignore)),
        "docker": script(docker_section()),
    }
    if docker_firewall is not None:
        scripts["docker-firewall"] = script(docker_firewall)
    if directories:
        scripts["dirs"] = script(directories_section(directories))
    if access is not None:
        scripts["sessions"] = script(session_logging_section())
    return scripts


def _sshd_script(policy: SshdPolicy, access: AdminAccess | None) -> "pulumi.Input[str]":
    if access is None:
        return script(sshd_section(policy))
    import pulumi

    policy = replace(policy, allow_users=(*policy.allow_users, ADMIN_USER),
                     key_users=tuple(policy.allow_users), trusted_user_ca=True)
    # The public half of a secret key is not secret: unmarked, the script stays readable in
    # the plan and the preview diff.
    public = pulumi.Output.unsecret(pulumi.Output.from_input(access.ca_public_key))
    return public.apply(lambda key: script(admin_access_section(key, access.principals),
                                           sshd_section(policy)))
