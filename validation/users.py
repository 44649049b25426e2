"""Docker's ``user[:group]`` as the daemon reads it, shared by the config boundary
(``components.containers``) and the policy pack (``policy.rules.container_isolation``).

Docker resolves a numeric user or group with Go's ``strconv.Atoi``
(``moby/sys/user`` ``GetExecUser``), which takes an optional ``+`` or ``-`` sign and leading
zeros: ``0``, ``00``, ``-0`` and ``+0`` are all uid 0.
"""

from __future__ import annotations

import re
from typing import Optional

_GO_ATOI = re.compile(r"[+-]?[0-9]+")


def signed_id(user: str) -> Optional[str]:
    """The part (user or group) of ``user[:group]`` that is a number written with a ``+`` or
    ``-`` sign, or None. Docker reads ``-0`` as uid 0 and ``-5`` as uid -5: a signed id is
    never what an operator means, so both the boundary and the policy refuse it."""
    for part in user.strip().split(":", 1):
        if part[:1] in "+-" and part and _GO_ATOI.fullmatch(part):
            return part
    return None


def runs_as_root(user: str) -> bool:
    """Whether Docker's ``user[:group]`` runs the process as root: the name ``root`` or a
    user part that Go's ``strconv.Atoi`` reads as 0 (``0``, ``00``, ``0000:0``, ``-0``, ``+0``).
    The group is not read: ``1000:0`` runs as uid 1000."""
    name = user.strip().split(":", 1)[0]
    return name == "root" or (_GO_ATOI.fullmatch(name) is not None and int(name) == 0)
