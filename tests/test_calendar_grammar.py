"""The boundary's systemd calendar parser agrees with the real ``systemd-analyze calendar`` on
every example: each accepted spec is accepted by systemd, each rejected one is rejected."""

from __future__ import annotations

import subprocess

import pytest

from validation.formats import check_calendar
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
