"""The baseline every host gets (``host_baseline``): fail2ban, unattended upgrades, journald
and time, Docker, the deploy user, directories, and the sshd script, each a script re-run
only when its text changes."""

from __future__ import annotations

import json
import textwrap
from dataclasses import replace
from typing import Sequence

from components.hostsetup.delivery import DEPLOY_USER, deliver_file, directories_section, script, unit_apply
from components.hostsetup.sshd import ADMIN_USER, AdminAccess, SshdPolicy, admin_access_section, sshd_section
from components.hostsetup.sessions import session_logging_section



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
                     on_change=unit_apply("restart", "fail2ban", "fail2ban-client", "status", "sshd")),
        "ensure_service_enabled fail2ban fail2ban-client status sshd",
    ])



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
                     on_change=unit_apply("restart", "systemd-journald")),
        "ensure_service_enabled systemd-timesyncd",
    ])



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
                 on_change=unit_apply("restart", "docker", "docker", "info", seconds=60)),
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
