"""A file a service no longer declares leaves its host directory with the next delivery (new
user finding 5: a changed ``platform:kro.database_ca_path`` left the old CA file behind): the
rendered script removes what it delivered before (its manifest) and no longer delivers, in the
same commit (a rejected commit puts the file back), and never a file it did not deliver.
``docker`` is a stand-in that reports no container running (``docker ps`` prints nothing); bash,
install, cmp and cp are real.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from components.service_files import HostFile, Reload, render_service_script

pytestmark = pytest.mark.realtool


def _deliver(tmp_path: Path, paths: list[str], reload: Reload = Reload()) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text("#!/bin/sh\n[ \"$1\" = ps ] && exit 0\nexec false\n")
    (bin_dir / "docker").chmod(0o755)
    files = [HostFile(p, f"{p}\n") for p in paths]
    script = render_service_script("lab", str(tmp_path / "srv"), "db", files, [f.content for f in files], reload,
                                   textfile_dir=str(tmp_path / "textfile"))
    (tmp_path / "files-db.sh").write_text(script.replace("PENDING=/var/lib/platform/pending",
                                                         f"PENDING={tmp_path}/pending"))
    return subprocess.run(["bash", str(tmp_path / "files-db.sh")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})


def _changes(result: subprocess.CompletedProcess) -> int:
    return int(re.search(r"platform-setup: (\d+) changes", result.stdout).group(1))


def test_a_file_no_longer_delivered_is_removed_and_nothing_else(tmp_path):
    root = tmp_path / "srv" / "files" / "db"
    first = _deliver(tmp_path, ["/etc/db/ca.crt", "/etc/db/app.conf"])
    assert first.returncode == 0, first.stderr
    (root / "etc" / "db" / "written-by-someone-else").write_text("x\n")
    moved = _deliver(tmp_path, ["/etc/db/tls/ca.crt", "/etc/db/app.conf"])
    assert moved.returncode == 0, moved.stderr
    assert not (root / "etc" / "db" / "ca.crt").exists(), "the old CA file stayed on the host"
    assert (root / "etc" / "db" / "tls" / "ca.crt").read_text() == "/etc/db/tls/ca.crt\n"
    assert (root / "etc" / "db" / "written-by-someone-else").exists()
    assert _changes(moved) == 2 and "removed " in moved.stdout
    again = _deliver(tmp_path, ["/etc/db/tls/ca.crt", "/etc/db/app.conf"])
    assert again.returncode == 0 and _changes(again) == 0, again.stdout + again.stderr


def test_a_removal_the_validator_rejects_is_put_back(tmp_path):
    root = tmp_path / "srv" / "files" / "db"
    assert _deliver(tmp_path, ["/etc/db/ca.crt", "/etc/db/app.conf"]).returncode == 0
    # A validator with no image to run it in: the commit is rejected and the removal undone.
    rejected = _deliver(tmp_path, ["/etc/db/app.conf"], Reload(validate=("check",)))
    assert rejected.returncode == 1 and "rejected:" in rejected.stderr, rejected.stdout + rejected.stderr
    assert (root / "etc" / "db" / "ca.crt").read_text() == "/etc/db/ca.crt\n"
    assert _deliver(tmp_path, ["/etc/db/app.conf"]).returncode == 0
    assert not (root / "etc" / "db" / "ca.crt").exists()
