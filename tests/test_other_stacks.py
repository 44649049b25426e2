"""A stack copied from another that keeps its global names is refused at the config boundary
(stacks/other_stacks.py): exit 2, each shared name with both key paths and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stacks.errors import key_path
from stacks.other_stacks import shared_with_other_stacks, stack_views
from stacks.registry import PRODUCTS
from synth.engine import PROJECT_ROOT

pytestmark = pytest.mark.fast


def _qa_copy(tmp_path: Path) -> Path:
    document = yaml.safe_load((PROJECT_ROOT / "Pulumi.staging.yaml").read_text())
    document["config"]["platform:environment"]["name"] = "qa"
    path = tmp_path / "Pulumi.qa.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_a_copy_of_staging_as_a_third_stack_is_refused_naming_every_shared_name(tmp_path):
    run = subprocess.run([sys.executable, "-m", "synth", "qa", "--stack-file", str(_qa_copy(tmp_path)), "--policy",
                          "--policy-config", "policy/config.staging.json"],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 2, out[-3000:]
    assert "Traceback" not in out
    shared = [line for line in out.splitlines() if "is also in stack staging (Pulumi.staging.yaml: " in line]
    fix = 'a globally named thing belongs to one stack: give this stack its own (README, "Adding a stack")'
    assert shared and all(line.endswith(fix) for line in shared)
    for expected in [
        "platform:environment.management.network: management network 10.98.0.0/24 is also in stack staging "
        "(Pulumi.staging.yaml: platform:environment.management.network, 10.98.0.0/24)",
        "platform:kro.routes[0] (api.stage.krotrust.com).host: hostname api.stage.krotrust.com",
        "platform:vedfinance.routes[3] (staging.v-edfinance.com).host: hostname staging.v-edfinance.com",
        "platform:giv.app_name: App Platform app krogiving-staging",
        "platform:giv.media_bucket.name: Spaces bucket krogiving-media-staging",
        "platform:vedfinance.host.address: host address 103.54.153.248",
        "platform:pencom.nodes.data.private_address: host address 10.41.0.13",
        "platform:pencom.backup.bucket: R2 bucket pencom-staging-backup-wal",
    ]:
        assert any(line.strip().startswith(f"- {expected}") for line in shared), expected
    # 17 backup buckets and each product's session archive (<backup.bucket>-sessions)
    assert sum(" R2 bucket " in line for line in shared) == 21
    assert any(line.strip().startswith("- platform:kro.backup.bucket: R2 bucket kro-staging-backups-sessions")
               for line in shared), shared
    assert not [line for line in out.splitlines() if "stack prod" in line]


def test_an_unreadable_other_stack_file_is_skipped_with_a_note(tmp_path, capsys):
    (tmp_path / "Pulumi.yaml").write_text("name: platform\nruntime: python\n")
    (tmp_path / "Pulumi.broken.yaml").write_text("config: [unclosed\n")
    (tmp_path / "Pulumi.list.yaml").write_text("- just a list\n")
    (tmp_path / "Pulumi.staging.yaml").write_text((PROJECT_ROOT / "Pulumi.staging.yaml").read_text())
    environment, views, _ = stack_views(_qa_copy(tmp_path), PRODUCTS)
    found = list(shared_with_other_stacks("qa", environment, views, lambda top: lambda loc: key_path(top, loc),
                                          PRODUCTS, project_dir=tmp_path))
    assert len(found) == 43 and all("is also in stack staging" in p for p in found)
    notes = capsys.readouterr().err.splitlines()
    assert [n.split(" is skipped")[0] for n in notes] == ["note: Pulumi.broken.yaml", "note: Pulumi.list.yaml"]


def test_a_directory_without_pulumi_yaml_has_no_other_stacks(tmp_path):
    (tmp_path / "Pulumi.staging.yaml").write_text((PROJECT_ROOT / "Pulumi.staging.yaml").read_text())
    environment, views, _ = stack_views(_qa_copy(tmp_path), PRODUCTS)
    assert list(shared_with_other_stacks("qa", environment, views, lambda top: lambda loc: key_path(top, loc),
                                         PRODUCTS, project_dir=tmp_path)) == []
