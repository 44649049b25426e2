"""How much a waiver's ``resources`` glob may cover: the bounds the config loader
(``policy.offline``) refuses at load and the run-time waiver lookup (``policy.rules.base``)
ignores, so an over-broad glob never excuses anything under ``pulumi preview`` either."""

from __future__ import annotations

import re


def matches_everything(glob: str) -> bool:
    """A waiver glob with fewer than three literal letters or digits (``*``, ``*-*``, ``?*``,
    ``[a-z]*``): it names no resource, it excuses whatever the policy finds."""
    literal = re.sub(r"\[[^\]]*\]|[*?]", "", str(glob))
    return sum(ch.isalnum() for ch in literal) < 3


_WILDCARD = re.compile(r"\[[^\]]*\]|[*?]")
_SEPARATORS = "-.:_>/"


def too_broad(glob: str) -> bool:
    """A waiver glob that does not name a kind of resource, so it excuses a whole product or
    stack (``kro*``, ``kro-*``, ``kro-staging-*``) or everything (``matches_everything``). A
    glob names a kind when it has no wildcard (one resource), or a word of three letters or
    digits after its first wildcard (``*-postgres``, ``kro-*-firewall``, ``*->pencom-*-edge:6514``),
    or three complete words before it (product, stack and resource: ``kro-staging-db-*``).
    Names are ``<product>-<stack>-<resource>``, so the first two words never bound a glob."""
    glob = str(glob)
    if matches_everything(glob):
        return True
    first = _WILDCARD.search(glob)
    if first is None:
        return False
    head, tail = glob[:first.start()], _WILDCARD.sub(" ", glob[first.end():])
    if any(len(word) >= 3 for word in re.findall(r"[A-Za-z0-9]+", tail)):
        return False
    complete = [w for w in re.split(f"[{re.escape(_SEPARATORS)}]", head)[:-1] if w]
    return len(complete) < 3
