"""The provider's published lists (regions, sizes, engine versions), from one dated data file.

``validation/data/digitalocean.json`` holds each list with its source and the date it was taken;
``retrieved`` is that date. A slug not in the list is an error naming the closest ones, so a
typo fails here instead of at ``pulumi up``. Update the file (with its sources) when the
provider adds a size or version the stacks need.
"""

from __future__ import annotations

import difflib
import json
from functools import lru_cache
from pathlib import Path

DATA_FILE = Path(__file__).with_name("data") / "digitalocean.json"


@lru_cache(maxsize=1)
def digitalocean() -> dict:
    return json.loads(DATA_FILE.read_text())


def check_slug(value: str, list_name: str, what: str) -> str:
    """``value`` when it is in the provider list ``list_name``; ValueError otherwise."""
    known = digitalocean()[list_name]
    if value not in known:
        close = difflib.get_close_matches(value, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"not a DigitalOcean {what} (validation/data/digitalocean.json, retrieved "
                         f"{digitalocean()['retrieved']}){hint}")
    return value


def check_version(engine: str, version: str) -> str:
    known = digitalocean()["database_versions"][engine]
    if version not in known:
        raise ValueError(f"{engine} {version} is not a version this project knows DigitalOcean offers "
                         f"({', '.join(known)}; validation/data/digitalocean.json)")
    return version


def validator(list_name: str, what: str):
    """An AfterValidator function checking a slug against ``list_name``."""
    return lambda value: check_slug(value, list_name, what) if value is not None else value


def droplet_capacity(slug: str) -> tuple[float, int] | None:
    """(vCPUs, memory in MiB) of a droplet size, read from its slug: ``<family>-<N>vcpu-<M>gb``
    (s-1vcpu-2gb: 1 vCPU, 2048 MiB; ``mb`` for the 512 MB sizes) and the CPU-optimized ``c-<N>``
    (N vCPUs with 2 GiB each, https://www.digitalocean.com/pricing/droplets). None for the legacy
    (``2gb``) and GPU slugs, which do not name both: no bound is drawn from them."""
    import re

    match = re.match(r"^[a-z0-9_]+-(\d+)vcpu-(\d+)(gb|mb)\b", slug)
    if match:
        return float(match[1]), int(match[2]) * (1024 if match[3] == "gb" else 1)
    match = re.match(r"^c-(\d+)(-intel)?$", slug)
    if match:
        return float(match[1]), int(match[1]) * 2048
    return None
