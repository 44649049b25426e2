"""Which environment names are production: one rule, read by the environment section and by
the rules of the sections inside it (``stacks.management``)."""

from __future__ import annotations

PRODUCTION_NAMES = ("prod", "production")
"""Environment names that are production; ``environment.production`` must agree."""


def is_production_name(name: str) -> bool:
    """``prod``, ``production`` and ``prod-*`` are production."""
    return name in PRODUCTION_NAMES or name.startswith("prod-")
