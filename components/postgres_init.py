"""Idempotent SQL that creates each service's role and database on a self-hosted PostgreSQL,
and confines every role to its own database (CONNECT is revoked from PUBLIC)."""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def check_init_plan(databases: Mapping[str, str], roles_with_passwords: Iterable[str],
                    extensions: Sequence[str] = (),
                    readers: Mapping[str, Sequence[str]] | None = None) -> None:
    """The checks of ``render_init_sql`` on plain names alone, so a program runs them before
    the passwords (outputs, unknown under ``pulumi preview``) are known.

    Raises ValueError for readers of a database that is not created, a name that is not a
    plain lower-case identifier (``IDENTIFIER``), or a role without a password."""
    readers = readers or {}
    unknown = sorted(set(readers) - set(databases))
    if unknown:
        raise ValueError(f"readers for databases that are not created: {unknown}")
    reader_roles = sorted({r for roles in readers.values() for r in roles})
    for name in [*databases, *databases.values(), *extensions, *reader_roles]:
        if not IDENTIFIER.match(name):
            raise ValueError(f"not a plain identifier: {name!r}")
    missing = sorted((set(databases.values()) | set(reader_roles)) - set(roles_with_passwords))
    if missing:
        raise ValueError(f"no password for roles {missing}")


def render_init_sql(databases: Mapping[str, str], passwords: Mapping[str, str],
                    extensions: Sequence[str] = (),
                    readers: Mapping[str, Sequence[str]] | None = None) -> str:
    """``databases`` maps database -> owning role; ``passwords`` maps role -> password;
    ``readers`` maps database -> roles that may only read it (tables made later included).

    Run with ``psql -v ON_ERROR_STOP=1``; a second run changes nothing but re-sets passwords.
    Raises what ``check_init_plan`` raises."""
    check_init_plan(databases, passwords, extensions, readers)
    readers = readers or {}
    reader_roles = sorted({r for roles in readers.values() for r in roles})
    lines = ["\\set ON_ERROR_STOP on"]
    for role in sorted(set(databases.values()) | set(reader_roles)):
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
        database_readers = sorted(readers.get(database, ()))
        lines += [f"GRANT CONNECT ON DATABASE {database} TO {reader};" for reader in database_readers]
        if extensions or database_readers:
            lines.append(f"\\connect {database}")
            lines += [f"CREATE EXTENSION IF NOT EXISTS {ext};" for ext in extensions]
            for reader in database_readers:
                lines += [
                    f"GRANT USAGE ON SCHEMA public TO {reader};",
                    f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader};",
                    f"ALTER DEFAULT PRIVILEGES FOR ROLE {role} IN SCHEMA public GRANT SELECT ON TABLES TO {reader};",
                ]
            lines.append("\\connect postgres")
    return "\n".join(lines) + "\n"


HBA_PATH = "/run/platform/hba/pg_hba.conf"
"""Where the program's ``pg_hba.conf`` is mounted in a self-hosted Postgres container; the
server reads it through ``-c hba_file=`` (``hba_file_args``)."""


def render_pg_hba() -> str:
    """A ``pg_hba.conf`` that admits network connections over TLS only, with SCRAM passwords.

    The image's own file trusts loopback and admits ``host all all all`` (plaintext as well as
    TLS), so a client with ``sslmode=disable`` got in (found by the staging rehearsal). Here every
    TCP connection, ordinary and replication (``pg_receivewal``), must be ``hostssl``, and a
    ``hostnossl`` line rejects the rest explicitly (PostgreSQL docs, 21.1 "The pg_hba.conf
    File"). The Unix socket inside the container stays ``trust``, as in the image: only a
    process in the container (the init script run by ``docker exec``) reaches it."""
    return "\n".join([
        "# Managed by the platform program (components/postgres_init.py): TLS only over TCP.",
        "# TYPE    DATABASE     USER  ADDRESS  METHOD",
        "local     all          all            trust",
        "hostnossl all          all   all      reject",
        "hostnossl replication  all   all      reject",
        "hostssl   all          all   all      scram-sha-256",
        "hostssl   replication  all   all      scram-sha-256",
    ]) + "\n"


def hba_file_args() -> list[str]:
    """The ``postgres`` arguments that make the server read ``HBA_PATH``."""
    return ["-c", f"hba_file={HBA_PATH}"]
