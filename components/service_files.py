"""A service's files on a Docker host: what a service declares (``HostFile``), where each file
lands (the service's directory under the host's data directory), the mounts that show them
to its container, the reload that applies a change (done once the container is back and
healthy: ``WAIT_RESTARTED``), and the host script that delivers the directory
(``hostsetup.staged_file`` per file, one ``hostsetup.commit_staged`` for the directory)."""

from __future__ import annotations

import dataclasses
import posixpath
import shlex
from dataclasses import dataclass
from typing import Sequence

import pulumi

from components import hostsetup
from components.containers import WAIT_TIMEOUT_MAX_S, Mount
from components.backupscripts import TEXTFILE_DIR
from components.mtls import CONF_PATH as MTLS_CONF_PATH


@dataclass(frozen=True)
class HostFile:
    """A file a container reads, written to the host and seen by the container through a
    read-only directory mount (``service_directories``). A file only its owner may read (no
    read bit for others: a key, a password) is a secret and travels in its own resource."""

    container_path: str
    content: pulumi.Input[str]
    mode: str = "0444"
    owner: str = "root:root"

    @property
    def secret(self) -> bool:
        return not int(self.mode, 8) & 0o004


@dataclass(frozen=True)
class Reload:
    """How a running service takes new files: ``validate`` (a command run in its container,
    on the new files, before it is told), then ``command`` (run in its container: for a server
    that is not the container's PID 1, which alone gets ``docker kill``'s signal) or ``signal``
    (sent to the container's PID 1), or a restart when there is neither. The default restarts:
    every file a service reads changes what it runs."""

    validate: Sequence[str] = ()
    signal: str | None = None
    command: Sequence[str] = ()
    image: str | None = None
    """The service's image: with no container running, ``validate`` runs in a throwaway one of it."""

    def commands(self) -> tuple[str, str]:
        """(validate, apply) as bash command lines using ``$cid``, one container's id."""
        validate = (f'docker exec "$cid" {" ".join(shlex.quote(a) for a in self.validate)} >/dev/null'
                    if self.validate else ":")
        if self.command:
            apply = f'docker exec "$cid" {" ".join(shlex.quote(a) for a in self.command)} >/dev/null'
        elif self.signal:
            apply = f'docker kill -s {self.signal} "$cid" >/dev/null'
        else:
            apply = 'docker restart "$cid" >/dev/null'
        return validate, apply


# How each server reloads its files, by image repository: the documented reload of each
# (Prometheus, Alertmanager and the blackbox exporter are their image's PID 1 and reload on
# SIGHUP). Ubuntu's squid image runs squid as a child of its entrypoint script, which ignores a
# SIGHUP sent to PID 1: squid is told with `squid -k reconfigure` in the container (found on the
# rehearsal: after an egress provider was removed, squid kept allowing it). Anything else, a
# datastore taking a new certificate included, is restarted.
# nginxinc/nginx-unprivileged runs nginx as PID 1; the only nginx delivered this way is a
# mutual-TLS terminator or sidecar (components.mtls), whose config lives at one path.
RELOADS: dict[str, Reload] = {
    "nginxinc/nginx-unprivileged": Reload(validate=("nginx", "-t", "-q", "-c", MTLS_CONF_PATH), signal="HUP"),
    "prom/prometheus": Reload(validate=("promtool", "check", "config", "/etc/prometheus/prometheus.yml"),
                              signal="HUP"),
    "prom/alertmanager": Reload(validate=("amtool", "check-config", "/etc/alertmanager/alertmanager.yml"),
                                signal="HUP"),
    "prom/blackbox-exporter": Reload(signal="HUP"),
    "ubuntu/squid": Reload(validate=("squid", "-k", "parse", "-f", "/etc/squid/squid.conf"),
                           command=("squid", "-k", "reconfigure", "-f", "/etc/squid/squid.conf")),
}


def reload_for(image: str | None) -> Reload:
    """The ``Reload`` of a service running ``image`` (a restart when the image is unknown or
    there is no container, as for files only host jobs read)."""
    if image is None:
        return Reload()
    repository = image.split("@", 1)[0].rsplit(":", 1)[0] if "/" in image else image.split(":", 1)[0]
    return dataclasses.replace(RELOADS.get(repository.removeprefix("docker.io/"), Reload()), image=image)


def validate_offline(reload: Reload, mounts: Sequence[Mount]) -> str:
    """The bash command line that runs ``reload.validate`` when no container of the service runs:
    in a throwaway container of ``reload.image`` (its own user, no network, removed after) that
    sees the new files through the service's own read-only ``mounts``. ``:`` when there is no
    validator; a failing command naming the gap when there is one but no image."""
    if not reload.validate:
        return ":"
    if reload.image is None:
        return "echo 'no container runs and no image is known to validate the files in' >&2; false"
    volumes = " ".join(f"-v {shlex.quote(f'{m.host_path}:{m.container_path}:ro')}" for m in mounts)
    command = " ".join(shlex.quote(a) for a in reload.validate[1:])
    return (f"docker run --rm --network none --entrypoint {shlex.quote(reload.validate[0])} {volumes} "
            f"{shlex.quote(reload.image)} {command} >/dev/null")


def _mount_roots(paths: Sequence[str]) -> list[str]:
    """The container directories to mount: each file's directory, unless it lies below another."""
    directories = sorted({posixpath.dirname(p) for p in paths})
    return [d for d in directories
            if not any(d != other and d.startswith(other.rstrip("/") + "/") for other in directories)]


def host_path_for(data_dir: str, service: str, file: HostFile) -> str:
    """Where ``file`` of ``service`` lives on the host: below the service's own directory, at
    its container path (so a mounted directory holds exactly its files)."""
    return posixpath.join(data_dir, "files", service, file.container_path.lstrip("/"))


def service_mounts(data_dir: str, service: str, files: Sequence[HostFile]) -> list[Mount]:
    """The read-only directory mounts that show ``files`` to the service's container: each
    file's container directory, unless it lies below another one (its host directory then holds
    the subdirectory). Raises ValueError when two files share a container path."""
    paths = [f.container_path for f in files]
    duplicated = sorted({p for p in paths if paths.count(p) > 1})
    if duplicated:
        raise ValueError(f"{service}: files {duplicated} are given twice")
    return [Mount(host_path=posixpath.join(data_dir, "files", service, root.lstrip("/")),
                  container_path=root, read_only=True) for root in _mount_roots(paths)]


@dataclass(frozen=True)
class ServiceFiles:
    """The rendered delivery of one service's files: ``scripts`` maps a resource suffix
    (``secrets-<service>`` for its secret files, then ``files-<service>``) to its script, in the
    order they run."""

    scripts: dict[str, pulumi.Output[str]]
    mounts: list[Mount]


def service_directories(stack: str, data_dir: str, service: str, files: Sequence[HostFile],
                        reload: Reload) -> ServiceFiles:
    """The host-delivery of one service: its files in their own directory, mounted read-only
    as directories (a single-file bind mount keeps the old inode after the file is replaced, so
    the container would never see a change); a script for its plain files and one for its
    secret files (``delivery_groups``), each re-run when its text (the content hash is its
    trigger) changes. Each writes what differs, then, when the service's container runs,
    validates the new files in it, applies them (``reload``) and commits, or puts the previous
    files back, re-applies them and fails (so the next run retries).

    ``scripts`` is in delivery order, secrets first: each runs after the one before it, so that
    the plain files (a config naming a new certificate) are judged with the secrets they name
    already on the host.

    Raises ValueError when two files of the service share a container path."""
    mounts = service_mounts(data_dir, service, files)
    scripts: dict[str, pulumi.Output[str]] = {}
    for kind, group in delivery_order(files):
        scripts[f"{kind}-{service}"] = pulumi.Output.all(*[f.content for f in group]).apply(
            lambda contents, group=group: render_service_script(stack, data_dir, service, group, contents,
                                                                reload, service_files=files))
    return ServiceFiles(scripts=scripts, mounts=mounts)


def delivery_groups(files: Sequence[HostFile]) -> dict[str, list[HostFile]]:
    """``files`` split into ``files`` (plain: a diff of them stays readable) and ``secrets``;
    a group is left out when empty. A plain file in the container directory of a secret one
    travels with the secrets: a certificate and its key change in one commit, so the server is
    restarted once, on a matching pair (delivered apart, the first restart would start it on the
    new certificate and the old key, which it refuses, and the step would roll back forever)."""
    secret_dirs = {posixpath.dirname(f.container_path) for f in files if f.secret}
    groups = {"files": [f for f in files if not f.secret and posixpath.dirname(f.container_path) not in secret_dirs],
              "secrets": [f for f in files if f.secret or posixpath.dirname(f.container_path) in secret_dirs]}
    return {kind: group for kind, group in groups.items() if group}


def delivery_order(files: Sequence[HostFile]) -> list[tuple[str, list[HostFile]]]:
    """``delivery_groups`` in the order their scripts run: secrets first, so that a plain file
    naming a secret one (a config naming its certificate) is judged with it on the host."""
    return sorted(delivery_groups(files).items(), key=lambda item: item[0] != "secrets")


def render_service_script(stack: str, data_dir: str, service: str, files: Sequence[HostFile],
                          contents: Sequence[str], reload: Reload, textfile_dir: str = TEXTFILE_DIR,
                          service_files: Sequence[HostFile] | None = None) -> str:
    """The script that delivers ``files`` (with their resolved ``contents``) of ``service``:
    writes what differs, then validates, applies and commits them together (``commit_files``):
    validated in every running container of the service, or, with none running, in a throwaway
    one of its image that sees the new files (``validate_offline``, through the mounts of
    ``service_files``: every file of the service, both delivery groups; by default ``files``); applied to every running container (two
    run after a create-first replacement that failed half-way), each counting only once back
    and healthy (``wait_restarted``), else the previous files are put back, the containers are
    restarted or reloaded onto them, and the script fails with the container's own output. With
    no container running the files are committed once valid (the container starts on them),
    and judged only once every file of ``service_files`` is on the host: on a first delivery the
    group delivered first is committed unjudged, and the second judges the whole
    (``delivery_order``). The expiry of each certificate among them goes to node-exporter's
    ``textfile_dir``."""
    whole = files if service_files is None else service_files
    one_validate, one_apply = reload.commands()
    offline = validate_offline(reload, service_mounts(data_dir, service, whole))
    paths = [host_path_for(data_dir, service, f) for f in whole]
    # A validator reads the service's files together (nginx -t opens the certificates its config
    # names): with some still to come it would judge a half, and refuse a sound delivery.
    complete = " && ".join(f"[ -e {shlex.quote(p)} ]" for p in paths)
    offline = (f"if {complete}; then {offline}; else echo '{service}: its other files are not on the host yet: "
               f"they are judged with these when they arrive' >&2; fi") if offline != ":" else offline
    validate = (f'if [ "${{#cids[@]}}" -eq 0 ]; then {offline}; else for cid in "${{cids[@]}}"; do '
                f"{one_validate} || exit 1; done; fi")
    apply = (f'for cid in ${{cids[@]+"${{cids[@]}}"}}; do {one_apply} '
             f'&& wait_restarted "$cid" {WAIT_TIMEOUT_MAX_S} || exit 1; done')
    sections = [
        WAIT_RESTARTED,
        # The service's files and secrets are delivered by two scripts, which one run orders but
        # two overlapping runs (or a script re-run by hand) would not: one at a time, so that a
        # restart by one is not taken by the other's wait for a container its policy restarted.
        f"exec 8>/run/platform-files-{stack}-{service}.lock",
        f'flock -w {WAIT_TIMEOUT_MAX_S * 2} 8 || {{ echo "{service}: another delivery holds its lock" >&2; exit 1; }}',
        # Every container of the service (a create-first replacement that failed half-way leaves two).
        f'running="$(docker ps -q --filter label=platform.stack={stack} --filter label=platform.service={service})"',
        'cids=()',
        "# cids is read by the validate and apply steps the commit evaluates.",
        "# shellcheck disable=SC2034",
        '[ -z "$running" ] || mapfile -t cids <<<"$running"',
        "changed=()",
    ]
    sections += [_staged(host_path_for(data_dir, service, f), f, text) for f, text in zip(files, contents)]
    kind = "secrets" if any(f.secret for f in files) else "files"
    manifest = posixpath.join(data_dir, "files", ".delivered", f"{kind}-{service}.list")
    delivered = [host_path_for(data_dir, service, f) for f in files]
    sections.append(f"delivered=({' '.join(shlex.quote(p) for p in delivered)})\n" + STALE_FILES
                    + f"remove_stale {shlex.quote(manifest)} {shlex.quote(posixpath.join(data_dir, 'files', service))}")
    certificates = [host_path_for(data_dir, service, f) for f, text in zip(files, contents)
                    if "-----BEGIN CERTIFICATE-----" in text]
    if certificates:
        sections.append(CERTIFICATE_METRICS + f"certificate_metrics {textfile_dir}/certificates-{stack}-{kind}-{service}.prom "
                        + " ".join(certificates))
    sections.append(hostsetup.commit_staged(validate, apply, record="changed", when="true"))
    sections.append(f"record_delivered {shlex.quote(manifest)}")
    return hostsetup.script(*sections)


# A file the service no longer declares (a path that changed: platform:kro.database_ca_path)
# leaves the host with the same commit that writes the others: each script lists what it
# delivered (a manifest beside the services' directories, not inside a mounted one) and removes
# what it delivered before and no longer does. Only its own earlier files, and only under the
# service's directory: a file some other step wrote there is never touched. A removal is staged
# as put_file stages a write, so a failed validate or apply puts the file back.
STALE_FILES = r"""# remove_stale MANIFEST DIR -- stages the removal of every file MANIFEST lists, under DIR,
# that is not in `delivered`, and records it in `changed`.
remove_stale() {
  local old path keep saved
  [ -f "$1" ] || return 0
  while IFS= read -r old; do
    case "$old" in "$2"/*) ;; *) continue ;; esac
    keep=no
    for path in "${delivered[@]}"; do [ "$path" != "$old" ] || keep=yes; done
    if [ "$keep" = yes ] || [ ! -f "$old" ]; then continue; fi
    saved="$(pending_path "$old")"
    install -d -m 0700 "$PENDING" || exit 1
    cp -p "$old" "$saved" || exit 1
    STAGED+=("$old")
    rm -f "$old" || exit 1
    changed+=("$old")
    note_change "removed $old (no longer delivered)"
  done <"$1"
}

# record_delivered MANIFEST -- after the commit: what this script delivers, for its next run.
record_delivered() {
  if [ "$(cat "$1" 2>/dev/null)" != "$(printf '%s
' "${delivered[@]}")" ]; then
    install -d -m 0700 "${1%/*}" || exit 1
    printf '%s
' "${delivered[@]}" >"$1" || exit 1
  fi
}
"""


# A restart or reload is done when the container serves again, not when `docker restart` returns:
# a datastore that rejects its new certificate exits a moment after its start, and one that
# starts but fails its healthcheck is as broken. Every container of the stack has a healthcheck
# (components/containers.py), so Docker's health status is awaited: Docker resets it to
# "starting" at every start and decides within the check's own timing, which never exceeds
# WAIT_TIMEOUT_MAX_S (health_wait_timeout_s). A container without one counts as back once it
# has kept running, on the same start, for three checks a second apart. A container that stops,
# is started again by its restart policy (a new StartedAt) or turns unhealthy fails at once.
WAIT_RESTARTED = r"""# wait_restarted CID SECONDS -- after a restart or reload of container CID: succeeds once it
# runs and is healthy; otherwise fails, after at most SECONDS, with its state, its last
# healthcheck output and its last log lines on stderr.
wait_restarted() {
  local cid="$1" seconds="$2" format started state="" steady=0 try
  format='{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.StartedAt}}'
  started="$(docker inspect -f '{{.State.StartedAt}}' "$cid")" \
    || { echo "container $cid is gone after its restart or reload" >&2; return 1; }
  for try in $(seq 1 "$seconds"); do
    state="$(docker inspect -f "$format" "$cid" 2>&1)" || break
    case "$state" in
      "running healthy $started") return 0 ;;
      "running none $started")
        steady=$((steady + 1))
        [ "$steady" -lt 3 ] || return 0 ;;
      "running starting $started") ;;
      *) break ;;
    esac
    if [ "$try" -lt "$seconds" ]; then sleep 1; fi
  done
  echo "container $cid is not back after its restart or reload (status, health, start: $state; started $started)" >&2
  docker inspect -f '{{if .State.Health}}{{range .State.Health.Log}}{{.Output}}{{end}}{{end}}' "$cid" 2>/dev/null \
    | tail -n 5 >&2 || true
  docker logs --tail 20 "$cid" >&2 2>&1 || true
  return 1
}
"""


# The expiry of every certificate delivered (a leaf, or the CA clients verify against), as a
# node-exporter textfile metric: the InternalCertificateExpiring alert (components/prometheus.py)
# sees a certificate the internal CA re-issued but no converge delivered. A certificate's first
# block is the one read (the leaf of a chain; the key file of MongoDB holds it first too).
CERTIFICATE_METRICS = r"""certificate_metrics() {
  local out="$1" path end tmp
  shift
  tmp="$(mktemp)"
  for path in "$@"; do
    # A file openssl cannot read counts as expired (0): the alert says so, the delivery goes on.
    if end="$(openssl x509 -enddate -noout -in "$path" 2>/dev/null)"; then
      end="$(date -d "${end#notAfter=}" +%s)"
    else
      echo "warning: $path is not a certificate openssl can read; its expiry is reported as 0" >&2
      end=0
    fi
    printf 'platform_certificate_expiry_timestamp_seconds{path="%s"} %s\n' "$path" "$end" >>"$tmp"
  done
  if ! cmp -s "$tmp" "$out"; then
    install -d -m 0755 "${out%/*}"
    install -m 0644 "$tmp" "$out"
    note_change "$out"
  fi
  rm -f "$tmp"
}
"""


def _staged(path: str, file: HostFile, text: str) -> str:
    """One file staged for the directory's commit: recorded in ``changed`` when written."""
    return hostsetup.staged_file(path, file.mode, file.owner, text, record="changed")
