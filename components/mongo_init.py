"""Idempotent mongosh script that creates (or re-keys) one user per service database."""

from __future__ import annotations

import json
import re
from typing import Mapping

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def render_mongo_init_js(users: Mapping[str, tuple[str, str]]) -> str:
    """``users`` maps database -> (user, password). Each user gets ``readWrite`` on its own
    database only and authenticates against it. A second run changes nothing but the passwords."""
    for database, (user, _) in users.items():
        for name in (database, user):
            if not _NAME.match(name):
                raise ValueError(f"not a plain MongoDB name: {name!r}")
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
