"""The local apt repository's index, made by the real dpkg-scanpackages and dpkg-deb."""

from __future__ import annotations

import gzip
import hashlib
import subprocess

import pytest

from rehearsal import aptrepo
from tests.conftest import require_tool

pytestmark = pytest.mark.realtool


def test_index_has_debians_layout_and_a_release_that_matches(tmp_path):
    require_tool("dpkg-scanpackages", "the local apt repository's index")
    pkg = tmp_path / "src"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: lab-probe\nVersion: 1.0\nArchitecture: all\nMaintainer: lab <lab@example.org>\n"
        "Description: probe\n")
    pool = tmp_path / "repo" / "debian" / "pool"
    pool.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "--build", str(pkg), str(pool / "lab-probe_1.0_all.deb")],
                   check=True, capture_output=True)
    aptrepo._index(tmp_path / "repo")
    dists = tmp_path / "repo" / "debian" / "dists" / "bookworm"
    packages = (dists / "main" / "binary-amd64" / "Packages").read_text()
    assert "Package: lab-probe" in packages and "Filename: pool/lab-probe_1.0_all.deb" in packages
    gz = (dists / "main" / "binary-amd64" / "Packages.gz").read_bytes()
    assert gzip.decompress(gz).decode() == packages
    release = (dists / "Release").read_text()
    assert f" {hashlib.sha256(gz).hexdigest()} {len(gz)} main/binary-amd64/Packages.gz" in release
    assert "Codename: bookworm" in release and "Components: main" in release
