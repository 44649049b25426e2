"""Just-in-time SSH: the stack's SSH certificate authority, the sshd drop-in that trusts it,
the command that signs an engineer's key, and the config boundary of the CA key.

The login tests run the real sshd (Debian's OpenSSH) on loopback inside a private mount
namespace: the namespace's own /etc/passwd, /etc/shadow and /etc/ssh hold the accounts and the
files ``admin_access_section`` delivers, so the host's are untouched."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from components import hostsetup
from rehearsal.capture_answers import ssh_keypair
from stacks.config import validate_stack_config
from stacks.errors import ConfigError
from synth.state import State
from tests.test_session_logging import stop_process
from tests.conftest import require_root, require_tool, synth_once

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "ssh_cert.py"
OPS_UID, DEPLOY_UID = 4242, 4243


# --- sshd -T: what the drop-in makes sshd do, per account -------------------------------------

def _access_policy() -> hostsetup.SshdPolicy:
    return hostsetup.SshdPolicy(allow_users=("deploy", "ubuntu", "ops"), key_users=("deploy", "ubuntu"),
                                trusted_user_ca=True)


def _debian_main_config(directory: Path, drop_in: str, *extra: str) -> Path:
    """A main sshd_config shaped like Debian's: the drop-in directory included first, then
    Debian's own settings (UsePAM yes), so a Match block of the drop-in must end with it."""
    host_key = directory / "host_ed25519"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    (directory / "00-platform.conf").write_text(drop_in)
    main = directory / "sshd_config"
    main.write_text("\n".join([f"Include {directory}/00-platform.conf", f"HostKey {host_key}",
                               "UsePAM yes", f"PidFile {directory}/sshd.pid", *extra]) + "\n")
    return main


def _in_namespace(*command: str, binds: dict[str, Path] = {}, **kwargs) -> subprocess.Popen:
    """``command`` in a private mount namespace with its own /run (sshd's privilege-separation
    directory) and ``binds`` (target -> source) mounted over the host's files."""
    require_root("a mount namespace")
    unshare = require_tool("unshare", "util-linux")
    mounts = " && ".join(["mount -t tmpfs tmpfs /run", "mkdir -m 0755 /run/sshd",
                          *[f"mount --bind {source} {target}" for target, source in binds.items()]])
    return subprocess.Popen([unshare, "--mount", "--propagation", "private", "sh", "-c",
                             f'{mounts} && exec "$@"', "sshd", *command], **kwargs)


def _effective(main: Path, user: str) -> dict[str, str]:
    sshd = shutil.which("sshd", path="/usr/sbin:/sbin:" + os.environ.get("PATH", "")) \
        or require_tool("sshd", "Debian package openssh-server")
    process = _in_namespace(sshd, "-T", "-C", f"user={user},host=x,addr=127.0.0.1", "-f", str(main),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


@pytest.mark.realtool
def test_sshd_trusts_the_ca_and_reads_keys_only_for_the_deploy_and_bootstrap_users(tmp_path):
    main = _debian_main_config(tmp_path, hostsetup.render_sshd_config(_access_policy()))
    for user in ("ops", "deploy", "ubuntu"):
        values = _effective(main, user)
        assert values["trustedusercakeys"] == hostsetup.USER_CA_PATH
        assert values["authorizedprincipalsfile"] == f"{hostsetup.PRINCIPALS_DIR}/%u"
        assert values["authorizedkeysfile"] == ("none" if user == "ops" else ".ssh/authorized_keys"), user
        # The Match block ended with the drop-in: Debian's own settings after it still apply.
        assert values["usepam"] == "yes"
        assert values["permitrootlogin"] == "no"


@pytest.mark.realtool
def test_without_a_ca_the_drop_in_is_what_it_was(tmp_path):
    rendered = hostsetup.render_sshd_config(hostsetup.SshdPolicy())
    assert "TrustedUserCAKeys" not in rendered and "AuthorizedKeysFile" not in rendered
    values = _effective(_debian_main_config(tmp_path, rendered), "deploy")
    assert values["authorizedkeysfile"] == ".ssh/authorized_keys .ssh/authorized_keys2"


# --- a real sshd on loopback, a real certificate ---------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """A real sshd -D on 127.0.0.1:``port`` with the platform's drop-in, trusting ``ca_public``
    for the principals ``principals`` as ops; the deploy user has ``deploy_key`` in its
    authorized_keys, ops has ``ops_key`` there (a long-lived key someone left)."""

    def __init__(self, base: Path, ca_public: str, principals: list[str], deploy_key: str, ops_key: str):
        self.base, self.port = base, _free_port()
        etc_ssh = base / "etc-ssh"
        etc_ssh.mkdir(mode=0o755)
        etc_ssh.chmod(0o755)
        (etc_ssh / "platform_user_ca.pub").write_text(ca_public.strip() + "\n")
        principals_dir = etc_ssh / "auth_principals"
        principals_dir.mkdir(mode=0o755)
        (principals_dir / "ops").write_text(hostsetup.render_principals(principals))
        (principals_dir / "deploy").write_text("")
        homes = Path(os.path.realpath(base)) / "home"
        for name, uid, key in (("ops", OPS_UID, ops_key), ("deploy", DEPLOY_UID, deploy_key)):
            ssh_dir = homes / name / ".ssh"
            ssh_dir.mkdir(parents=True)
            (ssh_dir / "authorized_keys").write_text(key.strip() + "\n")
            for path in (homes / name, ssh_dir, ssh_dir / "authorized_keys"):
                os.chown(path, uid, 65534)
            os.chmod(ssh_dir / "authorized_keys", 0o600)
        # Every directory above a home must be root's and not writable by others (StrictModes).
        for directory in [homes, *homes.parents]:
            if str(directory) in ("/", "/tmp"):
                break
            os.chmod(directory, 0o755)
        passwd = base / "passwd"
        passwd.write_text(Path("/etc/passwd").read_text()
                          + f"ops:x:{OPS_UID}:65534::{homes}/ops:/bin/sh\n"
                          + f"deploy:x:{DEPLOY_UID}:65534::{homes}/deploy:/bin/sh\n")
        shadow = base / "shadow"
        # Locked passwords, as `passwd -l` leaves them on the hosts.
        shadow.write_text(Path("/etc/shadow").read_text() + "ops:!:20000::::::\ndeploy:!:20000::::::\n")
        shadow.chmod(0o640)
        main = _debian_main_config(base, hostsetup.render_sshd_config(hostsetup.SshdPolicy(
            allow_users=("deploy", "ops"), key_users=("deploy",), trusted_user_ca=True,
            port=self.port)), "ListenAddress 127.0.0.1", "LogLevel VERBOSE")
        self.log = base / "sshd.log"
        sshd = shutil.which("sshd", path="/usr/sbin:/sbin") or require_tool("sshd", "openssh-server")
        self.process = _in_namespace(sshd, "-D", "-e", "-f", str(main),
                                     binds={"/etc/passwd": passwd, "/etc/shadow": shadow,
                                            "/etc/ssh": etc_ssh},
                                     stdout=subprocess.DEVNULL, stderr=self.log.open("w"))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"sshd did not listen: {self.log.read_text()}")

    def login(self, user: str, key: Path, certificate: Path | None = None) -> subprocess.CompletedProcess:
        options = ["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                   "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                   "-o", "ConnectTimeout=10", "-i", str(key)]
        if certificate is not None:
            options += ["-o", f"CertificateFile={certificate}"]
        return subprocess.run(["ssh", *options, "-p", str(self.port), f"{user}@127.0.0.1", "id -un"],
                              capture_output=True, text=True, timeout=30)

    def stop(self) -> None:
        stop_process(self.process)


def _key_files(directory: Path, name: str) -> tuple[Path, str]:
    private, public = ssh_keypair()
    path = directory / name
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(private)
    path.with_name(f"{name}.pub").write_text(public + "\n")
    return path, public


def _sign_with(ca_private: str, public_key: Path, directory: Path, *, principal: str, validity: str) -> Path:
    """ssh-keygen -s by hand, for the certificates the script refuses to make."""
    ca = directory / f"ca-{principal}-{validity.replace(':', '-')}"
    descriptor = os.open(ca, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(ca_private)
    subject = directory / f"{ca.name}-subject.pub"
    shutil.copyfile(public_key, subject)
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "test", "-n", principal, "-V", validity,
                    str(subject)], check=True, capture_output=True)
    return directory / f"{ca.name}-subject-cert.pub"


def _script(*args: str, ca_key: str | None = None, cwd: Path = ROOT, stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SSH_CA_PRIVATE_KEY"}
    if ca_key is not None:
        env["SSH_CA_PRIVATE_KEY"] = ca_key
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, input=stdin, cwd=cwd, timeout=60)


@pytest.mark.realtool
def test_a_fresh_certificate_logs_in_and_nothing_else_does(tmp_path):
    require_tool("ssh", "Debian package openssh-client")
    ca_private, ca_public = ssh_keypair()
    other_ca_private, _ = ssh_keypair()
    engineer, engineer_public = _key_files(tmp_path, "id_engineer")
    deploy, deploy_public = _key_files(tmp_path, "id_deploy")
    sshd = Sshd(tmp_path, ca_public, ["oncall"], deploy_key=deploy_public, ops_key=engineer_public)
    try:
        # The command engineers run: staging's principals (environment.ssh_principals).
        assert "oncall" in yaml.safe_load((ROOT / "Pulumi.staging.yaml").read_text())["config"][
            "platform:environment"].get("ssh_principals", ["oncall"])
        signed = _script("staging", str(engineer.with_name("id_engineer.pub")), "--principal", "oncall",
                         "--identity", "alice@example.com", "--hours", "2",
                         # Not KEY-cert.pub: ssh would offer it with the bare key too.
                         "--output", str(tmp_path / "certificate.pub"), ca_key=ca_private)
        assert signed.returncode == 0, signed.stderr
        certificate = tmp_path / "certificate.pub"
        assert "Principals: \n                oncall" in signed.stdout
        assert ca_private.splitlines()[1] not in signed.stdout + signed.stderr

        accepted = sshd.login("ops", engineer, certificate)
        assert accepted.returncode == 0, accepted.stderr + sshd.log.read_text()
        assert accepted.stdout.strip() == "ops"
        # sshd logs who it was: the certificate's key ID names the engineer.
        assert 'ID alice@example.com' in sshd.log.read_text()

        # The same key without the certificate: ops has no authorized_keys (a left-over key
        # opens nothing), the deploy user's own key still works, the certificate does not
        # make anyone the deploy user.
        assert sshd.login("ops", engineer).returncode != 0
        assert sshd.login("deploy", deploy).stdout.strip() == "deploy"
        assert sshd.login("deploy", engineer, certificate).returncode != 0

        # A principal the stack does not list, a validity in the past, another CA: refused.
        wrong_principal = _sign_with(ca_private, engineer.with_name("id_engineer.pub"), tmp_path,
                                     principal="intruder", validity="-5m:+1h")
        expired = _sign_with(ca_private, engineer.with_name("id_engineer.pub"), tmp_path,
                             principal="oncall", validity="20200101:20200102")
        foreign = _sign_with(other_ca_private, engineer.with_name("id_engineer.pub"), tmp_path,
                             principal="oncall", validity="-5m:+1h")
        for refused in (wrong_principal, expired, foreign):
            result = sshd.login("ops", engineer, refused)
            assert result.returncode != 0 and result.stdout.strip() != "ops", refused.name
        log = sshd.log.read_text()
        assert "expired" in log or "not yet valid" in log or "invalid" in log.lower()
    finally:
        sshd.stop()


# --- the signing command ---------------------------------------------------------------------

@pytest.mark.fast
def test_the_script_refuses_a_principal_the_stack_does_not_list(tmp_path):
    key, _ = _key_files(tmp_path, "id")
    ca_private, _ = ssh_keypair()
    result = _script("staging", str(key.with_name("id.pub")), "--principal", "root", "--identity", "a",
                     ca_key=ca_private)
    assert result.returncode == 2
    assert "--principal 'root' may not log in on stack staging" in result.stderr
    assert not (tmp_path / "id-cert.pub").exists()


@pytest.mark.fast
@pytest.mark.parametrize("hours", ["0", "13"])
def test_the_script_caps_the_validity(tmp_path, hours):
    key, _ = _key_files(tmp_path, "id")
    ca_private, _ = ssh_keypair()
    result = _script("staging", str(key.with_name("id.pub")), "--principal", "oncall", "--identity", "a",
                     "--hours", hours, ca_key=ca_private)
    assert result.returncode == 2 and "valid 1 to 12 hours" in result.stderr


@pytest.mark.fast
def test_the_script_names_a_bad_ca_key_without_showing_it(tmp_path):
    key, _ = _key_files(tmp_path, "id")
    secret = "not-a-key-" + "Zx9" * 10
    result = _script("staging", str(key.with_name("id.pub")), "--principal", "oncall", "--identity", "a",
                     stdin=secret)
    assert result.returncode == 2
    assert "the SSH certificate authority's key is not an OpenSSH private key" in result.stderr
    assert secret not in result.stderr + result.stdout


def _staging_with(tmp_path: Path, **environment) -> Path:
    """Pulumi.staging.yaml with ``platform:environment`` keys replaced, in ``tmp_path``."""
    document = yaml.safe_load((ROOT / "Pulumi.staging.yaml").read_text())
    document["config"]["platform:environment"].update(environment)
    path = tmp_path / "Pulumi.staging.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.fast
def test_the_script_refuses_principals_the_boundary_refuses(tmp_path):
    """``ssh_principals: ["oncall,root"]`` was read raw: ``--principal oncall,root`` signed a
    certificate for the two principals oncall and root."""
    key, _ = _key_files(tmp_path, "id")
    ca_private, _ = ssh_keypair()
    path = _staging_with(tmp_path, ssh_principals=["oncall,root"])
    result = _script("staging", "--stack-file", str(path), str(key.with_name("id.pub")), "--principal",
                     "oncall,root", "--identity", "a", ca_key=ca_private)
    assert result.returncode == 2
    assert result.stderr.startswith("error: platform:environment.ssh_principals[0]: String should match pattern"), \
        result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "id-cert.pub").exists()


@pytest.mark.fast
@pytest.mark.parametrize("content, message", [
    (b"config:\n  platform:products: [\xff]\n", "{path}: not UTF-8 text (byte 30 is 0xff); save the file as UTF-8"),
    (b"config: [1]\n", "{path}: 'config:' must be a mapping of key: value"),
    (None, "platform:environment: must be an object with name, admin_cidrs and alerts, got a list of 1 item"),
    ("directory", "--stack-file {path} is a directory; give the stack file itself (e.g. {path}/Pulumi.staging.yaml)"),
])
def test_a_bad_stack_file_is_one_line_exit_2(tmp_path, content, message):
    """Each was a traceback, exit 1."""
    key, _ = _key_files(tmp_path, "id")
    path = tmp_path / "Pulumi.staging.yaml"
    if content is None:
        document = yaml.safe_load((ROOT / "Pulumi.staging.yaml").read_text())
        document["config"]["platform:environment"] = [1]
        path.write_text(yaml.safe_dump(document))
    elif content == "directory":
        path = tmp_path / "stacks"
        path.mkdir()
    else:
        path.write_bytes(content)
    result = _script("staging", "--stack-file", str(path), str(key.with_name("id.pub")), "--principal", "oncall",
                     "--identity", "a", ca_key=ssh_keypair()[0])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"error: {message.format(path=path)}\n"


@pytest.mark.fast
def test_a_missing_stack_is_named_with_its_fix(tmp_path):
    key, _ = _key_files(tmp_path, "id")
    result = _script("nosuch", str(key.with_name("id.pub")), "--principal", "oncall", "--identity", "a",
                     ca_key=ssh_keypair()[0])
    assert result.returncode == 2
    assert result.stderr == (f"error: no stack file at {ROOT / 'Pulumi.nosuch.yaml'}; create it (see README, "
                             "'Adding a stack') or pass --stack-file PATH\n")


@pytest.mark.fast
@pytest.mark.parametrize("content", [b"\xff\xfe", b""])
def test_a_public_key_file_that_is_not_text_is_one_line(tmp_path, content):
    """A non-UTF-8 file was a UnicodeDecodeError, exit 1."""
    public = tmp_path / "bin.pub"
    public.write_bytes(content)
    result = _script("staging", str(public), "--principal", "oncall", "--identity", "a", ca_key=ssh_keypair()[0])
    assert result.returncode == 2
    assert result.stderr == f"error: {public}: not an OpenSSH public key file (KEY.pub)\n"


@pytest.mark.fast
def test_an_empty_stdin_says_no_ca_key_was_given(tmp_path):
    """It said the (empty) key "is not an OpenSSH private key"."""
    key, _ = _key_files(tmp_path, "id")
    result = _script("staging", str(key.with_name("id.pub")), "--principal", "oncall", "--identity", "a", stdin="")
    assert result.returncode == 2
    assert result.stderr == ("error: no CA key was given on stdin (it was empty): set SSH_CA_PRIVATE_KEY or pipe it "
                             "in (`pulumi config get --stack staging platform:ssh_ca_private_key | python "
                             "scripts/ssh_cert.py staging ...`)\n")


@pytest.mark.fast
@pytest.mark.parametrize("identity", ["alice\nAccepted publickey for root", "alice\x1b[2J", "-alice", "al ice", ""])
def test_an_identity_that_would_mangle_sshds_log_is_refused(tmp_path, identity):
    """The key ID lands in sshd's log line of every login: a control character could forge a
    line, a leading '-' reads as an option."""
    key, _ = _key_files(tmp_path, "id")
    result = _script("staging", str(key.with_name("id.pub")), f"--identity={identity}", "--principal", "oncall",
                     ca_key=ssh_keypair()[0])
    assert result.returncode == 2
    assert result.stderr == ("error: --identity must be a name without spaces or control characters, not starting "
                             "with '-' (an email or a login): sshd logs it with every login\n")
    assert not (tmp_path / "id-cert.pub").exists()


@pytest.mark.realtool
def test_the_ca_key_reaches_ssh_keygen_only_as_a_private_file(tmp_path, monkeypatch):
    """The argv ssh-keygen gets, and the file it reads, seen by a recording wrapper."""
    real = require_tool("ssh-keygen", "openssh-client")
    record = tmp_path / "record"
    wrapper = tmp_path / "ssh-keygen"
    wrapper.write_text(f'#!/bin/sh\nfor a in "$@"; do [ -f "$a" ] && stat -c "%a %n" "$a" "$(dirname "$a")"'
                       f' >>{record}; done\necho "$@" >>{record}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    sys.path.insert(0, str(ROOT / "scripts"))
    import ssh_cert

    key, _ = _key_files(tmp_path, "id")
    ca_private, _ = ssh_keypair()
    ssh_cert.sign(ca_private, key.with_name("id.pub"), principal="oncall", identity="a", hours=1,
                  output=tmp_path / "cert.pub", ssh_keygen=str(wrapper))
    text = record.read_text()
    assert ca_private.splitlines()[1] not in text
    ca_lines = [line for line in text.splitlines() if line.endswith("/ca")]
    assert ca_lines and ca_lines[0].startswith("600 ")
    assert any(line.startswith("700 ") and "ssh-cert-" in line for line in text.splitlines())
    assert not any(Path(line.split(" ", 1)[1]).exists() for line in ca_lines), "the CA file is removed"
    assert "Type: ssh-ed25519-cert-v01@openssh.com user certificate" in subprocess.run(
        [real, "-L", "-f", str(tmp_path / "cert.pub")], capture_output=True, text=True).stdout


# --- the config boundary and the synthesized hosts -------------------------------------------

def _staging_raw() -> dict:
    config = yaml.safe_load((ROOT / "Pulumi.staging.yaml").read_text())["config"]
    return {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("platform:")}


def _with_secrets(raw: dict, **values: str) -> tuple[dict, set[str]]:
    from stacks.config import validate_stack_config as validate

    needed = validate(raw, check_secrets=False).required_secrets()
    filled = {s.key: values.get(s.key, "x" * 24) for s in needed}
    for s in needed:
        if (s.format or s.key.endswith("_ssh_private_key")) and s.key not in values:
            filled[s.key] = ssh_keypair()[0]
    return {**raw, **filled}, set(filled)


@pytest.mark.fast
def test_a_missing_ca_key_is_named_with_its_fix():
    raw, secret = _with_secrets(_staging_raw())
    del raw["ssh_ca_private_key"]
    with pytest.raises(ConfigError) as error:
        validate_stack_config(raw, secret - {"ssh_ca_private_key"})
    assert ("platform:ssh_ca_private_key: required secret is not set (private key of the stack's SSH "
            "certificate authority") in str(error.value)
    assert "pulumi config set --secret platform:ssh_ca_private_key" in str(error.value)


@pytest.mark.fast
def test_a_ca_key_that_is_not_an_openssh_key_is_refused_unshown():
    secret = "-----BEGIN RSA PRIVATE KEY-----\nMIIEabc" + "Qk9" * 20 + "\n-----END RSA PRIVATE KEY-----\n"
    raw, keys = _with_secrets(_staging_raw(), ssh_ca_private_key=secret)
    with pytest.raises(ConfigError) as error:
        validate_stack_config(raw, keys)
    message = str(error.value)
    assert "platform:ssh_ca_private_key: the SSH certificate authority's key is not an OpenSSH private key" in message
    assert "Qk9Qk9" not in message


def _passphrase_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(b"pw")).decode()


@pytest.mark.fast
@pytest.mark.parametrize("key, name", [("ssh_ca_private_key", "the SSH certificate authority's key"),
                                       ("vedfinance_ssh_private_key", "the deploy user's key")])
def test_a_key_with_a_passphrase_is_named_as_the_key_checked(key, name):
    """A CA key with a passphrase was refused as "...; the deploy key must have none". A deploy
    key is checked when the host has a bootstrap user (the deploy user is made from its public
    half)."""
    raw, keys = _with_secrets(_staging_raw(), **{key: _passphrase_key()})
    raw["vedfinance"] = {**raw["vedfinance"], "host": {**raw["vedfinance"]["host"], "bootstrap_user": "ubuntu"}}
    with pytest.raises(ConfigError) as error:
        validate_stack_config(raw, keys)
    assert (f"platform:{key}: {name} is protected by a passphrase; it must have none (remove it with "
            "`ssh-keygen -p -N '' -f KEY`) (value not shown)") in str(error.value)
    assert "deploy key" not in str(error.value)


@pytest.mark.fast
def test_the_script_names_a_ca_key_with_a_passphrase_as_the_ca_key(tmp_path):
    key, _ = _key_files(tmp_path, "id")
    result = _script("staging", str(key.with_name("id.pub")), "--principal", "oncall", "--identity", "a",
                     ca_key=_passphrase_key())
    assert result.returncode == 2
    assert result.stderr == ("error: the SSH certificate authority's key is protected by a passphrase; it must "
                             "have none (remove it with `ssh-keygen -p -N '' -f KEY`) (value not shown)\n")


@pytest.mark.fast
def test_a_deploy_key_cannot_double_as_the_ca():
    raw, keys = _with_secrets(_staging_raw())
    raw["ssh_ca_private_key"] = raw["kro_ssh_private_key"]
    with pytest.raises(ConfigError) as error:
        validate_stack_config(raw, keys)
    assert ("platform:ssh_ca_private_key: is the same key as platform:kro_ssh_private_key (value not shown); "
            "the certificate authority needs a key of its own") in str(error.value)
    assert raw["kro_ssh_private_key"].splitlines()[1] not in str(error.value)


@pytest.mark.fast
def test_a_deploy_key_saved_again_cannot_double_as_the_ca():
    """The same key in another file (a new comment, ``ssh-keygen -p``) has other random check
    bytes: the text differs, the key does not."""
    from cryptography.hazmat.primitives import serialization

    raw, keys = _with_secrets(_staging_raw())
    deploy = serialization.load_ssh_private_key(raw["kro_ssh_private_key"].encode(), password=None)
    raw["ssh_ca_private_key"] = deploy.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                     serialization.NoEncryption()).decode()
    assert raw["ssh_ca_private_key"].strip() != raw["kro_ssh_private_key"].strip()
    with pytest.raises(ConfigError) as error:
        validate_stack_config(raw, keys)
    assert "platform:ssh_ca_private_key: is the same key as platform:kro_ssh_private_key (value not shown)" \
        in str(error.value)


@pytest.mark.fast
def test_a_principal_with_a_space_is_refused_at_its_path():
    raw, keys = _with_secrets(_staging_raw())
    raw["environment"] = {**raw["environment"], "ssh_principals": ["on call"]}
    with pytest.raises(ConfigError) as error:
        validate_stack_config(raw, keys)
    assert "platform:environment.ssh_principals[0]" in str(error.value)


@pytest.mark.fast
@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_every_host_of_the_stack_trusts_one_ca_for_its_principals(stack):
    state = State(synth_once(stack))
    sshd_scripts = {c["name"]: c["inputs"]["stdin"] for c in state.of_type("command:remote:Command")
                    if c["name"].endswith("-setup-sshd")}
    assert len(sshd_scripts) >= 5, sorted(sshd_scripts)
    ca_lines = set()
    for name, text in sshd_scripts.items():
        assert "TrustedUserCAKeys /etc/ssh/platform_user_ca.pub" in text, name
        assert "AuthorizedKeysFile none" in text, name
        assert f"put_file {hostsetup.PRINCIPALS_DIR}/ops 0644 root:root" in text, name
        after = text.split(f"put_file {hostsetup.USER_CA_PATH} 0644 root:root <<'PLATFORM_EOF'", 1)[1]
        ca_lines.add(after.splitlines()[1])
        assert "\noncall\n" in text.split(f"{hostsetup.PRINCIPALS_DIR}/ops", 1)[1], name
        # The deploy key stays, scoped to the deploy user (and a bootstrap user).
        assert "Match User deploy" in text, name
    assert len(ca_lines) == 1 and next(iter(ca_lines)).startswith("ssh-ed25519 "), ca_lines


@pytest.mark.fast
@pytest.mark.parametrize("existing", ["id", "ca", "notes.txt"])
def test_the_script_never_overwrites_a_key_or_a_file_that_is_not_a_certificate(tmp_path, existing):
    key, _ = _key_files(tmp_path, "id")
    ca_private, _ = ssh_keypair()
    target = tmp_path / existing
    if not target.exists():
        target.write_text(ca_private if existing == "ca" else "keep me\n")
    before = target.read_text()
    result = _script("staging", str(key.with_name("id.pub")), "--principal", "oncall", "--identity", "a",
                     "--output", str(target), ca_key=ca_private)
    assert result.returncode == 2, result.stderr
    assert "exists and is not a certificate" in result.stderr and "Traceback" not in result.stderr
    assert target.read_text() == before


@pytest.mark.fast
def test_the_script_checks_the_output_directory_before_signing(tmp_path):
    key, _ = _key_files(tmp_path, "id")
    ca_private, _ = ssh_keypair()
    result = _script("staging", str(key.with_name("id.pub")), "--principal", "oncall", "--identity", "a",
                     "--output", "/nonexistent/x.pub", ca_key=ca_private)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --output /nonexistent/x.pub: directory /nonexistent does not exist"


@pytest.mark.fast
def test_the_tunnel_script_names_a_missing_stack_in_one_line():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "pencom_tunnel.py"), "nosuch", "--print"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr == (f"error: no stack file at {ROOT / 'Pulumi.nosuch.yaml'}; create it (see README, "
                             "'Adding a stack') or pass --stack-file PATH\n")
