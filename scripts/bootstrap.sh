#!/usr/bin/env bash
# Idempotent setup of a fresh machine: the Python venv with pinned requirements, and the Debian
# packages whose real tools the tests use as oracles. Safe to run again; does nothing when current.
set -euo pipefail
cd "$(dirname "$0")/.."

want_dev="${1:-dev}"
python_bin="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
requirements=requirements.txt
[ "$want_dev" = "dev" ] && requirements=requirements-dev.txt
stamp=".venv/.installed-$(cat requirements.txt "$requirements" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
  touch "$stamp"
fi

[ "$want_dev" = "dev" ] || exit 0

# Debian packages for the real-tool tests: command to look for -> package that provides it.
declare -A apt_tools=(
  [sshd]=openssh-server
  [ssh-agent]=openssh-client
  [fail2ban-client]=fail2ban
  [cloud-init]=cloud-init
  [promtool]=prometheus
  [prometheus-node-exporter]=prometheus-node-exporter
  [amtool]=prometheus-alertmanager
  [ufw]=ufw
  [ip]=iproute2
  [redis-server]=redis-server
  [dot]=graphviz
  [systemd-analyze]=systemd
  [pg_dump]=postgresql-client
  [restic]=restic
  [jq]=jq
  [unshare]=util-linux
  [squid]=squid
  [iptables-restore]=iptables
  # The reachability matrix's probes (rehearsal/checks/reachability.py).
  [nc]=netcat-openbsd
  [node]=nodejs
  [unattended-upgrade]=unattended-upgrades
  [visudo]=sudo
  # The rehearsal lab (rehearsal/): the harness Docker daemon, the box root filesystem, the
  # local apt repository's index.
  [dockerd]=docker.io
  [debootstrap]=debootstrap
  [dpkg-scanpackages]=dpkg-dev
  # The stand-in images' registry (rehearsal/images.py) and the tool that pushes into it.
  [docker-registry]=docker-registry
  [skopeo]=skopeo
  # The lab's network services (rehearsal/services.py): DNS (the binary only, no system
  # service), Let's Encrypt's test CA, and the ACME client the tests drive it with.
  [dnsmasq]=dnsmasq-base
  [pebble]=pebble
  [certbot]=certbot
  # Session logging (tests/test_session_logging.py): the host's forwarder and the collector.
  [rsyslogd]=rsyslog
  # The admin-session archive (tests/test_session_archive.py) uploads with rclone.
  [rclone]=rclone
  # The management network (tests/test_wireguard_real.py): wg and wg-quick parse the rendered
  # wg0.conf; wireguard-go is the userspace tunnel where the kernel has no WireGuard module.
  [wg]=wireguard-tools
  [wireguard-go]=wireguard-go
  # The lab tier's live probes from the lab's internet site (TLS, renewals) and the drills'
  # certificate reads; a minimal Debian 12 has neither curl nor, without a Recommends, the
  # CA store that dockerd and pip verify against.
  [curl]=curl
  [openssl]=openssl
  # The live TLS probes' second client: GnuTLS still offers 3DES, Debian's OpenSSL does not
  # (rehearsal/checks/tlsprobes.py).
  [gnutls-cli]=gnutls-bin
  [update-ca-certificates]=ca-certificates
)
missing=()
for tool in "${!apt_tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("${apt_tools[$tool]}")
done
# A PostgreSQL server (its binaries live outside PATH) for the backup and restore tests.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
# Packages the host scripts install that have no command of their own: the sandboxed
# twice-run test (tests/test_host_idempotency.py) runs those scripts with no network.
# debian-archive-keyring: debootstrap (box and stand-in root filesystems) verifies the mirror's
# Release with it, and installs it only as a Recommends.
for pkg in python3-systemd systemd-timesyncd rsyslog-gnutls auditd audispd-plugins debian-archive-keyring; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  # Installing daemons must not start them on the build machine: tests start what they need.
  printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee /usr/sbin/policy-rc.d >/dev/null
  "${sudo_cmd[@]}" chmod +x /usr/sbin/policy-rc.d
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  "${sudo_cmd[@]}" rm -f /usr/sbin/policy-rc.d
fi
