"""The live probes of a converged lab (issue #16), from outside the boxes: the reachability
matrix (``rehearsal.checks.reachability``), the exposure probes (``rehearsal.checks.access``)
and nginx's TLS on every public hostname (``rehearsal.checks.tlsprobes``)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional

from rehearsal import overlay as overlay_mod
from rehearsal.capture import StackCapture


def reachability_matrix(lab, cap: StackCapture, plan: Optional[overlay_mod.Overlay] = None, *,
                        probes=None) -> list[dict]:
    """The tier model's matrix probed in the lab (``rehearsal.checks.reachability``): expected
    from the capture with the stack's own addresses and the policy config's waivers, observed
    from the lab's probe sites against the boxes' lab addresses (``plan``: the overlay, which
    places the direct routes and the provider firewalls' sources in the lab; ``probes``: the
    ``LabProbes`` the caller holds, if any)."""
    from rehearsal.checks.reachability import rehearse_matrix

    return rehearse_matrix(lab, cap.state, cap.stack_config, _policy_config(cap.stack),
                           translate=plan.text if plan is not None else str, probes=probes, hosts=cap.hosts)


def _policy_config(stack: str) -> dict:
    from synth.engine import PROJECT_ROOT

    policy_path = PROJECT_ROOT / "policy" / f"config.{stack}.json"
    return json.loads(policy_path.read_text()) if policy_path.exists() else {}


def live_probes(lab, cap: StackCapture, lab_cap: StackCapture, plan: overlay_mod.Overlay, *,
                domains: Optional[dict] = None, acme_roots: bytes = b"",
                database_ca: bytes = b"") -> tuple[list[dict], dict[str, list]]:
    """The matrix and the exposure probes (``rehearsal.checks.access``), in the order they need:
    fail2ban bans before the droplets' cloud firewall stands (afterwards no outside source
    reaches their sshd), then the firewall, SSH, the matrix, TLS on every public hostname
    (``domains``: hostname -> box; ``acme_roots``: the ACME CA's roots) from the internet probe,
    the WebSocket upgrade on the hostnames whose route asks for it (``websocket_hosts``), one
    forced renewal per box, and the data tier's TLS (``rehearsal.checks.datastores``: what the
    containers are handed, and what App Platform components are handed, under a box of their
    product; ``database_ca``: the lab CA the managed databases' stand-ins and ``getDatabaseCa``
    use, which stands in for the public trust store too; ``acme_roots`` is the CA that signed
    no datastore). A public hostname that cannot be probed (no ACME roots, no internet probe)
    gets a "not proven" check saying why. Returns (matrix rows, host -> checks)."""
    from rehearsal.checks import access, datastores, tlsprobes, written_files
    from rehearsal.report import NOT_PROVEN, Check
    from rehearsal.checks.reachability import lab_probes

    live: dict[str, list] = {name: [] for name in lab_cap.hosts}
    with tempfile.TemporaryDirectory() as tmp, \
            lab_probes(lab, cap.state, cap.stack_config, _policy_config(cap.stack), translate=plan.text,
                       defer_firewalls=True) as probes:
        keys = {}
        for host in lab_cap.hosts.values():
            keys[host.name] = Path(tmp) / f"{host.name}.key"
            fd = os.open(keys[host.name], os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(host.private_key)
            jail = access.written_jail(written_files(s for s in lab_cap.host_steps(host.name) if s.kind == "command"))
            if jail:
                if probes.internet_site:
                    live[host.name] += access.fail2ban_checks(lab, host, jail, probes.internet_site)
        probes.apply_firewalls()
        for host in lab_cap.hosts.values():
            live[host.name] += access.ssh_checks(lab, host, keys[host.name], probes.internet_site)
        cells = reachability_matrix(lab, cap, plan, probes=probes)
        roots = Path(tmp) / "acme-roots.pem"
        roots.write_bytes(acme_roots)
        by_box: dict[str, list[str]] = {}
        for domain, box in sorted((domains or {}).items()):
            if box in lab_cap.hosts:
                by_box.setdefault(box, []).append(domain)
        upgrades = websocket_hosts(cap.stack_config)
        for box, names in sorted(by_box.items()):
            if not acme_roots or not probes.internet_site:
                why = "no ACME roots from the lab's pebble" if not acme_roots else "no internet probe position"
                live[box] += [Check(f"live tls {domain}: probed from the internet", NOT_PROVEN, why) for domain in names]
                continue
            address = lab_cap.hosts[box].address
            for domain in names:
                live[box] += tlsprobes.ingress_checks(probes.internet_site, domain, address, roots)
                if domain in upgrades:
                    live[box].append(tlsprobes.websocket_check(probes.internet_site, domain, address, roots))
            live[box] += tlsprobes.renewal_checks(lab, probes.internet_site, box, names[0], address, roots)
        for name in lab_cap.hosts:
            live[name] += datastores.handed_checks(datastores.container_urls(lab, probes, name), acme_roots,
                                                   plan.stack_address)
        # App Platform runs in DigitalOcean's network, which is the lab's namespace here; its
        # checks go to the report of a box of the same product (there is no box of its own).
        databases = set(lab_cap.database_hosts)
        for product in sorted({h.product for h in lab_cap.hosts.values()}):
            box = min(n for n, h in lab_cap.hosts.items() if h.product == product)
            handed = datastores.app_platform_urls(cap.state or {}, lab.netns_argv([]),
                                                  lambda name: lab.service_address if name in databases else None,
                                                  database_ca, product=product)
            live[box] += datastores.handed_checks(handed, acme_roots, plan.stack_address)
    return cells, live


def websocket_hosts(stack_config: Any) -> set[str]:
    """The hostnames of every route in ``stack_config`` (a stack file's ``config``, any depth)
    that asks for the WebSocket upgrade (``websocket: true``, stacks/shared_config.py)."""
    def routes(value: Any) -> Iterable[dict]:
        if isinstance(value, dict):
            if isinstance(value.get("host"), str) and value.get("websocket") is True:
                yield value
            for item in value.values():
                yield from routes(item)
        elif isinstance(value, list):
            for item in value:
                yield from routes(item)

    return {route["host"].lower() for route in routes(stack_config)}

