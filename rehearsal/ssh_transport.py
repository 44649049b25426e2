"""The converge's SSH side, as pulumi-command's remote Command and the docker library's
``ssh://`` transport reach a host: ``Connections`` (paramiko clients per host, through the
host's jump host, host keys accepted on first use) and ``write_ssh_config`` (the OpenSSH client
configuration the docker library's transport reads)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Optional

from rehearsal.capture import Host, StackCapture


class Connections:
    """Paramiko clients per host, through the host's jump host when it has one; host keys are
    accepted on first use and recorded (the stack's ``StrictHostKeyChecking=accept-new``)."""

    def __init__(self, capture: StackCapture, home: Path):
        import paramiko

        self.paramiko = paramiko
        self.capture = capture
        self.home = home
        self.known_hosts = home / ".ssh" / "known_hosts"
        self.clients: dict[str, Any] = {}
        self.lock = threading.Lock()
        # One record of every host key seen (the docker library's ssh reads it), starting from
        # what earlier runs recorded: a run that rewrote the file from its own connections alone
        # would drop the hosts it has not reached yet while their Docker steps read it.
        self.host_keys = paramiko.HostKeys()
        if self.known_hosts.is_file():
            self.host_keys.load(str(self.known_hosts))
        self.host_locks = {name: threading.Lock() for name in capture.hosts}

    def key(self, host: Host):
        from io import StringIO

        return self.paramiko.Ed25519Key.from_private_key(StringIO(host.private_key)) \
            if "OPENSSH" in host.private_key else self.paramiko.RSAKey.from_private_key(StringIO(host.private_key))

    def client(self, name: str, user: Optional[str] = None):
        host = self.capture.hosts[name]
        user = user or host.user
        cache = f"{user}@{name}"
        with self.host_locks[name]:
            existing = self.clients.get(cache)
            if existing is not None and existing.get_transport() and existing.get_transport().is_active():
                return existing
            sock = None
            if host.bastion:
                jump = self.client(host.bastion)
                sock = jump.get_transport().open_channel("direct-tcpip", (host.address, host.port), ("127.0.0.1", 0))
            client = self.paramiko.SSHClient()
            with self.lock:
                known = self.host_keys.lookup(host.address)
                if known:
                    for key_type, key in known.items():
                        client.get_host_keys().add(host.address, key_type, key)
            client.set_missing_host_key_policy(self.paramiko.AutoAddPolicy())
            last: Optional[Exception] = None
            for _ in range(20):  # the stack's dialErrorLimit
                try:
                    client.connect(host.address, port=host.port, username=user, pkey=self.key(host),
                                   sock=sock, timeout=30, allow_agent=False, look_for_keys=False,
                                   banner_timeout=30, auth_timeout=30)
                    break
                except (OSError, self.paramiko.SSHException) as exc:
                    last = exc
                    time.sleep(1)
                    if host.bastion:
                        sock = self.client(host.bastion).get_transport().open_channel(
                            "direct-tcpip", (host.address, host.port), ("127.0.0.1", 0))
            else:
                raise ConnectionError(f"cannot SSH to {user}@{name} ({host.address}): {last}")
            with self.lock:
                key = client.get_transport().get_remote_server_key()
                self.host_keys.add(host.address, key.get_name(), key)
                self._save_known_hosts()
            self.clients[cache] = client
            return client

    def _save_known_hosts(self) -> None:
        """Writes the file whole and swaps it in: an ssh started by the docker library in the
        meantime reads the old file or the new one, never a truncated one ("No ED25519 host key
        is known ... Host key verification failed", seen on the lab's second run)."""
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        staged = self.known_hosts.with_name(self.known_hosts.name + ".new")
        self.host_keys.save(str(staged))
        os.replace(staged, self.known_hosts)

    def run(self, name: str, command: str, *, stdin: Optional[str], environment: dict[str, str],
            user: Optional[str] = None, timeout_s: float = 1800) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of ``command`` on host ``name``."""
        client = self.client(name, user)
        channel = client.get_transport().open_session()
        if environment:
            channel.update_environment(environment)
        channel.exec_command(command)
        out: list[bytes] = []
        err: list[bytes] = []

        def feed():
            if stdin:
                channel.sendall(stdin.encode())
            channel.shutdown_write()

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        deadline = time.monotonic() + timeout_s
        channel.settimeout(1.0)
        while True:
            got = False
            if channel.recv_ready():
                out.append(channel.recv(65536))
                got = True
            if channel.recv_stderr_ready():
                err.append(channel.recv_stderr(65536))
                got = True
            if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                break
            if time.monotonic() > deadline:
                channel.close()
                return 124, b"".join(out).decode(errors="replace"), \
                    b"".join(err).decode(errors="replace") + f"\ntimed out after {timeout_s:.0f} s"
            if not got:
                time.sleep(0.05)
        writer.join(timeout=5)
        code = channel.recv_exit_status()
        return code, b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace")

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def write_ssh_config(capture: StackCapture, home: Path) -> None:
    """~/.ssh/config for the docker library's ssh:// transport: the host's key, and for a host
    behind a jump host (the stack's ``-o ProxyJump=user@host:port``) an ``ssh -W`` through it."""
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = []
    for host in capture.hosts.values():
        key = ssh / f"{host.name}.key"
        key.write_text(host.private_key)
        key.chmod(0o600)
        lines += [f"Host {host.address}", f"  User {host.user}", f"  Port {host.port}", f"  IdentityFile {key}",
                  "  IdentitiesOnly yes", "  BatchMode yes", f"  UserKnownHostsFile {ssh / 'known_hosts'}",
                  "  StrictHostKeyChecking yes"]
        jump = next((o.split("=", 1)[1] for o in host.ssh_opts if o.startswith("ProxyJump=")), None)
        if jump:
            target, _, port = jump.rpartition(":") if jump.count(":") else (jump, "", "22")
            lines.append(f"  ProxyCommand /usr/bin/ssh -F /dev/null -i {key} -o BatchMode=yes "
                         f"-o UserKnownHostsFile={ssh / 'known_hosts'} -o StrictHostKeyChecking=accept-new "
                         f"-p {port or 22} -W %h:%p {target}")
    (ssh / "config").write_text("\n".join(lines) + "\n")
