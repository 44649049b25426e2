"""Host policies: droplets, cloud-init user data, sshd (first-match semantics), UFW (parsed
with ufw's grammar), remote-command connections, fail2ban and unattended upgrades."""

from __future__ import annotations

import yaml

from policy.parsers.heredoc import written_files
from policy.parsers.sshd import DEBIAN_MAIN, parse_sshd
from policy.parsers.ufw import default_policy, ufw_rules
from policy.rules.base import (ADVISORY, CRITICAL, DATA_PORTS, HIGH, MANDATORY, MEDIUM,
                               SENSITIVE_PORTS, T_COMMAND, T_DROPLET, Case, by_type, items,
                               mapping, ports_in, resource_policy, stack_policy, stdin_of)
from policy.rules.fixtures import doc, res, script

CIS_SSH = "CIS Ubuntu Linux 24.04 LTS Benchmark v1.0.0 5.1"
DEVSEC = "dev-sec ssh-baseline (controls/sshd_spec.rb)"


def _check_droplet_keys(props, args):
    if not items(props.get("sshKeys")):
        yield f"droplet {props.get('name')} has no SSH keys; it would get a root password by email"


resource_policy(
    "digitalocean-droplet-configure-ssh-keys", "Droplets are created with SSH keys.",
    level=MANDATORY, severity=HIGH, category="hosts",
    sources=["Checkov CKV_DIO_2", "Trivy AVD-DIG-0004 (digitalocean-compute-use-ssh-keys)"],
    fix="Pass the deploy key's fingerprint in ssh_keys.",
    types=[T_DROPLET], check=_check_droplet_keys,
    cases=Case(doc(res(T_DROPLET, "d", {"name": "d", "sshKeys": ["aa:bb"]})),
               [(doc(res(T_DROPLET, "d", {"name": "d"})), ["droplet d has no SSH keys; it would get a root password by email"])]))


def sshd_documents(files):
    """sshd_config texts in the order sshd reads them: drop-ins sorted by name, then main."""
    drop_ins = sorted((p, t) for p, t in files if p.startswith("/etc/ssh/sshd_config.d/") and p.endswith(".conf"))
    main = [t for p, t in files if p == "/etc/ssh/sshd_config"]
    return [t for _, t in drop_ins], (main[0] if main else DEBIAN_MAIN)


def _check_user_data(props, args):
    text = props.get("userData")
    if not isinstance(text, str) or not text.strip():
        return
    if not text.startswith("#cloud-config"):
        if "PermitRootLogin yes" in text or "PasswordAuthentication yes" in text:
            yield f"droplet {props.get('name')} user_data turns on root or password SSH login"
        return
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        yield f"droplet {props.get('name')} user_data is not valid cloud-config: {error.__class__.__name__}"
        return
    name = props.get("name")
    if config.get("ssh_pwauth") in (True, "true", "yes", 1):
        yield f"droplet {name} user_data sets ssh_pwauth, which turns on SSH password login"
    if config.get("chpasswd") or any(mapping(u).get("plain_text_passwd") or mapping(u).get("passwd")
                                     for u in items(config.get("users"))):
        yield f"droplet {name} user_data sets a password"
    files = [(str(mapping(f).get("path")), str(mapping(f).get("content") or "")) for f in items(config.get("write_files"))]
    drop_ins, main = sshd_documents(files)
    sshd = parse_sshd(*drop_ins, main)
    if sshd.get("permitrootlogin") == "yes":
        yield f"droplet {name} user_data lets root log in over SSH with a password"
    if config.get("disable_root") is False and sshd.get("permitrootlogin") != "no":
        yield f"droplet {name} user_data keeps root's SSH key login (disable_root false) without PermitRootLogin no"


resource_policy(
    "digitalocean-droplet-disallow-ssh-root-or-password-userdata", "Droplet user_data never enables root or password SSH login.",
    level=MANDATORY, severity=CRITICAL, category="hosts",
    sources=[f"{CIS_SSH}.20 (PermitRootLogin)", f"{CIS_SSH}.19 (PermitEmptyPasswords)", "cloud-init docs: ssh_pwauth, disable_root",
             "Checkov CKV_AWS_46-style secrets in user data"],
    fix="Set ssh_pwauth false, no passwords, and write PermitRootLogin no in an sshd drop-in.",
    types=[T_DROPLET], check=_check_user_data,
    cases=Case(doc(res(T_DROPLET, "d", {"name": "d", "userData": "#cloud-config\nssh_pwauth: false\ndisable_root: false\nwrite_files:\n- path: /etc/ssh/sshd_config.d/01-x.conf\n  content: 'PermitRootLogin no\n\n    '\n"})),
               [(doc(res(T_DROPLET, "d", {"name": "d", "userData": "#cloud-config\nssh_pwauth: true\ndisable_root: false\nchpasswd: {expire: false}\nwrite_files:\n- path: /etc/ssh/sshd_config.d/01-x.conf\n  content: 'PermitRootLogin yes\n\n    PermitRootLogin no\n\n    '\n"})),
                 ["droplet d user_data sets ssh_pwauth, which turns on SSH password login", "droplet d user_data sets a password",
                  "droplet d user_data lets root log in over SSH with a password",
                  "droplet d user_data keeps root's SSH key login (disable_root false) without PermitRootLogin no"])]))


SSHD_OK = ("PermitRootLogin no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitEmptyPasswords no\n"
           "MaxAuthTries 3\nLoginGraceTime 30\nX11Forwarding no\nClientAliveInterval 300\nClientAliveCountMax 2\n"
           "Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com\n"
           "MACs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com\n")


def sshd_doc(body):
    return doc(script("host-setup-sshd", {"/etc/ssh/sshd_config.d/00-platform.conf": body}))


def _sshd_configs(props):
    files = written_files(stdin_of(props))
    drop_ins, main = sshd_documents(files)
    if drop_ins:
        yield parse_sshd(*drop_ins, main)


def _sshd_policy(name, description, sources, fix, keyword, good, message, bad_body, level=MANDATORY, severity=HIGH,
                 more=()):
    def check(props, args):
        for sshd in _sshd_configs(props):
            if not good(sshd.get(keyword)):
                yield message.format(value=sshd.get(keyword))
            for criteria, value in sshd.overridden_in_match(keyword):
                if not good(value):
                    yield f"sshd Match {criteria} sets {keyword} {value}"
    resource_policy(name, description, level=level, severity=severity, category="hosts", sources=sources, fix=fix,
                    types=[T_COMMAND], check=check,
                    cases=Case(sshd_doc(SSHD_OK), [(sshd_doc(bad_body), [message.format(value=bad_value(bad_body, keyword))]),
                                                   *more]))


def bad_value(body, keyword):
    return parse_sshd(body, DEBIAN_MAIN).get(keyword)


_sshd_policy("command-sshd-disallow-root-login", "sshd refuses root logins (the first PermitRootLogin wins).",
             [f"{CIS_SSH}.20", f"{DEVSEC} sshd-06"], "Write PermitRootLogin no first in the drop-in.",
             "permitrootlogin", lambda v: v == "no", "sshd lets root log in (PermitRootLogin {value})",
             "PermitRootLogin yes\nPermitRootLogin no\nPasswordAuthentication no\n",
             more=[(sshd_doc(SSHD_OK + "Match Address 10.0.0.0/8\n  PermitRootLogin yes\n"),
                    ["sshd Match Address 10.0.0.0/8 sets permitrootlogin yes"])])
_sshd_policy("command-sshd-disallow-password-authentication", "sshd accepts keys only, no passwords or keyboard-interactive logins.",
             [f"{CIS_SSH} (SSH server configuration)", f"{DEVSEC} sshd-27, sshd-29"], "Set PasswordAuthentication no.",
             "passwordauthentication", lambda v: v == "no", "sshd accepts passwords (PasswordAuthentication {value})",
             "PermitRootLogin no\n")
_sshd_policy("command-sshd-disallow-empty-passwords", "sshd refuses accounts with empty passwords.",
             [f"{CIS_SSH}.19", f"{DEVSEC} sshd-28"], "Set PermitEmptyPasswords no.",
             "permitemptypasswords", lambda v: v == "no", "sshd accepts empty passwords (PermitEmptyPasswords {value})",
             "PermitEmptyPasswords yes\n")
_sshd_policy("command-sshd-configure-max-auth-tries", "sshd allows at most 4 authentication attempts per connection.",
             [f"{CIS_SSH}.16", f"{DEVSEC} sshd-19"], "Set MaxAuthTries 3.",
             "maxauthtries", lambda v: v.isdigit() and int(v) <= 4, "sshd allows {value} authentication attempts; set MaxAuthTries 4 or fewer",
             "PermitRootLogin no\n", level=ADVISORY, severity=MEDIUM)
_sshd_policy("command-sshd-disallow-x11-forwarding", "sshd forwards no X11.",
             [f"{CIS_SSH}.8 (DisableForwarding, which covers X11)", f"{DEVSEC} sshd-42"], "Set X11Forwarding no (Debian's main file sets yes).",
             "x11forwarding", lambda v: v == "no", "sshd forwards X11 (X11Forwarding {value})",
             "PermitRootLogin no\n", level=ADVISORY, severity=MEDIUM)
_sshd_policy("command-sshd-configure-login-grace-time", "sshd drops unauthenticated connections within 60 seconds.",
             [f"{CIS_SSH}.13", f"{DEVSEC} sshd-18"], "Set LoginGraceTime 30.",
             "logingracetime", lambda v: v.isdigit() and 0 < int(v) <= 60, "sshd waits {value} s for a login; set LoginGraceTime 60 or less",
             "PermitRootLogin no\n", level=ADVISORY, severity=MEDIUM)
_sshd_policy("command-sshd-configure-client-alive", "sshd drops idle sessions (ClientAliveInterval set).",
             [f"{CIS_SSH}.7", f"{DEVSEC} sshd-36, sshd-37"], "Set ClientAliveInterval 300 and ClientAliveCountMax 2.",
             "clientaliveinterval", lambda v: v.isdigit() and 0 < int(v) <= 900, "sshd never drops idle sessions (ClientAliveInterval {value})",
             "PermitRootLogin no\n", level=ADVISORY, severity=MEDIUM)

def _check_personal_keys(props, args):
    for sshd in _sshd_configs(props):
        if sshd.get("trustedusercakeys") == "none":
            yield "sshd trusts no SSH certificate authority (TrustedUserCAKeys unset): people log in with long-lived keys"
        if sshd.get("authorizedkeysfile") != "none":
            yield (f"sshd reads authorized_keys for every account (AuthorizedKeysFile "
                   f"{sshd.get('authorizedkeysfile')}); set none and allow it in a Match User block for the deploy user")
        for criteria, value in sshd.overridden_in_match("authorizedkeysfile"):
            users = criteria.split(None, 1)
            if value != "none" and (users[0].lower() != "user" or any(c in users[1] for c in "*?!")):
                yield f"sshd Match {criteria} reads authorized_keys ({value}); name the service accounts in Match User"


_CA_OK = SSHD_OK + ("TrustedUserCAKeys /etc/ssh/platform_user_ca.pub\nAuthorizedPrincipalsFile /etc/ssh/auth_principals/%u\n"
                    "AuthorizedKeysFile none\nMatch User deploy\n    AuthorizedKeysFile .ssh/authorized_keys\n")
resource_policy(
    "command-sshd-disallow-personal-keys",
    "sshd trusts the stack's SSH CA, and reads authorized_keys only for the service accounts it names (no long-lived personal keys).",
    level=MANDATORY, severity=HIGH, category="hosts",
    sources=["Kredete reference architecture (management plane: just-in-time access)", "sshd_config(5) TrustedUserCAKeys, AuthorizedKeysFile"],
    fix="Render the drop-in with hostsetup.AdminAccess (TrustedUserCAKeys, AuthorizedKeysFile none, Match User deploy).",
    types=[T_COMMAND], check=_check_personal_keys,
    cases=Case(sshd_doc(_CA_OK),
               [(sshd_doc(SSHD_OK), ["sshd trusts no SSH certificate authority (TrustedUserCAKeys unset): people log in with long-lived keys",
                                     "sshd reads authorized_keys for every account (AuthorizedKeysFile .ssh/authorized_keys "
                                     ".ssh/authorized_keys2); set none and allow it in a Match User block for the deploy user"]),
                (sshd_doc(_CA_OK + "Match Address 10.0.0.0/8\n    AuthorizedKeysFile .ssh/authorized_keys\n"),
                 ["sshd Match Address 10.0.0.0/8 reads authorized_keys (.ssh/authorized_keys); name the service accounts in Match User"])]))


WEAK_CIPHERS = ("3des-cbc", "aes128-cbc", "aes192-cbc", "aes256-cbc", "arcfour", "arcfour128", "arcfour256",
                "blowfish-cbc", "cast128-cbc", "rijndael-cbc@lysator.liu.se")
WEAK_MACS = ("hmac-md5", "hmac-md5-96", "hmac-ripemd160", "hmac-sha1", "hmac-sha1-96", "umac-64@openssh.com",
             "hmac-md5-etm@openssh.com", "hmac-ripemd160-etm@openssh.com",
             "hmac-md5-96-etm@openssh.com", "hmac-sha1-etm@openssh.com", "hmac-sha1-96-etm@openssh.com", "umac-64-etm@openssh.com")
WEAK_KEX = ("diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1", "diffie-hellman-group-exchange-sha1")


def _check_sshd_crypto(props, args):
    for sshd in _sshd_configs(props):
        for keyword, weak in (("ciphers", WEAK_CIPHERS), ("macs", WEAK_MACS), ("kexalgorithms", WEAK_KEX)):
            found = [a for a in sshd.get(keyword).split(",") if a in weak]
            if found:
                yield f"sshd offers weak {keyword}: {', '.join(found)}"


resource_policy(
    "command-sshd-disallow-weak-algorithms", "sshd offers no weak ciphers, MACs or key exchanges.",
    level=MANDATORY, severity=HIGH, category="hosts",
    sources=[f"{CIS_SSH}.6 (Ciphers)", f"{CIS_SSH}.12 (KexAlgorithms)", f"{CIS_SSH}.15 (MACs)", f"{DEVSEC} sshd-01, sshd-02, sshd-03"],
    fix="List only strong algorithms; OpenSSH's default MACs include umac-64 and hmac-sha1, so set MACs.",
    types=[T_COMMAND], check=_check_sshd_crypto,
    cases=Case(sshd_doc(SSHD_OK),
               [(sshd_doc("Ciphers aes128-cbc,aes256-gcm@openssh.com\nMACs hmac-sha1,hmac-sha2-256\nKexAlgorithms +diffie-hellman-group1-sha1\n"),
                 ["sshd offers weak ciphers: aes128-cbc", "sshd offers weak macs: hmac-sha1", "sshd offers weak kexalgorithms: diffie-hellman-group1-sha1"]),
                (sshd_doc("PermitRootLogin no\n"),
                 ["sshd offers weak macs: umac-64-etm@openssh.com, hmac-sha1-etm@openssh.com, umac-64@openssh.com, hmac-sha1"])]))


def _check_ufw_default(props, args):
    text = stdin_of(props)
    rules, _ = ufw_rules(text)
    if (rules or "ufw enable" in text or "ufw --force enable" in text) and default_policy(text) != "deny" \
            and default_policy(text) != "reject":
        yield "a UFW script does not deny incoming traffic by default"


resource_policy(
    "command-ufw-enable-default-deny", "UFW denies incoming traffic by default.",
    level=MANDATORY, severity=HIGH, category="hosts",
    sources=["CIS Ubuntu Linux 24.04 LTS Benchmark 4.2.7 (ufw default deny)"],
    fix="Run `ufw default deny incoming` before adding rules.",
    types=[T_COMMAND], check=_check_ufw_default,
    cases=Case(doc(script("ufw", body="ufw default deny incoming\nufw allow 22/tcp\n")),
               [(doc(script("ufw", body="ufw default allow incoming\nufw allow 22/tcp\n")), ["a UFW script does not deny incoming traffic by default"]),
                (doc(script("ufw", body="ufw allow 80/tcp\nufw --force enable\n")), ["a UFW script does not deny incoming traffic by default"])]))


def _check_ufw_parses(props, args):
    _, errors = ufw_rules(stdin_of(props))
    for error in errors:
        yield f"a ufw rule does not parse ({error}); ufw would reject it and leave the host open or closed by surprise"


resource_policy(
    "command-ufw-configure-valid-rules", "Every ufw rule a host script adds is one ufw accepts.",
    level=MANDATORY, severity=MEDIUM, category="hosts",
    sources=["ufw(8) rule syntax"],
    fix="Fix the rule; ranges and lists need a protocol (6000:6007/tcp).",
    types=[T_COMMAND], check=_check_ufw_parses,
    cases=Case(doc(script("ufw", body="ufw default deny incoming\nufw allow 6000:6007/tcp\n")),
               [(doc(script("ufw", body="ufw default deny incoming\nufw allow 6000:6007\n")),
                 ["a ufw rule does not parse (port ranges and lists need a protocol: 6000:6007); ufw would reject it and leave the host open or closed by surprise"])]))


def _check_ufw_public_data(props, args):
    rules, _ = ufw_rules(stdin_of(props))
    for rule in rules:
        if rule.action not in ("allow", "limit") or rule.direction != "in" or not rule.from_anyone:
            continue
        for port in ports_in(rule.port_ranges(), SENSITIVE_PORTS):
            if port in DATA_PORTS or port == 22 or rule.dst_port != "any":
                yield (f"UFW rule `{rule.line}` opens {SENSITIVE_PORTS[port]} ({port}) to anyone; "
                       "admit only the tier that needs it")
                break


resource_policy(
    "command-ufw-disallow-public-data-port", "UFW never opens a data, SSH or admin port to anyone, in any rule form.",
    level=MANDATORY, severity=CRITICAL, category="hosts",
    sources=["CIS Ubuntu Linux 24.04 LTS Benchmark 4.2 (ufw rules for open ports)", "Kredete tier model"],
    fix="Give the rule a `from` with the app tier's addresses.",
    types=[T_COMMAND], check=_check_ufw_public_data,
    cases=Case(doc(script("ufw", body="ufw default deny incoming\nufw allow proto tcp from 10.0.0.2/32 to any port 5432\nufw allow 443/tcp\n")),
               [(doc(script("ufw", body="ufw default deny incoming\nufw allow 5432/tcp\nufw allow proto tcp to any port 6300:6400\n"
                                        "ufw allow from ::/0 to any port 27017 proto tcp\nufw route allow 9000/tcp\n")),
                 ["UFW rule `ufw allow 5432/tcp` opens Postgres (5432) to anyone; admit only the tier that needs it",
                  "UFW rule `ufw allow proto tcp to any port 6300:6400` opens Redis (6379) to anyone; admit only the tier that needs it",
                  "UFW rule `ufw allow from ::/0 to any port 27017 proto tcp` opens MongoDB (27017) to anyone; admit only the tier that needs it",
                  "UFW rule `ufw route allow 9000/tcp` opens MinIO (9000) to anyone; admit only the tier that needs it"]),
                (doc(script("ufw", body="ufw default deny incoming\nufw allow OpenSSH\n")),
                 ["UFW rule `ufw allow OpenSSH` opens SSH (22) to anyone; admit only the tier that needs it"])]))


def _connections(props):
    connection = mapping(props.get("connection"))
    while connection:
        yield connection
        connection = mapping(connection.get("proxy"))


def _check_connection(props, args):
    for connection in _connections(props):
        if connection.get("password"):
            yield f"the remote command logs in to {connection.get('host')} with a password; use the deploy key"
        if str(connection.get("user", "root")) == "root":
            yield f"the remote command logs in to {connection.get('host')} as root; use the deploy user with sudo"


resource_policy(
    "command-connection-disallow-password-or-root", "Remote commands log in with a key, as a non-root user, on every hop.",
    level=MANDATORY, severity=HIGH, category="hosts",
    sources=[f"{CIS_SSH}.20", f"{DEVSEC} sshd-06, sshd-27"],
    fix="Connect as deploy with private_key; never set password or user root.",
    types=[T_COMMAND], check=_check_connection,
    cases=Case(doc(script("s", body="true")),
               [(doc(res(T_COMMAND, "s", {"create": "true", "connection": {"host": "10.0.0.5", "user": "root", "password": "x",
                                                                             "proxy": {"host": "203.0.113.1", "user": "deploy", "privateKey": "k"}}})),
                 ["the remote command logs in to 10.0.0.5 with a password; use the deploy key",
                  "the remote command logs in to 10.0.0.5 as root; use the deploy user with sudo"])]))


def _hosts_with(args, needle):
    return {c.name.split("-setup-")[0] for c in by_type(args, T_COMMAND) if needle in stdin_of(c.props)}


def _check_fail2ban(args):
    protected = _hosts_with(args, "ensure_service_enabled fail2ban")
    for command in by_type(args, T_COMMAND):
        if "/etc/ssh/sshd_config.d/" in stdin_of(command.props) and "-setup-" in command.name:
            host = command.name.split("-setup-")[0]
            if host not in protected:
                yield f"host {host} hardens sshd but runs no fail2ban", command.urn


stack_policy(
    "command-fail2ban-enable-service", "Every host that runs sshd also runs fail2ban.",
    level=ADVISORY, severity=MEDIUM, category="hosts",
    sources=[f"{DEVSEC} (brute-force protection)", "V-EdFinance audit 4.1"],
    fix="Include the fail2ban setup step for the host.",
    check=_check_fail2ban,
    cases=Case(doc(*sshd_doc(SSHD_OK)["resources"], script("host-setup-fail2ban", body="ensure_service_enabled fail2ban")),
               [(sshd_doc(SSHD_OK), ["host host hardens sshd but runs no fail2ban"])]))


def _check_unattended(args):
    patched = _hosts_with(args, "unattended-upgrades")
    for command in by_type(args, T_COMMAND):
        if command.name.endswith("-setup-base"):
            host = command.name[:-len("-setup-base")]
            if host not in patched:
                yield f"host {host} does not install unattended-upgrades", command.urn


stack_policy(
    "command-unattendedupgrades-enable-service", "Every managed host installs security updates automatically.",
    level=ADVISORY, severity=MEDIUM, category="hosts",
    sources=["CIS Ubuntu Linux 24.04 LTS Benchmark 1.2.2 (updates installed)"],
    fix="Install and enable unattended-upgrades in the base setup.",
    check=_check_unattended,
    cases=Case(doc(script("h-setup-base", body="ensure_packages unattended-upgrades")),
               [(doc(script("h-setup-base", body="ensure_packages curl")), ["host h does not install unattended-upgrades"])]))
