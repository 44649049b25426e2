"""Which environment names are production: one rule, read by the environment section and by
the rules of the sections inside it (``stacks.management``)."""

from __future__ import annotations

PRODUCTION_NAMES = ("prod", "production")
"""Environment names that are production; ``environment.production`` must agree."""


def is_production_name(name: str) -> bool:
    """True for ``prod``/``production`` and for names that start with ``prod-`` or end with
    ``-prod``/``-production`` (``pencom-prod``): a product's own production stack is protected
    even when its file leaves ``production`` unset."""
    return (name in PRODUCTION_NAMES or name.startswith("prod-")
            or name.endswith(tuple(f"-{p}" for p in PRODUCTION_NAMES)))
