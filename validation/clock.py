"""The config boundary's clock: what "today" is for the checks that compare a date of the
stack file with it (maintenance windows). Tests fix it with ``monkeypatch.setattr(clock,
"today", ...)``, so callers read it as ``clock.today()``, never ``from ... import today``."""

from __future__ import annotations

import datetime


def today() -> datetime.date:
    """Today's date in UTC (the stack file's dates are UTC days)."""
    return datetime.datetime.now(datetime.timezone.utc).date()
