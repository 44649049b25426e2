"""sshd_config read the way sshd reads it (sshd_config(5)).

- Keywords are case-insensitive; the FIRST value of a keyword wins ("For each parameter, the
  first obtained value will be used"), so drop-ins included before the main file override it.
- A ``Match`` block lasts until the next ``Match`` or the end of the file; its settings apply
  only to connections that match, so they never change the global values.
- Values not set fall back to OpenSSH's compiled-in defaults (``DEFAULTS``), which
  ``sshd -T -f FILE`` prints; Debian's main ``/etc/ssh/sshd_config`` (``DEBIAN_MAIN``) comes
  after the drop-ins in ``/etc/ssh/sshd_config.d``.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass, field

# OpenSSH 9.x compiled-in defaults for the keywords the policies read (sshd_config(5)).
DEFAULTS = {
    "permitrootlogin": "without-password", "passwordauthentication": "yes",
    "kbdinteractiveauthentication": "yes", "permitemptypasswords": "no", "maxauthtries": "6",
    "logingracetime": "120", "x11forwarding": "no", "allowtcpforwarding": "yes",
    "allowagentforwarding": "yes", "clientaliveinterval": "0", "clientalivecountmax": "3",
    "pubkeyauthentication": "yes", "hostbasedauthentication": "no", "ignorerhosts": "yes",
    "permituserenvironment": "no", "usepam": "no", "maxsessions": "10",
    "authorizedkeysfile": ".ssh/authorized_keys .ssh/authorized_keys2", "trustedusercakeys": "none",
    "ciphers": "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com,"
               "aes256-gcm@openssh.com",
    "macs": "umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com,"
            "hmac-sha2-512-etm@openssh.com,hmac-sha1-etm@openssh.com,umac-64@openssh.com,umac-128@openssh.com,"
            "hmac-sha2-256,hmac-sha2-512,hmac-sha1",
    "kexalgorithms": "sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com,curve25519-sha256,"
                     "curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,"
                     "diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,"
                     "diffie-hellman-group18-sha512,diffie-hellman-group14-sha256",
}
ALGORITHM_LISTS = ("ciphers", "macs", "kexalgorithms")
TIMES = ("logingracetime", "clientaliveinterval")
# What Debian/Ubuntu's packaged /etc/ssh/sshd_config sets after its Include line.
DEBIAN_MAIN = "KbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\nPrintMotd no\n" \
              "AcceptEnv LANG LC_* COLORTERM NO_COLOR\nSubsystem sftp /usr/lib/openssh/sftp-server\n"
# sshd -T prints "prohibit-password" under its older alias; both mean keys only.
ALIASES = {"prohibit-password": "without-password"}


@dataclass
class SshdConfig:
    settings: dict[str, str] = field(default_factory=dict)
    matches: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def get(self, keyword: str) -> str:
        """Effective global value as ``sshd -T`` prints it: the first one set, else the
        compiled-in default; algorithm lists with ``+``/``-``/``^`` applied; times in seconds."""
        keyword = keyword.lower()
        value = self.settings.get(keyword, DEFAULTS.get(keyword, ""))
        if keyword in ALGORITHM_LISTS:
            return ",".join(algorithms(value, DEFAULTS[keyword]))
        if keyword in TIMES:
            return str(seconds(value))
        return ALIASES.get(value.lower(), value.lower())

    def overridden_in_match(self, keyword: str) -> list[tuple[str, str]]:
        """``[(match criteria, value)]`` of Match blocks that set ``keyword``."""
        keyword = keyword.lower()
        return [(criteria, ALIASES.get(values[keyword].lower(), values[keyword].lower()))
                for criteria, values in self.matches if keyword in values]


def algorithms(value: str, default: str) -> list[str]:
    """An algorithm list with sshd_config(5)'s prefixes: ``+`` appends to the default, ``-``
    removes (wildcards allowed), ``^`` puts first."""
    base = default.split(",")
    if value.startswith("+"):
        return base + [a for a in value[1:].split(",") if a not in base]
    if value.startswith("-"):
        drop = value[1:].split(",")
        return [a for a in base if not any(fnmatch.fnmatchcase(a, d) for d in drop)]
    if value.startswith("^"):
        first = value[1:].split(",")
        return first + [a for a in base if a not in first]
    return value.split(",")


def seconds(value: str) -> int:
    """sshd_config(5) TIME FORMATS: ``90``, ``1m30s``, ``2h``."""
    units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    total = 0
    for number, unit in re.findall(r"(\d+)([smhdwSMHDW]?)", value):
        total += int(number) * units[unit.lower()]
    return total


def parse_sshd(*documents: str) -> SshdConfig:
    """Documents in the order sshd reads them (drop-ins in lexical order, then the main file)."""
    config = SshdConfig()
    for text in documents:
        current = config.settings
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                words = shlex.split(line.replace("=", " ", 1) if "=" in line.split()[0] else line)
            except ValueError:
                words = line.split()
            keyword, value = words[0].lower(), " ".join(words[1:])
            if keyword == "match":
                config.matches.append((value, {}))
                current = config.matches[-1][1]
                continue
            current.setdefault(keyword, value)
        # A Match block ends with its file (sshd_config(5), Include).
    return config
