"""What the stack assumes of a host it does not create, done to the lab's boxes before the
first converge: one ``BoxSpec`` per captured host (``box_specs``), the on-prem hand-over's deploy
user (``deploy_user_script``) and the registry's preparation (``prepare_boxes``)."""

from __future__ import annotations

import os
import shlex
import time
from typing import Iterable, Optional

from rehearsal import overlay as overlay_mod
from rehearsal.capture import StackCapture


def box_specs(lab_capture: StackCapture, plan: overlay_mod.Overlay, dns: tuple[str, ...] = ()):
    """One BoxSpec per host: its address on every lab network it is on; droplets boot their
    user-data with the product key as DigitalOcean's account key; on-prem boxes give root that
    key (what a hoster hands over); ``dns``: the hoster's resolvers (the lab's DNS)."""
    import ipaddress

    from rehearsal.lab import BoxSpec

    specs = []
    for host in sorted(lab_capture.hosts.values(), key=lambda h: h.name):
        addresses = {}
        for address in {host.address, host.private_address} - {None}:
            for network, cidr in plan.lab_networks.items():
                if ipaddress.ip_address(address) in ipaddress.ip_network(cidr):
                    addresses[network] = address
        specs.append(BoxSpec(name=host.name, addresses=addresses, user_data=host.user_data,
                             root_authorized_keys=(host.public_key,), dns=tuple(dns)))
    return specs


def deploy_user_script(user: str, public_key: str) -> str:
    """The account an on-prem VPS is handed over with when the stack has no ``bootstrap_user``
    ("Unset: the deploy user exists", components/onprem.py): key login and passwordless sudo."""
    q = shlex.quote
    return "\n".join([
        "set -eu",
        f"id -u {q(user)} >/dev/null 2>&1 || useradd -m -s /bin/bash {q(user)}",
        f"install -d -m 700 -o {q(user)} -g {q(user)} /home/{user}/.ssh",
        f"printf '%s\\n' {q(public_key)} > /home/{user}/.ssh/authorized_keys",
        f"chown {q(user)}:{q(user)} /home/{user}/.ssh/authorized_keys",
        f"chmod 600 /home/{user}/.ssh/authorized_keys",
        f"printf '%s ALL=(ALL) NOPASSWD:ALL\\n' {q(user)} > /etc/sudoers.d/90-hoster-{user}",
        f"chmod 440 /etc/sudoers.d/90-hoster-{user}",
    ]) + "\n"


def prepare_boxes(lab, lab_capture: StackCapture, preparation, extra_hosts: Iterable[str]) -> dict[str, float]:
    """Apply the registry's preparation and the on-prem hand-over to every box (as root through
    the harness daemon, before the stack's first script). Raises RuntimeError naming the box."""
    timings = {}
    for host in lab_capture.hosts.values():
        started = time.monotonic()
        steps: list[tuple[list[str], Optional[bytes]]] = []
        if preparation is not None:
            for path, content in sorted(preparation.files.items()):
                steps.append((["sh", "-c", f"mkdir -p {shlex.quote(os.path.dirname(path))} && "
                               f"cat > {shlex.quote(path)} && chmod 0644 {shlex.quote(path)}"], content))
            lines = list(preparation.hosts_lines)
        else:
            lines = []
        lines += list(extra_hosts)
        if lines:
            steps.append((["sh", "-c", "cat >> /etc/hosts"], ("\n".join(lines) + "\n").encode()))
        if preparation is not None:
            steps += [(list(argv), None) for argv in preparation.commands]
        if host.kind == "onprem":
            steps.append((["bash", "-s"], deploy_user_script(host.user, host.public_key).encode()))
        for argv, data in steps:
            proc = lab.exec(host.name, argv, input=data, timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"box {host.name}: preparation {argv} failed "
                                   f"(exit {proc.returncode}): {proc.stderr.decode(errors='replace')[-800:]}")
        timings[host.name] = round(time.monotonic() - started, 2)
    return timings
