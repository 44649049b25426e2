"""Admin-session records archived off the host, to an R2 bucket under a bucket lock.

The host that holds a product's session records (its collector, or its only host) keeps them in
files it could erase once compromised. Here rsyslog also writes them to one spool file per UTC
minute; a timer uploads every minute that has ended with rclone (``--immutable``: an object that
exists is never replaced) and removes the spool file only once the upload is verified. The bucket
lock (``components.session_archive``) refuses deletion and overwrite for the retention period,
and the host's token can write objects of that bucket only: what has been uploaded is out of an
intruder's reach, whatever it does on the host. What it can still lose is the current minute and
the one before, at most about two minutes of records, and a host that cannot reach the bucket
keeps its spool (retried each minute, and alerted on: ``SessionArchivePending``).

rclone rather than restic: restic deletes its lock files and rewrites its index, which a locked
bucket refuses; rclone's S3 backend is one PUT per file. No secret reaches an argument: rclone
reads its remote from ``RCLONE_CONFIG_ARCHIVE_*`` in an EnvironmentFile (mode 0600).
"""

from __future__ import annotations

import textwrap

from components.hostsetup.delivery import deliver_file, directories_section, unit_apply
from components.hostsetup.sessions import SESSION_LOG_FACILITY

ARCHIVE_SPOOL = "/var/spool/platform-sessions"
ARCHIVE_RULESET = "platformSessionArchive"
ARCHIVE_ENV = "/etc/platform/session-archive/rclone.env"
ARCHIVE_SCRIPT = "/usr/local/sbin/platform-session-archive"
ARCHIVE_UNIT = "platform-session-archive"
TEXTFILE = "/var/lib/prometheus/node-exporter/platform_session_archive.prom"
REMOTE = "archive"
"""rclone's name of the bucket's remote (``RCLONE_CONFIG_ARCHIVE_*``)."""


def render_archive_spool(spool: str = ARCHIVE_SPOOL) -> str:
    """An rsyslog drop-in that writes
    the host's own session lines (the audit hand-off on ``local6`` and sshd's: ``sshd-session``
    logs the logins from OpenSSH 9.8 on) to
    ``spool/<YYYYMMDDTHHMM>Z.log``, one file per UTC minute of rsyslog's clock, each line
    ``<time> <sender's IP> <hostname> <tag> <message>``. A collector's ruleset calls
    ``platformSessionArchive`` for what the other hosts send."""
    return textwrap.dedent(f"""\
        # Managed by the platform program: admin sessions spooled for the off-host archive.
        template(name="{ARCHIVE_RULESET}File" type="string"
                 string="{spool}/%$year-utc%%$month-utc%%$day-utc%T%$hour-utc%%$minute-utc%Z.log")
        template(name="{ARCHIVE_RULESET}Line" type="string"
                 string="%timegenerated:::date-rfc3339% %fromhost-ip% %hostname% %syslogtag%%msg:::sp-if-no-1st-sp%%msg:::drop-last-lf%\\n")
        ruleset(name="{ARCHIVE_RULESET}") {{
          action(type="omfile" dynaFile="{ARCHIVE_RULESET}File" template="{ARCHIVE_RULESET}Line"
                 dirCreateMode="0700" fileCreateMode="0600" closeTimeout="2")
        }}
        if $syslogfacility-text == "{SESSION_LOG_FACILITY}" or $programname == "sshd" or $programname == "sshd-session" then {{
          call {ARCHIVE_RULESET}
        }}
        """)


def render_archive_script(spool: str = ARCHIVE_SPOOL, textfile: str = TEXTFILE) -> str:
    """The uploader (bash): moves each spool file of an ended minute to ``spool/ready`` (under a
    unique name when one of that name still waits there: a clock stepped back), then
    ``rclone move --immutable`` uploads them to ``$ARCHIVE_BUCKET/$ARCHIVE_PREFIX/`` and deletes
    each only after its upload is checked. It writes ``platform_session_archive_*`` metrics for
    node-exporter's textfile collector (last run, last success, files waiting) and exits 1 when
    the upload failed (the files stay for the next run)."""
    return textwrap.dedent(f"""\
        #!/usr/bin/env bash
        # Managed by the platform program: uploads ended minutes of admin-session records.
        set -euo pipefail
        spool={spool}
        ready="$spool/ready"
        install -d -m 0700 "$ready"
        current="$(date -u +%Y%m%dT%H%MZ).log"
        shopt -s nullglob
        for file in "$spool"/*.log; do
          name="${{file##*/}}"
          # rsyslog writes only the current minute's file; an ended minute's is complete.
          [[ "$name" < "$current" ]] || continue
          # Never over a file still waiting (the clock stepped back and the minute came again).
          if [ -e "$ready/$name" ]; then name="${{name%Z.log}}Z-$(date +%s%N).log"; fi
          mv -n "$file" "$ready/$name"
        done
        status=0
        rclone --config /dev/null move --immutable --no-traverse --retries 3 --low-level-retries 3 --contimeout 15s \\
          --timeout 60s "$ready" "{REMOTE}:$ARCHIVE_BUCKET/$ARCHIVE_PREFIX" || status=$?
        # What waits: every file in ready/, and ended minutes still in the spool; the current
        # minute's file is not late.
        waiting=("$ready"/*.log)
        for file in "$spool"/*.log; do
          if [[ "${{file##*/}}" < "$current" ]]; then waiting+=("$file"); fi
        done
        now="$(date +%s)"
        last_success=0
        if [ -f "{textfile}" ]; then
          last_success="$(sed -n 's/^platform_session_archive_last_success_timestamp_seconds //p' "{textfile}")"
        fi
        if [ "$status" -eq 0 ]; then last_success="$now"; fi
        tmp="$(mktemp "{textfile}.XXXXXX")"
        printf '%s\\n' \\
          "# HELP platform_session_archive_last_run_timestamp_seconds When the uploader last ran." \\
          "# TYPE platform_session_archive_last_run_timestamp_seconds gauge" \\
          "platform_session_archive_last_run_timestamp_seconds $now" \\
          "# HELP platform_session_archive_last_success_timestamp_seconds When an upload last succeeded." \\
          "# TYPE platform_session_archive_last_success_timestamp_seconds gauge" \\
          "platform_session_archive_last_success_timestamp_seconds ${{last_success:-0}}" \\
          "# HELP platform_session_archive_pending_files Session record files not archived yet." \\
          "# TYPE platform_session_archive_pending_files gauge" \\
          "platform_session_archive_pending_files ${{#waiting[@]}}" >"$tmp"
        chmod 0644 "$tmp"
        mv -f "$tmp" "{textfile}"
        exit "$status"
        """)


def render_archive_units() -> dict[str, str]:
    """The uploader's oneshot service and its timer (30 s into each minute: the spool is per
    minute, so the minute before has ended), file name -> unit text."""
    service = textwrap.dedent(f"""\
        [Unit]
        Description=Upload ended minutes of admin-session records to the locked archive
        After=network-online.target
        Wants=network-online.target

        [Service]
        Type=oneshot
        EnvironmentFile={ARCHIVE_ENV}
        ExecStart={ARCHIVE_SCRIPT}
        TimeoutStartSec=300
        Nice=10
        """)
    timer = textwrap.dedent("""\
        [Unit]
        Description=Upload admin-session records every minute

        [Timer]
        OnCalendar=*-*-* *:*:30
        AccuracySec=1s
        Persistent=true

        [Install]
        WantedBy=timers.target
        """)
    return {f"{ARCHIVE_UNIT}.service": service, f"{ARCHIVE_UNIT}.timer": timer}


def render_archive_environment(endpoint: str, bucket: str, prefix: str, access_key_id: str,
                               secret_access_key: str) -> str:
    """The uploader's EnvironmentFile: rclone's remote ``archive`` (S3, provider Cloudflare,
    ``endpoint`` ``https://<account>.r2.cloudflarestorage.com``; rclone never creates the
    bucket, the program does) and where the objects go. Values in double quotes, as systemd
    reads them (systemd.exec(5), EnvironmentFile=)."""
    values = {
        f"RCLONE_CONFIG_{REMOTE.upper()}_TYPE": "s3",
        f"RCLONE_CONFIG_{REMOTE.upper()}_PROVIDER": "Cloudflare",
        f"RCLONE_CONFIG_{REMOTE.upper()}_ENDPOINT": endpoint,
        f"RCLONE_CONFIG_{REMOTE.upper()}_ACCESS_KEY_ID": access_key_id,
        f"RCLONE_CONFIG_{REMOTE.upper()}_SECRET_ACCESS_KEY": secret_access_key,
        f"RCLONE_CONFIG_{REMOTE.upper()}_NO_CHECK_BUCKET": "true",
        "ARCHIVE_BUCKET": bucket,
        "ARCHIVE_PREFIX": prefix,
    }
    return "".join('{}="{}"\n'.format(k, v.replace("\\", "\\\\").replace('"', '\\"')) for k, v in values.items())


def session_archive_section(environment: str) -> str:
    """rclone, the spool's rsyslog drop-in (checked by ``rsyslogd -N1``), the uploader, its
    units and ``environment`` (``render_archive_environment``, rendered inside an apply: it
    holds the token's secret), and the timer enabled. Run after the baseline installed rsyslog."""
    units = render_archive_units()
    return "\n".join([
        "ensure_packages rclone",
        directories_section([(ARCHIVE_SPOOL, "0700", "root:root"), ("/etc/platform/session-archive", "0700", "root:root"),
                             ("/var/lib/prometheus/node-exporter", "0755", "root:root")]),
        deliver_file(ARCHIVE_ENV, "0600", "root:root", environment),
        deliver_file(ARCHIVE_SCRIPT, "0750", "root:root", render_archive_script()),
        *(deliver_file(f"/etc/systemd/system/{unit}", "0644", "root:root", text,
                       on_change="systemctl daemon-reload") for unit, text in sorted(units.items())),
        deliver_file("/etc/rsyslog.d/55-platform-session-archive.conf", "0644", "root:root",
                     render_archive_spool(), validate="rsyslogd -N1 >/dev/null",
                     on_change=unit_apply("restart", "rsyslog")),
        f"ensure_service_enabled {ARCHIVE_UNIT}.timer",
    ])
