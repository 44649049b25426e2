"""Idempotent mongosh script that creates (or re-keys) one user per service database."""

from __future__ import annotations

import json
import re
from typing import Mapping

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def check_mongo_names(users: Mapping[str, str]) -> None:
    """``users`` maps database -> user name. The check of ``render_mongo_init_js`` on plain
    names, so a program runs it before the passwords (outputs) are known.

    Raises ValueError for a name that is not lower-case letters, digits and ``_`` (at most 63,
    starting with a letter)."""
    for database, user in users.items():
        for name in (database, user):
            if not _NAME.match(name):
                raise ValueError(f"not a plain MongoDB name: {name!r}")


def render_mongo_init_js(users: Mapping[str, tuple[str, str]]) -> str:
    """``users`` maps database -> (user, password). Each user gets ``readWrite`` on its own
    database only and authenticates against it. A second run changes nothing but the passwords.
    Raises what ``check_mongo_names`` raises."""
    check_mongo_names({database: user for database, (user, _) in users.items()})
    wanted = [{"db": d, "user": u, "pwd": p} for d, (u, p) in sorted(users.items())]
    return (
        "// Rendered by components/mongo_init.py; run with mongosh as the root user.\n"
        f"const wanted = {json.dumps(wanted)};\n"
        "for (const want of wanted) {\n"
        "  const target = db.getSiblingDB(want.db);\n"
        "  const roles = [{ role: 'readWrite', db: want.db }];\n"
        "  if (target.getUser(want.user)) {\n"
        "    target.updateUser(want.user, { pwd: want.pwd, roles: roles });\n"
        "  } else {\n"
        "    target.createUser({ user: want.user, pwd: want.pwd, roles: roles });\n"
        "    print('created ' + want.user + '@' + want.db);\n"
        "  }\n"
        "}\n"
    )
