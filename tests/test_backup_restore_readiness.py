"""The restore test's readiness probe of a scratch PostgreSQL (components/backupscripts/restore.py
``wait_ready``). In docker mode the postgres image's entrypoint runs initdb's temporary server
on the Unix socket only, then stops it and starts the real one: a socket probe can pass in
between, and the restore then meets no server. Seen on the rehearsal with six restore tests
started at once on Pencom's data node ("psql: error: connection to server on socket")."""

from __future__ import annotations

import re

import pytest

from components.backupscripts import BackupJob
from components.backupscripts.dumps import render_restore_test_script

pytestmark = pytest.mark.fast


def _probe(script: str) -> str:
    """The readiness loop's probe: the first command run after ``scratch_start``."""
    after = script.split("scratch_start\n", 2)[-1]
    loop = re.search(r"for _ in \$\(seq 1 120\); do\n\s*(.+?) >/dev/null 2>&1 && break", after)
    assert loop, "no readiness loop after scratch_start"
    return loop.group(1)


def test_a_docker_scratch_postgres_is_ready_only_when_it_answers_over_tcp():
    job = BackupJob(job="pencom-staging-pencom-payments", kind="postgres", retention_days=7, mode="docker",
                    tool_image="postgres:17-alpine")
    probe = _probe(render_restore_test_script(job))
    # Only the real server listens on TCP (the temporary one has listen_addresses='').
    assert probe.startswith("scratch_psql -h 127.0.0.1 "), probe


def test_a_host_scratch_postgres_keeps_its_socket_probe():
    # pg_ctl -w starts it (no entrypoint), with no TCP listener at all: TCP would never answer.
    job = BackupJob(job="vedfinance-staging-app", kind="postgres", retention_days=7, mode="host")
    probe = _probe(render_restore_test_script(job))
    assert probe.startswith("scratch_psql --no-psqlrc"), probe
