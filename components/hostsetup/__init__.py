"""Host setup as data: cloud-init and idempotent bash scripts rendered by pure functions.

Cloud-init is kept minimal and constant (a droplet's ``user_data`` forces replacement when it
changes): it only creates the deploy user and closes root and password logins. Everything else
is a script run over SSH by a remote command, re-run only when its text changes. Each script is
``set -euo pipefail``, shellcheck-clean, and idempotent: a second run prints ``0 changes``.

The package by what each module holds: ``delivery`` (the scripts' prelude and the one way a
file or directory reaches a host), ``sshd``, ``sessions``, ``ufw``, ``baseline`` (what every
host gets, ``host_baseline``) and ``cloud_init``.
"""

from __future__ import annotations

from components.hostsetup.delivery import (DEPLOY_USER, EPILOGUE, HEREDOC_MARKER, PRELUDE, commit_staged,
                                           deliver_file, directories_section, script, staged_file,
                                           stat_format, unit_apply)
from components.hostsetup.sshd import (ADMIN_USER, AdminAccess, PRINCIPALS_DIR, SSHD_MACS, SshdPolicy,
                                       USER_CA_PATH, admin_access_section, render_principals,
                                       render_sshd_config, sshd_section)
from components.hostsetup.sessions import (AUDISP_SYSLOG, SESSION_AUDIT_KEY, SESSION_LOG_DIR,
                                           SESSION_LOG_FACILITY, SESSION_LOG_PORT, SESSION_TLS_DIR,
                                           SessionShipping, render_session_audit_rules,
                                           render_session_collector, render_session_forwarding,
                                           session_collector_section, session_logging_section,
                                           session_shipping_section)
from components.hostsetup.ufw import OutboundRule, render_ufw_commands, ufw_section
from components.hostsetup.baseline import (AUTO_UPGRADES, DOCKER_DAEMON, JOURNALD, SUDOERS,
                                           UNATTENDED_UPGRADES, base_section, deploy_user_section,
                                           docker_section, fail2ban_section, host_baseline,
                                           render_fail2ban_jail)
from components.hostsetup.cloud_init import render_cloud_init

__all__ = ["ADMIN_USER", "AUDISP_SYSLOG", "AUTO_UPGRADES", "AdminAccess", "DEPLOY_USER", "DOCKER_DAEMON",
           "EPILOGUE", "HEREDOC_MARKER", "commit_staged", "JOURNALD", "OutboundRule", "PRELUDE", "PRINCIPALS_DIR", "SESSION_AUDIT_KEY",
           "SESSION_LOG_DIR", "SESSION_LOG_FACILITY", "SESSION_LOG_PORT", "SESSION_TLS_DIR",
           "SSHD_MACS", "SUDOERS", "SessionShipping", "SshdPolicy", "UNATTENDED_UPGRADES",
           "USER_CA_PATH", "admin_access_section", "base_section", "deliver_file",
           "deploy_user_section", "directories_section", "docker_section", "fail2ban_section",
           "host_baseline", "render_cloud_init", "render_fail2ban_jail", "render_principals",
           "render_session_audit_rules", "render_session_collector", "render_session_forwarding",
           "render_sshd_config", "render_ufw_commands", "script", "session_collector_section",
           "session_logging_section", "session_shipping_section", "sshd_section", "staged_file",
           "stat_format", "ufw_section", "unit_apply"]
