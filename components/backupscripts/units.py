"""The systemd units of a backup job: services and timers, with calendars spread by job name."""

from __future__ import annotations

import textwrap
import zlib

from components.backupscripts.jobs import BackupJob, ENV_DIR, ship_interval_seconds


def spread_calendar(job: str, hour: int, weekday: str = "") -> str:
    """A daily (or weekly, with ``weekday`` such as ``Sun``) OnCalendar at ``hour`` UTC whose
    minute is derived from the job name (CRC-32), so a host's jobs do not all start at once."""
    minute = zlib.crc32(job.encode()) % 60
    return f"{weekday + ' ' if weekday else ''}*-*-* {hour:02d}:{minute:02d}:00 UTC"


def _service(job: BackupJob, unit: str, description: str, *, long_running: bool = False) -> str:
    kind = ("Type=simple\nRestart=always\nRestartSec=10" if long_running
            else "Type=oneshot\nNice=10\nIOSchedulingClass=idle")
    return textwrap.dedent(f"""\
        [Unit]
        Description={description}
        Wants=network-online.target
        After=network-online.target

        [Service]
        @@KIND@@
        EnvironmentFile={ENV_DIR}/{job.job}.env
        ExecStart=/usr/local/sbin/{unit}
        # The job's own directory under /var/lib (not /tmp): paths in it mean the same to the
        # Docker daemon, and they survive only as long as the script keeps them.
        StateDirectory=platform-backup/{job.job}
        StateDirectoryMode=0700
        ProtectHome=true
        NoNewPrivileges=true
        """).replace("@@KIND@@", kind)


def _timer(description: str, calendar: str, *, persistent: bool = True, delay: str = "10m",
           accuracy: str = "1m") -> str:
    return textwrap.dedent(f"""\
        [Unit]
        Description=Schedule: {description}

        [Timer]
        OnCalendar={calendar}
        Persistent={"true" if persistent else "false"}
        RandomizedDelaySec={delay}
        AccuracySec={accuracy}

        [Install]
        WantedBy=timers.target
        """)


def render_units(job: BackupJob, *, backup_calendar: str, restore_calendar: str) -> dict[str, str]:
    """systemd units. Every job: the backup and the restore test, each a oneshot service and a
    timer. ``pitr`` jobs: the base backup (``backup_calendar``) and the PITR test
    (``restore_calendar``) instead, plus ``platform-wal-receive-JOB.service`` (long-running) and
    ``platform-wal-ship-JOB`` every ``ship_interval_seconds``."""
    roles = [("backup", backup_calendar, f"Off-site backup of {job.job}"),
             ("restore-test", restore_calendar, f"Restore test of the newest {job.job} backup")]
    if job.kind == "pitr":
        roles = [("base-backup", backup_calendar, f"Base backup of {job.job}"),
                 ("pitr-test", restore_calendar, f"Point-in-time restore test of {job.job}")]
    units: dict[str, str] = {}
    for role, calendar, description in roles:
        unit = f"platform-{role}-{job.job}"
        units[f"{unit}.service"] = _service(job, unit, description)
        units[f"{unit}.timer"] = _timer(description, calendar)
    if job.kind == "pitr":
        receive = f"platform-wal-receive-{job.job}"
        units[f"{receive}.service"] = _service(job, receive, f"Continuous WAL receiver of {job.job}",
                                               long_running=True).replace(
            "[Install]", "") + "\n[Install]\nWantedBy=multi-user.target\n"
        ship = f"platform-wal-ship-{job.job}"
        interval = ship_interval_seconds(job.rpo_minutes)
        units[f"{ship}.service"] = _service(job, ship, f"WAL shipping of {job.job}").replace(
            "Nice=10\nIOSchedulingClass=idle\n", "")
        # A monotonic timer, no random delay, one-second accuracy: the interval is half the RPO.
        units[f"{ship}.timer"] = textwrap.dedent(f"""\
            [Unit]
            Description=Schedule: WAL shipping of {job.job} (RPO {job.rpo_minutes} min)

            [Timer]
            OnActiveSec=30s
            OnUnitActiveSec={interval}s
            AccuracySec=1s

            [Install]
            WantedBy=timers.target
            """)
    return units
