"""A lab box: what a fresh VPS is, and how it boots.

A box is what a fresh VPS is (see ``rootfs.py``): a Debian cloud image's packages, no machine id
and no SSH host keys until its first boot, apt pointed at the lab's repository only. It boots
with the flags measured in /work/shared/REHEARSAL.md (``BOX_FLAGS``; ``--privileged`` fails on
this machine), ``/sys/fs/cgroup`` shared, tmpfs on /run. Every box boots from a NoCloud seed
(``seed_tar``): boxes with ``user_data`` get it and their root keys as meta-data
``public-keys`` (as DigitalOcean's metadata service gives a droplet's keys); the others (on-prem
VPS, whose hoster put the keys in place) get ``/root/.ssh/authorized_keys`` written before boot
and cloud-init disabled. ``rehearsal/lab.py`` creates, boots and tears down the boxes.
"""

from __future__ import annotations

import io
import ipaddress
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import yaml

from rehearsal.netns import LabError, run


def default_boot_timeout(boxes: int) -> float:
    """Seconds every box has to reach ``running``/``degraded`` with cloud-init done and sshd
    listening: 180 plus 60 per box, since boxes boot together and share the cores (7 boxes:
    600 s; measured on a 2-core machine shared with other jobs, see benchmarks/box_image.py)."""
    return 180.0 + 60.0 * boxes

BOOT_WAIT = r"""
deadline=$(( $(date +%s) + $1 ))
late() { [ "$(date +%s)" -ge "$deadline" ]; }
while :; do
  left=$(( deadline - $(date +%s) )); [ "$left" -gt 0 ] || left=1
  state=$(timeout "$left" systemctl is-system-running --wait 2>/dev/null)
  case "$state" in running|degraded) break ;; maintenance|stopping) echo "systemd: $state"; exit 10 ;; esac
  # "offline" or nothing: systemd (PID 1) is not up yet.
  if late; then
    echo "systemd: ${state:-not answering}; jobs still queued:"
    systemctl list-jobs --no-legend 2>&1 | head -20
    exit 10
  fi
  sleep 1
done
left=$(( deadline - $(date +%s) )); [ "$left" -gt 0 ] || left=1
status=$(timeout "$left" cloud-init status --wait --long 2>&1)
case "$status" in *"status: done"*) ;; *"status: disabled"*) [ "$2" = no-user-data ] || { echo "$status"; exit 11; } ;; *) echo "$status"; exit 11 ;; esac
until ss -Hltn 'sport = :22' | grep -q .; do
  late && exit 12
  sleep 0.5
done
"""
"""Run in a box: wait for systemd running/degraded (exit 10), cloud-init done (11; "disabled"
passes when $2 is no-user-data) and sshd listening on :22 (12), within $1 seconds."""

# Flags measured to boot systemd to `running` on this machine (REHEARSAL.md). --privileged fails
# ("unable to apply caps") because CAP_SYS_RESOURCE is not in the bounding set.
BOX_FLAGS = (
    "--cap-add=ALL", "--cap-drop=SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--device-cgroup-rule=a *:* rwm", "--cgroupns=host",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run", "--tmpfs", "/run/lock",
    "--stop-signal", "SIGRTMIN+3",  # systemd's "halt"
    # wireguard-go's device: the management network's wg0 comes up in a box as on a host whose
    # kernel has no WireGuard module (a container shares the build machine's kernel).
    "--device", "/dev/net/tun",
    # /proc/sys stays read-only (Docker's default), so that no box can change a kernel setting
    # that is not per network namespace (systemd-sysctl's kernel.*, fs.*) on the build machine;
    # NET_SYSCTL_UNIT makes the per-namespace /proc/sys/net writable at boot.
)


# A VM writes its own network sysctls (dockerd sets route_localnet and ip_forward on its
# bridges); a box is a container whose /proc/sys Docker mounts read-only. Only /proc/sys/net is
# made writable: its entries are per network namespace, so a box changes only its own, while
# kernel.* and fs.* (shared with the build machine) stay read-only.
_NET_SYSCTL_UNIT = "platform-rehearsal-net-sysctl.service"
NET_SYSCTL_UNIT = """\
[Unit]
Description=Writable network sysctls of this box's own namespace, as on a VM (rehearsal lab)
DefaultDependencies=no
Before=systemd-sysctl.service sysinit.target
ConditionPathIsReadWrite=!/proc/sys/net

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/mount --bind /proc/sys/net /proc/sys/net
ExecStart=/bin/mount -o remount,bind,rw /proc/sys/net
"""


@dataclass(frozen=True)
class BoxSpec:
    """One box. ``name``: container name and hostname (``[a-z0-9-]``). ``addresses``: lab network
    name -> the box's IPv4 on it (not the network's first address, the gateway). ``user_data``:
    cloud-init user-data booted through NoCloud (None: an on-prem VPS). ``root_authorized_keys``:
    OpenSSH public keys root accepts at first boot. ``memory_mb``: memory limit, None = none."""

    name: str
    addresses: Mapping[str, str]
    user_data: Optional[str] = None
    root_authorized_keys: tuple[str, ...] = ()
    memory_mb: Optional[int] = None
    extra_hosts: Mapping[str, str] = field(default_factory=dict)
    """host name -> IPv4, added to the box's /etc/hosts (docker --add-host), e.g. the registry
    names R2 serves at SERVICE_ADDRESS; Debian's mirror names are always added."""
    files: Mapping[str, bytes] = field(default_factory=dict)
    """absolute path -> content, written root-owned mode 0644 before the first boot (a CA
    certificate, say)."""
    dns: tuple[str, ...] = ()
    """The hoster's resolvers, e.g. ``rehearsal.services.ServicePlan.resolvers``: the box's
    /etc/resolv.conf names them directly (a file of the lab mounted there, as a VPS's DHCP
    would write it), so that the box's own dockerd forwards its embedded DNS to them. Not
    ``docker --dns``: on a user-defined network that leaves ``nameserver 127.0.0.11`` (the
    harness daemon's resolver, in the box's own iptables), which the box's dockerd drops as
    loopback and replaces with 8.8.8.8. Empty: Docker's default."""



def check_boxes(boxes: Sequence[BoxSpec], networks: Mapping[str, ipaddress.IPv4Network]) -> None:
    """Raise LabError unless every box has a unique name and a host address (not the gateway)
    on each lab network it names (``networks``: lab network name -> its network)."""
    if len({box.name for box in boxes}) != len(boxes):
        raise LabError("two boxes share a name")
    for spec in boxes:
        if not spec.addresses:
            raise LabError(f"box {spec.name}: no address on any lab network")
        for network, address in spec.addresses.items():
            if network not in networks:
                raise LabError(f"box {spec.name}.addresses: unknown network {network!r} "
                               f"(networks: {', '.join(sorted(networks))})")
            ip = ipaddress.ip_address(address)
            net = networks[network]
            if ip not in net or ip in (net.network_address, net.broadcast_address,
                                       next(net.hosts())):
                raise LabError(f"box {spec.name}.addresses.{network}: {address} is not a "
                               f"host address of {net} other than its gateway")


def seed_tar(spec: BoxSpec, lab_id: str) -> bytes:
    """What the box's provider puts in place before the first boot, as a tar for ``docker cp
    -``: for a droplet the NoCloud seed; for an on-prem VPS root's keys, SSH host keys of its
    own and cloud-init disabled (it has no user-data, and four idle cloud-init runs would cost
    the shared cores a minute at boot)."""
    files: dict[str, tuple[bytes, int]] = {}
    if spec.user_data is not None:
        meta = {"instance-id": f"{spec.name}-{lab_id}", "local-hostname": spec.name}
        if spec.root_authorized_keys:
            meta["public-keys"] = list(spec.root_authorized_keys)
        files["var/lib/cloud/seed/nocloud/meta-data"] = (yaml.safe_dump(meta).encode(), 0o600)
        files["var/lib/cloud/seed/nocloud/user-data"] = (spec.user_data.encode(), 0o600)
    else:
        files["etc/cloud/cloud-init.disabled"] = (b"", 0o644)
        files.update(_host_keys(spec.name))
        if spec.root_authorized_keys:
            files["root/.ssh/authorized_keys"] = (
                ("\n".join(spec.root_authorized_keys) + "\n").encode(), 0o600)
    files[f"etc/systemd/system/{_NET_SYSCTL_UNIT}"] = (NET_SYSCTL_UNIT.encode(), 0o644)
    for path, data in spec.files.items():
        files[path.lstrip("/")] = (data, 0o644)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        # Only the directories the image lacks: an entry for an existing one (etc, usr ...) would
        # reset its mode.
        for d in ("root/.ssh", "var/lib/cloud", "var/lib/cloud/seed",
                  "var/lib/cloud/seed/nocloud"):
            if any(p.startswith(d + "/") for p in files):
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o700 if d == "root/.ssh" else 0o755
                tar.addfile(info)
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(f"etc/systemd/system/sysinit.target.wants/{_NET_SYSCTL_UNIT}")
        link.type, link.linkname = tarfile.SYMTYPE, f"/etc/systemd/system/{_NET_SYSCTL_UNIT}"
        tar.addfile(link)
    return buf.getvalue()


def _host_keys(box: str) -> dict[str, tuple[bytes, int]]:
    """Fresh SSH host keys of the types Debian's openssh-server generates."""
    keys: dict[str, tuple[bytes, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("rsa", "ecdsa", "ed25519"):
            path = Path(tmp) / f"ssh_host_{kind}_key"
            run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"root@{box}", "-f", str(path)])
            keys[f"etc/ssh/{path.name}"] = (path.read_bytes(), 0o600)
            keys[f"etc/ssh/{path.name}.pub"] = (Path(f"{path}.pub").read_bytes(), 0o644)
    return keys


