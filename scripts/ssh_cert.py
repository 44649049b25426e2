"""Sign an engineer's SSH public key with the stack's certificate authority, for a few hours.

    pulumi config get --stack prod platform:ssh_ca_private_key \\
      | python scripts/ssh_cert.py prod --principal oncall --identity alice ~/.ssh/id_ed25519.pub

writes ``~/.ssh/id_ed25519-cert.pub`` (where ``ssh`` looks for it), then
``ssh -J ops@EDGE ops@HOST`` logs in as the admin account ``ops`` until the certificate expires
(EDGE: the Pencom edge's management address, e.g. prod's 10.99.0.3, with the WireGuard tunnel up;
its public address only under break-glass).

Just-in-time access: every host's sshd trusts the stack's CA (``TrustedUserCAKeys``) and admits a
certificate as ``ops`` only when it names one of ``environment.ssh_principals`` of that stack
(``AuthorizedPrincipalsFile``); nobody keeps a personal key on a host. The certificate's key ID
(``--identity``) is what sshd logs for the login, so sessions are traced to a person.

The CA key is read from the environment variable ``SSH_CA_PRIVATE_KEY`` or, when that is unset,
from stdin (never a command-line argument). It is handed to ``ssh-keygen -s`` as a 0600 file in
a private (0700) temporary directory, removed when the command ends. Validity: ``--hours``, 1 to
12 (default 4), starting five minutes back for clock skew.

The stack file (``--stack-file``, default ``Pulumi.STACK.yaml``) is read and validated by the
program's config boundary (``synth.stackfile.load_stack_config``): a principal is granted only
from a config ``pulumi up`` would accept (the boundary refuses ``"oncall,root"``, which
ssh-keygen would read as two principals).

Exit 2, with a message that names the problem (never the key), when the stack file, the
principal, the identity, the key or the duration is wrong; exit 1 when ssh-keygen fails.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synth.stackfile import StackFileError, load_stack_config  # noqa: E402
from validation.formats import openssh_key_problem  # noqa: E402

MAX_HOURS = 12
"""A certificate outlives no working day: access is granted again, not kept."""
CA_VARIABLE = "SSH_CA_PRIVATE_KEY"


class UsageError(Exception):
    """Bad input: exit 2 with this message."""


def stack_principals(stack: str, stack_file: Path | None = None, root: Path = ROOT) -> list[str]:
    """``environment.ssh_principals`` of the stack (its default when unset), from a config the
    boundary accepts. Raises UsageError with the boundary's message otherwise."""
    try:
        config = load_stack_config(stack, stack_file, root)
    except StackFileError as exc:
        raise UsageError(str(exc)) from None
    return list(config.environment.ssh_principals)


def identity_problem(identity: str) -> str | None:
    """Why ``identity`` cannot be a certificate's key ID, or None. sshd writes the key ID into
    its log line for every login, so a control character could forge or split a log line, and a
    leading ``-`` reads as an option to whoever greps for it."""
    if not identity or identity.startswith("-") or any(c.isspace() or not c.isprintable() for c in identity):
        return ("--identity must be a name without spaces or control characters, not starting with '-' "
                "(an email or a login): sshd logs it with every login")
    return None


def check_public_key(path: Path) -> None:
    """Raises UsageError when ``path`` is not an OpenSSH public key file (missing, a directory,
    not UTF-8, a private key), before ssh-keygen is given it."""
    problem = f"{path}: not an OpenSSH public key file (KEY.pub)"
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        raise UsageError(problem) from None
    if not text.startswith(("ssh-", "ecdsa-", "sk-")) or "PRIVATE KEY" in text:
        raise UsageError(problem)


def read_ca_key(stack: str, stdin=sys.stdin) -> str:
    """The CA's private key from ``SSH_CA_PRIVATE_KEY`` or stdin; UsageError when neither holds
    a usable OpenSSH private key (the message never quotes it)."""
    fix = (f"set {CA_VARIABLE} or pipe it in (`pulumi config get --stack {stack} platform:ssh_ca_private_key "
           f"| python scripts/ssh_cert.py {stack} ...`)")
    key = os.environ.get(CA_VARIABLE, "")
    if not key.strip():
        if stdin.isatty():
            raise UsageError(f"no CA key: {fix}")
        key = stdin.read()
        if not key.strip():
            raise UsageError(f"no CA key was given on stdin (it was empty): {fix}")
    problem = openssh_key_problem(key)
    if problem:
        raise UsageError(f"the SSH certificate authority's key {problem} (value not shown)")
    return key.strip() + "\n"


def sign(ca_key: str, public_key: Path, *, principal: str, identity: str, hours: int,
         output: Path, ssh_keygen: str = "ssh-keygen") -> str:
    """Signs ``public_key`` for ``principal`` (validity -5m to +``hours``h, a random serial,
    no agent or X11 forwarding) and writes the certificate to ``output``; returns
    ssh-keygen's description of it (``ssh-keygen -L``). Raises subprocess.CalledProcessError
    when ssh-keygen fails."""
    with tempfile.TemporaryDirectory(prefix="ssh-cert-") as work:
        os.chmod(work, 0o700)
        ca_file = Path(work) / "ca"
        descriptor = os.open(ca_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(ca_key)
        subject = Path(work) / "key.pub"
        shutil.copyfile(public_key, subject)
        subprocess.run([ssh_keygen, "-q", "-s", str(ca_file), "-I", identity, "-n", principal,
                        "-V", f"-5m:+{hours}h", "-z", str(secrets.randbelow(2**62)),
                        "-O", "no-agent-forwarding", "-O", "no-x11-forwarding", str(subject)],
                       check=True, capture_output=True, text=True)
        certificate = (Path(work) / "key-cert.pub").read_text()
    output.write_text(certificate)
    return subprocess.run([ssh_keygen, "-L", "-f", str(output)], check=True, capture_output=True,
                          text=True).stdout


def check_output(output: Path) -> None:
    """Raises UsageError, before anything is signed, when the certificate cannot be written to
    ``output`` or would overwrite a file that is not a certificate: an existing file must be
    named ``*-cert.pub`` and hold no ``PRIVATE KEY`` (the engineer's key or the CA's)."""
    if not output.parent.is_dir():
        raise UsageError(f"--output {output}: directory {output.parent} does not exist")
    if output.is_dir():
        raise UsageError(f"--output {output} is a directory; name the certificate file (KEY-cert.pub)")
    if output.exists() or output.is_symlink():
        try:
            private = "PRIVATE KEY" in output.read_text(errors="replace")
        except OSError as exc:
            raise UsageError(f"--output {output}: cannot read the existing file ({exc.strerror})") from None
        if private or not output.name.endswith("-cert.pub"):
            raise UsageError(f"--output {output} exists and is not a certificate (KEY-cert.pub); "
                             "refusing to overwrite it, choose another file")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack")
    parser.add_argument("--stack-file", type=Path, help="read the config from this file instead")
    parser.add_argument("public_key", type=Path, help="the engineer's OpenSSH public key file")
    parser.add_argument("--principal", required=True,
                        help="one of the stack's environment.ssh_principals")
    parser.add_argument("--identity", required=True,
                        help="who the certificate is for (sshd logs it with every login)")
    parser.add_argument("--hours", type=int, default=4, help=f"validity, 1 to {MAX_HOURS} (default 4)")
    parser.add_argument("--output", type=Path,
                        help="certificate file (default: KEY-cert.pub next to KEY.pub)")
    args = parser.parse_args(argv)
    try:
        allowed = stack_principals(args.stack, args.stack_file)
        if args.principal not in allowed:
            raise UsageError(f"--principal {args.principal!r} may not log in on stack {args.stack}; "
                             f"its environment.ssh_principals are: {', '.join(allowed) or 'none'}")
        if not 1 <= args.hours <= MAX_HOURS:
            raise UsageError(f"--hours {args.hours}: a certificate is valid 1 to {MAX_HOURS} hours")
        if problem := identity_problem(args.identity):
            raise UsageError(problem)
        check_public_key(args.public_key)
        name = args.public_key.name.removesuffix(".pub")
        output = args.output or args.public_key.with_name(f"{name}-cert.pub")
        check_output(output)
        ca_key = read_ca_key(args.stack)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        description = sign(ca_key, args.public_key, principal=args.principal, identity=args.identity,
                           hours=args.hours, output=output)
    except subprocess.CalledProcessError as exc:
        print(f"error: ssh-keygen failed: {exc.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"wrote {output}\n{description}", end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
