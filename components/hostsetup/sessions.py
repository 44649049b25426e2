"""Admin-session logging: auditd records of the admin account's commands, shipped over TLS
by rsyslog to the product's collector."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from components.hostsetup.delivery import deliver_file, directories_section, unit_apply
from components.hostsetup.sshd import ADMIN_USER


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
        if $syslogfacility-text == "{SESSION_LOG_FACILITY}" or $programname == "sshd" or $programname == "sshd-session" then {{
          action(type="omfwd" target="{collector}" port="{port}" protocol="tcp"
                 StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
                 StreamDriverPermittedPeers="{peer_name}" StreamDriver.CAFile="{ca_file}"
                 queue.type="LinkedList" queue.filename="{queue_name}" queue.maxDiskSpace="256m"
                 queue.saveOnShutdown="on" action.resumeRetryCount="-1")
        }}
        """)


def render_session_collector(address: str, *, port: int = SESSION_LOG_PORT,
                             log_dir: str = SESSION_LOG_DIR,
                             tls_dir: str = SESSION_TLS_DIR, archive: bool = False) -> str:
    """The monitoring host's rsyslog drop-in: a TLS listener on ``address`` that writes what
    each host sends to ``log_dir/<sender's IP>.log`` (the TCP peer's address, not the
    ``HOSTNAME`` a sender claims) and, with ``archive``, hands it to the off-host archive's
    spool (``session_archive.render_archive_spool``). Senders are
    not asked for a certificate: the firewall admits only the product's hosts."""
    # call_indirect, not call: the archive's drop-in is delivered by a later step, and `call`
    # of a ruleset that does not exist yet fails the whole config (rsyslogd -N1).
    archive_call = '  call_indirect "platformSessionArchive";\n        ' if archive else ""
    return textwrap.dedent(f"""\
        # Managed by the platform program: admin sessions of the product's hosts.
        module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
        template(name="platformSessionFile" type="string" string="{log_dir}/%FROMHOST-IP%.log")
        ruleset(name="platformSessions") {{
          action(type="omfile" dynaFile="platformSessionFile" dirCreateMode="0750" fileCreateMode="0640")
        {archive_call}}}
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
                     on_change=unit_apply("try-service-restart", "auditd", "auditctl", "-s")),
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
                     on_change=unit_apply("restart", "rsyslog")),
        deliver_file("/etc/rsyslog.d/60-platform-sessions.conf", "0644", "root:root",
                     render_session_forwarding(shipping.collector, shipping.peer_name, port=shipping.port),
                     validate="rsyslogd -N1 >/dev/null", on_change=unit_apply("restart", "rsyslog")),
    ])


def session_collector_section(address: str, cert_pem: str, key_pem: str, ca_pem: str, *,
                              archive: bool = False) -> str:
    """The monitoring host's collector: its certificate and key (rendered inside an apply; the
    key readable by root only) and the listener (``render_session_collector``; ``archive``:
    what it receives goes to the off-host archive too)."""
    return "\n".join([
        "ensure_packages iproute2",  # ss: the check that the listener is up after a restart
        directories_section([(SESSION_TLS_DIR, "0755", "root:root"), (SESSION_LOG_DIR, "0750", "root:adm")]),
        deliver_file(f"{SESSION_TLS_DIR}/ca.pem", "0644", "root:root", ca_pem),
        deliver_file(f"{SESSION_TLS_DIR}/collector.pem", "0644", "root:root", cert_pem),
        deliver_file(f"{SESSION_TLS_DIR}/collector.key", "0600", "root:root", key_pem),
        deliver_file("/etc/rsyslog.d/60-platform-session-collector.conf", "0644", "root:root",
                     render_session_collector(address, archive=archive),
                     validate="rsyslogd -N1 >/dev/null",
                     on_change=unit_apply("restart", "rsyslog", "listening", str(SESSION_LOG_PORT))),
    ])
