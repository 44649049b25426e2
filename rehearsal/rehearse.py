"""``rehearse(stack)``: capture the stack, boot one box per host in the lab, converge twice,
check every host with testinfra and return the report (``rehearsal.report``).

Order: capture (the stack's own program, rehearsal secrets) -> overlay (lab addresses) -> lab
(R1: namespace, harness daemon, boxes; R2: registry and stand-ins) -> box preparation (what
the stack assumes of a host it does not create: the on-prem deploy user; the registry's CA and
names) -> converge run 1 -> converge run 2 (0 changes, no container recreated) -> checks ->
teardown unless ``keep``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

from rehearsal import overlay as overlay_mod
from rehearsal.capture import StackCapture, capture
from rehearsal.report import HostReport, Report

CONVERGE_TIMEOUT_S = 40 * 60


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


def run_converge(lab, plan_path: Path, workdir: Path, run: int, workers: int) -> list[dict]:
    """One converge run inside the lab's namespace (a child process: its SSH and Docker
    connections originate there). Returns the step results."""
    results = workdir / f"results-{run}.json"
    argv = lab.netns_argv([sys.executable, "-m", "rehearsal.converge", str(plan_path), str(results),
                           "--workdir", str(workdir), "--run", str(run), "--workers", str(workers)])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run(argv, env=env, timeout=CONVERGE_TIMEOUT_S, stdout=subprocess.PIPE,
                          stderr=None)
    if not results.exists():
        raise RuntimeError(f"converge run {run} wrote no results (exit {proc.returncode})")
    return json.loads(results.read_text())


def admin_cidrs(stack: str) -> list[str]:
    import yaml

    from synth.run import stack_file_path

    doc = yaml.safe_load(stack_file_path(stack).read_text()) or {}
    env = (doc.get("config") or {}).get("platform:environment") or {}
    return list(env.get("admin_cidrs") or [])


def reachability_matrix(lab, cap: StackCapture) -> list[dict]:
    """The tier model's matrix probed in the lab (``rehearsal.checks.reachability``): expected
    from the capture with the stack's own addresses and the policy config's waivers, observed
    from the lab's probe sites against the boxes' lab addresses."""
    from rehearsal.checks.reachability import rehearse_matrix
    from synth.engine import PROJECT_ROOT

    policy_path = PROJECT_ROOT / "policy" / f"config.{cap.stack}.json"
    policy_config = json.loads(policy_path.read_text()) if policy_path.exists() else {}
    return rehearse_matrix(lab, cap.state, cap.stack_config, policy_config)


def rehearse(stack: str, *, products: Optional[Iterable[str]] = None, keep: bool = False,
             workers: int = 4, with_images: bool = True, stack_file=None,
             capture_override: Optional[StackCapture] = None, lock_path: Optional[Path] = None,
             after_converge: Optional[Callable[..., None]] = None, checks: bool = True) -> Report:
    """The whole rehearsal; never raises for a host failure (it is in the report). Raises
    ConfigError / CaptureError for a stack that cannot be captured, LabBusy when a rehearsal
    already runs on the same lock. ``lock_path``: the lab lock, default the machine-wide one
    (``rehearsal.netns.DEFAULT_LOCK``); a test that runs its own small lab next to another
    rehearsal passes a private one. ``after_converge(lab, lab_capture, lab_services)``: called
    once both converge runs are done, with the lab and its services still up (a drill on the
    converged boxes, e.g. tests/rehearsal/test_backup_box.py); its exceptions propagate after
    the teardown. ``checks=False`` skips the testinfra checks and the reachability matrix."""
    from rehearsal.checks import check_host
    from rehearsal.lab import Lab

    report = Report(stack=stack)
    started = time.monotonic()
    registry = None
    if with_images:
        from rehearsal.images import Registry

        registry = Registry()
    t0 = time.monotonic()
    cap = capture_override or capture(stack, products=products, stack_file=stack_file,
                                      database_ca_pem=registry.ca.cert_pem.decode() if registry else None)
    report.timings["capture"] = round(time.monotonic() - t0, 2)
    plan = overlay_mod.plan(cap, admin_cidrs(stack) if capture_override is None else ())
    lab_cap = overlay_mod.apply(cap, plan)
    for host in lab_cap.hosts.values():
        report.hosts[host.name] = HostReport(name=host.name, product=host.product, kind=host.kind,
                                             address=host.address)
    workdir = Path(tempfile.mkdtemp(prefix="rehearsal-converge-"))
    os.chmod(workdir, 0o700)
    plan_path = workdir / "plan.json"
    fd = os.open(plan_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(lab_cap.to_json(), out)
    from rehearsal import aptrepo

    # The local apt repository serves what the captured scripts install (and the lab's list).
    packages = set(aptrepo.STACK_PACKAGES) | aptrepo.packages_in_scripts(
        s.inputs.get("stdin") or "" for s in lab_cap.steps if s.kind == "command")
    # --- lab services (rehearsal/services.py): the names the stack resolves, planned before the
    # boxes exist (they get the lab's resolvers), started once the namespace is up.
    from rehearsal import rootfs, services as services_mod
    from rehearsal.netns import SERVICE_ADDRESS

    service_plan = services_mod.plan_services(lab_cap, extra_names={
        name: SERVICE_ADDRESS for name in (*rootfs.APT_HOSTS, *lab_cap.database_hosts)})
    lab_services = None
    # --- end lab services
    lab = Lab(networks=plan.lab_networks, boxes=box_specs(lab_cap, plan, service_plan.resolvers),
              keep=keep, packages=packages, **({"lock_path": lock_path} if lock_path else {}))
    report.netns = lab.netns
    try:
        t0 = time.monotonic()
        from rehearsal.netns import LabBusy

        try:
            lab.start()
        except LabBusy:
            raise  # another rehearsal runs: the CLI refuses with exit 3, nothing of ours to report
        except Exception as exc:  # noqa: BLE001 - a lab that cannot start is the report's error
            report.error = f"the lab did not start: {exc}"
            return report
        report.timings.update({f"lab_{k}": round(v, 2) for k, v in lab.timings.items()})
        preparation = None
        standins = []
        if registry is not None:
            import docker

            from rehearsal.images import contracts_from_state, ensure_standins

            t0 = time.monotonic()
            state = {"resources": [{"type": "docker:index/remoteImage:RemoteImage" if s.kind == "image"
                                    else "docker:index/container:Container", "inputs": s.inputs,
                                    "name": s.name, "urn": s.urn, "provider": s.host}
                                   for s in lab_cap.steps if s.kind in ("image", "container")]}
            client = docker.DockerClient(base_url=lab.harness_docker_host, timeout=900)
            try:
                standins, image_timings = ensure_standins(contracts_from_state(state), lab, registry, client)
            except Exception as exc:  # noqa: BLE001
                report.error = f"stand-in images could not be served: {exc}"
                return report
            report.timings.update({f"images_{k}": round(v, 2) for k, v in image_timings.items()})
            preparation = registry.box_preparation()
            report.standins = {s.reference: {"kind": s.kind, "proven": s.proven, "note": s.note}
                               for s in standins}
        # --- lab services: DNS, ACME, S3, SMTP, webhooks (certificates of the registry's CA,
        # which the boxes trust through the preparation; without a registry they get it here).
        t0 = time.monotonic()
        lab_services = services_mod.LabServices(
            service_plan.with_names({h: lab.service_address for h in (registry.hosts if registry else ())}),
            lab.netns, ca=registry.ca if registry else None)
        try:
            lab_services.start()
        except services_mod.ServicesError as exc:
            report.error = f"the lab services did not start: {exc}"
            return report
        report.timings.update({f"services_{k}": v for k, v in lab_services.timings.items()})
        report.timings["services"] = round(time.monotonic() - t0, 2)
        if preparation is None:
            from rehearsal.images import BoxPreparation

            preparation = BoxPreparation(files=lab_services.box_files(), hosts_lines=(),
                                         commands=(("update-ca-certificates",),))
        # --- end lab services
        extra_hosts = [f"{lab.service_address} {name}" for name in lab_cap.database_hosts]
        t0 = time.monotonic()
        try:
            prepare_boxes(lab, lab_cap, preparation, extra_hosts)
        except RuntimeError as exc:
            report.error = str(exc)
            return report
        report.timings["prepare"] = round(time.monotonic() - t0, 2)
        for run in (1, 2):
            t0 = time.monotonic()
            try:
                results = run_converge(lab, plan_path, workdir, run, workers)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                report.error = f"converge run {run}: {exc}"
                return report
            report.timings[f"converge_{run}"] = round(time.monotonic() - t0, 2)
            # A host that failed in run 1 runs again too (its dependents stay blocked): the
            # report then shows every kind of failure a host has, not only the first.
            report.add_results(run, results)
        if after_converge is not None:
            t0 = time.monotonic()
            after_converge(lab, lab_cap, lab_services)
            report.timings["after_converge"] = round(time.monotonic() - t0, 2)
        if not checks:
            return report
        t0 = time.monotonic()
        state = json.loads((workdir / "state.json").read_text()) if (workdir / "state.json").exists() else {}
        proven = {ref: info["proven"] for ref, info in report.standins.items()}
        for host in lab_cap.hosts.values():
            report.hosts[host.name].checks = check_host(lab, lab_cap, host.name, state, proven)
        report.timings["checks"] = round(time.monotonic() - t0, 2)
        if cap.state is not None:
            t0 = time.monotonic()
            report.reachability = reachability_matrix(lab, cap)
            report.timings["reachability"] = round(time.monotonic() - t0, 2)
        return report
    finally:
        report.timings["total"] = round(time.monotonic() - started, 2)
        if lab_services is not None and not keep:  # kept: they live until the namespace goes
            try:
                lab_services.close()
            except Exception as exc:  # noqa: BLE001 - teardown goes on
                report.teardown_error = f"lab services: {exc}"
        if registry is not None:
            try:
                registry.stop()
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
        if keep and lab._started:
            report.kept = f"lab kept: namespace {getattr(lab, 'netns', '?')}; workdir {workdir}"
            if lab._started:
                lab.__exit__(None, None, None)
        else:
            try:
                lab.close()
            except Exception as exc:  # noqa: BLE001
                report.teardown_error = str(exc)
            subprocess.run(["rm", "-rf", str(workdir)], check=False)
