"""Idempotent SQL that creates each service's role and database on a self-hosted PostgreSQL,
and confines every role to its own database (CONNECT is revoked from PUBLIC)."""

from __future__ import annotations

import re
from typing import Mapping, Sequence

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def render_init_sql(databases: Mapping[str, str], passwords: Mapping[str, str],
                    extensions: Sequence[str] = ()) -> str:
    """``databases`` maps database -> owning role; ``passwords`` maps role -> password.

    Run with ``psql -v ON_ERROR_STOP=1``; a second run changes nothing but re-sets passwords."""
    for name in [*databases, *databases.values(), *extensions]:
        if not IDENTIFIER.match(name):
            raise ValueError(f"not a plain identifier: {name!r}")
    missing = sorted(set(databases.values()) - set(passwords))
    if missing:
        raise ValueError(f"no password for roles {missing}")
    lines = ["\\set ON_ERROR_STOP on"]
    for role in sorted(set(databases.values())):
        lines += [
            f"SELECT 'CREATE ROLE {role} LOGIN' WHERE NOT EXISTS "
            f"(SELECT FROM pg_roles WHERE rolname = {_literal(role)})\\gexec",
            f"ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
            f"PASSWORD {_literal(passwords[role])};",
        ]
    for database, role in sorted(databases.items()):
        lines += [
            f"SELECT 'CREATE DATABASE {database} OWNER {role}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = {_literal(database)})\\gexec",
            f"REVOKE ALL ON DATABASE {database} FROM PUBLIC;",
            f"GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {database} TO {role};",
        ]
        if extensions:
            lines.append(f"\\connect {database}")
            lines += [f"CREATE EXTENSION IF NOT EXISTS {ext};" for ext in extensions]
            lines.append("\\connect postgres")
    return "\n".join(lines) + "\n"
