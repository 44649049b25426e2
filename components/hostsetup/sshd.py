"""sshd: the hardened config (``SshdPolicy``), and just-in-time admin access through the
stack's SSH CA (``AdminAccess``: the admin account, its principals, sudo)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Sequence

from components.hostsetup.delivery import DEPLOY_USER, deliver_file, directories_section, unit_apply



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
    """The drop-in, judged by ``sshd -t`` in place, then applied by a reload of ``ssh`` (the
    unit's name on Debian 12 and Ubuntu 24.04), which counts only once the unit stays active and
    a socket listens on ``policy.port``; else the previous drop-in is put back and reloaded.

    Ubuntu 24.04 starts sshd from ``ssh.socket``: ``ssh.service`` runs once a connection came
    in (this script's own did), so it is reloaded there too; when it does not run there is
    nothing to reload (``try-``: the next connection starts sshd on the checked file). A new
    ``Port`` on such a host listens only after ``ssh.socket`` is restarted, which this does not
    do: the listening check then fails the step and the previous port stays."""
    return "\n".join([
        # ss (the listening check): iproute2, in every cloud image, named so nothing rests on that.
        "ensure_packages iproute2",
        deliver_file(
            "/etc/ssh/sshd_config.d/00-platform.conf", "0644", "root:root",
            render_sshd_config(policy),
            validate="sshd -t",
            on_change=unit_apply("try-reload", "ssh", "listening", str(policy.port)),
        ),
    ])


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
