"""The boundary's systemd calendar parser agrees with the real ``systemd-analyze calendar`` on
every example: each accepted spec is accepted by systemd, each rejected one is rejected."""

from __future__ import annotations

import subprocess

import pytest

from validation.formats import calendar_in_utc, check_calendar
from tests.conftest import require_tool

pytestmark = pytest.mark.realtool

EXAMPLES = [
    "*-*-* 03:00:00 UTC", "Sun *-*-* 05:00:00 UTC", "daily", "weekly", "hourly", "monthly",
    "Mon..Fri 09:00", "Mon,Wed,Fri *-*-* 02:30", "*-*-1 00:00", "2026-12-24 18:00:00",
    "*:0/15", "*-02~03 04:00", "Sat *-*-* 23:59:59", "*-*-* 00/6:00", "12-31 12:00",
    "Tue 04:00 Europe/Berlin", "1970-01-01 00:00:00",
    # rejected
    "2026-13-01 00:00", "Sun *-*-* 25:00", "Funday 10:00", "*-*-* 03:60", "*-*-32 00:00",
    "every day", "*-*-* 3:00:00 Mars/Olympus", "Mon..Fri..Sun 09:00", "*-*-* 10:00 extra",
    "*-*-* 03:00:00:00",
]


def _systemd_accepts(tool: str, spec: str) -> bool:
    result = subprocess.run([tool, "calendar", spec], capture_output=True, text=True, timeout=30)
    return result.returncode == 0


def _ours_accepts(spec: str) -> bool:
    try:
        check_calendar(spec)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("spec", EXAMPLES)
def test_calendar_parser_agrees_with_systemd_analyze(spec):
    tool = require_tool("systemd-analyze", "the reference parser of OnCalendar specs")
    assert _ours_accepts(spec) == _systemd_accepts(tool, spec), spec


@pytest.mark.parametrize("spec", [s for s in EXAMPLES if _ours_accepts(s)])
def test_a_schedule_without_a_zone_runs_in_utc_on_every_host(spec):
    """systemd reads a zoneless calendar in the host's local zone; the boundary pins it to UTC,
    and systemd itself must agree that the result is a UTC (or the named zone's) event."""
    tool = require_tool("systemd-analyze", "the reference parser of OnCalendar specs")
    pinned = calendar_in_utc(spec)
    result = subprocess.run([tool, "calendar", pinned], capture_output=True, text=True, timeout=30,
                            env={"TZ": "Africa/Lagos", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    normalized = next(line.split(":", 1)[1].strip() for line in result.stdout.splitlines()
                      if line.strip().startswith("Normalized form:"))
    zone = spec.split()[-1] if spec.split()[-1] in ("UTC", "Europe/Berlin") else "UTC"
    assert normalized.endswith(zone), (spec, normalized)


def test_the_backup_config_pins_a_zoneless_schedule_to_utc():
    from stacks.shared_config import BackupConfig

    backup = BackupConfig(cloudflare_account_id="0" * 32, bucket="kro-backups", retention_days=30,
                          schedule="Mon..Fri 09:00", restore_test_schedule="Sun 05:00 Europe/Berlin")
    assert backup.schedule == "Mon..Fri 09:00 UTC"
    assert backup.restore_test_schedule == "Sun 05:00 Europe/Berlin"
