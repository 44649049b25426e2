"""``rehearse(stack)``: capture the stack, boot one box per host in the lab, converge twice,
check every host with testinfra and return the report (``rehearsal.report``). ``Rehearsal`` is
the same held open as a context manager, so that lab-tier tests (backup runs, change drills,
probes) work on the one converged lab before it is torn down.

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
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from rehearsal import overlay as overlay_mod
from rehearsal.capture import CaptureMemory, StackCapture, capture
from rehearsal.report import HostReport, Report

CONVERGE_TIMEOUT_S = 40 * 60


@dataclass
class DrillContext:
    """What a drill's ``observe`` sees: the running ``lab`` (``lab.exec`` into a box), the
    ``services`` (``rehearsal.services.LabServices``: the mail, the webhook posts), the lab
    captures ``before`` and ``after`` its change (lab addresses, revealed inputs) and its
    ``runs``: the step results of its converges (apply, then settle)."""

    lab: Any
    services: Any
    before: StackCapture
    after: StackCapture
    runs: list[list[dict]] = field(default_factory=list)


@dataclass
class Drill:
    """A change converged onto the running boxes, then observed on the running services.

    ``stack_file``: the changed stack file (None: the config as it was; with no ``reissue``
    either, nothing is converged and ``observe`` runs on the lab as it stands); ``reissue``:
    ``tls:*`` resource names whose certificates are issued anew (``pulumi up --replace``);
    ``observe(context) -> dict``: what the running services show, kept in the report (it may
    raise: the error is the drill's); ``hosts``: the hosts (names) the change is converged onto
    (None: every host of the held lab), so that a drill on a shared staging lab pays for the
    boxes it observes only. Order: capture with the same keys and secrets (``CaptureMemory``)
    -> the same overlay -> converge (changes expected) -> converge again (0 changes) ->
    ``observe``."""

    name: str
    observe: Callable[[DrillContext], dict]
    stack_file: Optional[Path] = None
    reissue: Sequence[str] = ()
    hosts: Optional[Sequence[str]] = None


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


class ConvergeTimeout(RuntimeError):
    """A converge run overran its timeout and was killed; ``results`` holds what it finished,
    and a failed result (error "timed out") for each step it was in the middle of or had not
    started, so the report names them per host."""

    def __init__(self, message: str, results: list[dict]):
        super().__init__(message)
        self.results = results


def run_converge(lab, plan_path: Path, workdir: Path, run: int, workers: int,
                 expect_changes: bool = False, timeout: Optional[float] = None) -> list[dict]:
    """One converge run inside the lab's namespace (a child process: its SSH and Docker
    connections originate there). ``expect_changes``: a run after a config change (see
    ``rehearsal.converge``). Returns the step results. Raises ConvergeTimeout after
    ``timeout`` seconds (default :data:`CONVERGE_TIMEOUT_S`), RuntimeError when the run wrote
    no results."""
    from rehearsal.converge import progress_path

    timeout = CONVERGE_TIMEOUT_S if timeout is None else timeout
    results = workdir / f"results-{run}.json"
    argv = lab.netns_argv([sys.executable, "-m", "rehearsal.converge", str(plan_path), str(results),
                           "--workdir", str(workdir), "--run", str(run), "--workers", str(workers),
                           *(["--expect-changes"] if expect_changes else [])])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    # Its own process group: a killed run takes its ssh and docker children with it.
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=None, start_new_session=True)
    try:
        proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise ConvergeTimeout(f"converge run {run} timed out after {timeout:.0f} s",
                              _unfinished(plan_path, progress_path(results), run, timeout)) from None
    if not results.exists():
        raise RuntimeError(f"converge run {run} wrote no results (exit {proc.returncode})")
    return json.loads(results.read_text())


def _unfinished(plan_path: Path, progress: Path, run: int, timeout: float) -> list[dict]:
    done: list[dict] = []
    running: set[str] = set()
    if progress.exists():
        partial = json.loads(progress.read_text())
        done, running = partial["done"], set(partial["running"])
    finished = {r["urn"] for r in done}
    unfinished = []
    for step in json.loads(plan_path.read_text())["steps"]:
        if step["urn"] in finished:
            continue
        state = "was running" if step["urn"] in running else "had not started"
        unfinished.append({"urn": step["urn"], "name": step["name"], "host": step["host"],
                           "kind": step["kind"], "run": run, "status": "failed",
                           "error": f"timed out: the run was killed after {timeout:.0f} s and this step {state}",
                           "seconds": 0.0, "exit_code": None, "changes": None, "changed": [],
                           "resource_id": None, "tail": []})
    return done + unfinished


def only_hosts(cap: StackCapture, hosts: Optional[Iterable[str]]) -> StackCapture:
    """``cap`` with only the ``hosts`` named (all when None), their steps and nothing else; a
    dependency on a step of another host is left out (the converge waits only for steps it has).
    Raises ValueError naming a host the capture does not have."""
    if hosts is None:
        return cap
    wanted = set(hosts)
    unknown = wanted - set(cap.hosts)
    if unknown:
        raise ValueError(f"hosts {sorted(unknown)} are not in the capture (it has {sorted(cap.hosts)})")
    return StackCapture(stack=cap.stack, hosts={n: h for n, h in cap.hosts.items() if n in wanted},
                        steps=[s for s in cap.steps if s.host in wanted], products=cap.products,
                        database_hosts=cap.database_hosts, state=cap.state, stack_config=cap.stack_config)


def write_plan(lab_cap: StackCapture, path: Path) -> None:
    """The converge plan (revealed secrets: 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(lab_cap.to_json(), out)


def run_drill(report: Report, drill: Drill, lab, services, workdir: Path, run_no: int, workers: int,
              *, before: StackCapture, recapture: Callable[[Drill], StackCapture]) -> int:
    """One ``Drill``: its change converged (changes expected), converged again (0 changes),
    then observed; the result goes to ``report.drills[drill.name]`` (``runs``: per run the
    changes per host and the steps that changed; ``seconds``; ``observation`` or ``error``).
    Returns the last run number used."""
    entry: dict[str, Any] = {"runs": {}, "seconds": {}}
    report.drills[drill.name] = entry
    context = DrillContext(lab=lab, services=services, before=before, after=before)
    started = time.monotonic()
    try:
        if drill.stack_file is not None or drill.reissue:
            t0 = time.monotonic()
            context.after = recapture(drill)
            entry["seconds"]["capture"] = round(time.monotonic() - t0, 2)
            plan_path = workdir / f"plan-{drill.name}.json"
            write_plan(context.after, plan_path)
            for expect_changes in (True, False):
                run_no += 1
                t0 = time.monotonic()
                results = run_converge(lab, plan_path, workdir, run_no, workers, expect_changes)
                entry["seconds"][f"converge_{run_no}"] = round(time.monotonic() - t0, 2)
                report.add_results(run_no, results)
                context.runs.append(results)
                entry["runs"][run_no] = {
                    "expect_changes": expect_changes,
                    "changes": {h: sum(r["changes"] or 0 for r in results if r["host"] == h)
                                for h in context.after.hosts},
                    "changed_steps": sorted(r["name"] for r in results if r["changes"]),
                    "failed": sorted(f'{r["name"]}: {r["error"]}' for r in results
                                     if r["status"] in ("failed", "blocked", "changed")),
                }
        t0 = time.monotonic()
        entry["observation"] = drill.observe(context)
        entry["seconds"]["observe"] = round(time.monotonic() - t0, 2)
    except Exception as exc:  # noqa: BLE001 - a drill's failure is its report entry
        entry["error"] = f"{type(exc).__name__}: {exc}"
    entry["seconds"]["total"] = round(time.monotonic() - started, 2)
    return run_no


def admin_cidrs(stack: str, stack_file=None) -> list[str]:
    import yaml

    from synth.run import stack_file_path

    doc = yaml.safe_load(Path(stack_file or stack_file_path(stack)).read_text()) or {}
    env = (doc.get("config") or {}).get("platform:environment") or {}
    return list(env.get("admin_cidrs") or [])


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
                domains: Optional[dict] = None, acme_roots: bytes = b"") -> tuple[list[dict], dict[str, list]]:
    """The matrix and the exposure probes (``rehearsal.checks.access``), in the order they need:
    fail2ban bans before the droplets' cloud firewall stands (afterwards no outside source
    reaches their sshd), then the firewall, SSH, the matrix, TLS on every public hostname
    (``domains``: hostname -> box; ``acme_roots``: the ACME CA's roots) with one forced renewal
    per box, and the data tier's TLS. Returns (matrix rows, host -> checks)."""
    from rehearsal.checks import access, written_files
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
        for box, names in sorted(by_box.items()):
            if not acme_roots or not probes.internet_site:
                break
            address = lab_cap.hosts[box].address
            for domain in names:
                live[box] += access.ingress_checks(probes.internet_site, domain, address, roots)
            live[box] += access.renewal_checks(lab, probes.internet_site, box, names[0], address, roots)
        for name in lab_cap.hosts:
            live[name] += access.postgres_checks(lab, probes, name, acme_roots, plan.stack_address)
    return cells, live


def rehearse(stack: str, **options) -> Report:
    """The whole rehearsal, torn down at the end unless ``keep``; never raises for a host
    failure (it is in the report). ``options`` are :class:`Rehearsal`'s. Raises ConfigError /
    CaptureError for a stack that cannot be captured, LabBusy when a rehearsal already runs on
    the same lock."""
    with Rehearsal(stack, **options) as held:
        return held.report


class Rehearsal:
    """A rehearsal held open: ``with Rehearsal("staging") as r:`` captures the stack, boots the
    lab, converges twice, checks every host and probes the reachability matrix on entry; the
    body may then work on the converged hosts (``r.lab``, ``r.lab_capture``, :meth:`converge`)
    before the exit tears everything down (unless ``keep``). A stage that fails sets
    ``r.report.error`` and skips the stages after it; entry raises only ConfigError /
    CaptureError (the stack cannot be captured) and LabBusy.

    ``products``: only these products' hosts; ``workers``: steps applied in parallel per run;
    ``with_images``: serve stand-in images from the lab registry (False for a stack without
    containers); ``capture_override``: a hand-made capture instead of the stack's; ``lock_path``:
    the lab lock, default the machine-wide one (``rehearsal.netns.DEFAULT_LOCK``), which a test
    running its own small lab next to another rehearsal replaces with a private one.
    ``hosts``: only these hosts (names) of the capture get a box (a host that depends on none of
    the others, such as Pencom's edge); ``checks``: False skips the testinfra checks and the
    live probes; ``drills``: :class:`Drill` s run in order after the checks, each in
    ``report.drills`` (more can run on the held lab with :meth:`drill`)."""

    def __init__(self, stack: str, *, products: Optional[Iterable[str]] = None, keep: bool = False,
                 workers: int = 4, with_images: bool = True, stack_file=None,
                 capture_override: Optional[StackCapture] = None, lock_path: Optional[Path] = None,
                 hosts: Optional[Iterable[str]] = None, checks: bool = True, drills: Sequence[Drill] = ()):
        self.stack, self.products, self.keep, self.workers = stack, products, keep, workers
        self.with_images, self.stack_file = with_images, stack_file
        self.capture_override, self.lock_path = capture_override, lock_path
        self.hosts, self.checks, self.drills = hosts, checks, tuple(drills)
        self.report = Report(stack=stack)
        self.registry = None
        self.lab = None
        self.lab_services = None
        self.capture: Optional[StackCapture] = None
        self.lab_capture: Optional[StackCapture] = None
        self.overlay: Optional[overlay_mod.Overlay] = None
        self.workdir: Optional[Path] = None
        self.plan_path: Optional[Path] = None
        self.memory = CaptureMemory()
        self.database_ca_pem: Optional[str] = None
        self.last_run = 0
        self._started = 0.0

    def __enter__(self) -> "Rehearsal":
        self._started = time.monotonic()
        try:
            self._run()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def drill(self, drill: Drill) -> dict:
        """Run ``drill`` on the held lab after whatever ran before it (the converge runs are
        numbered on from the last); returns its ``report.drills`` entry. A held lab whose
        rehearsal failed (``report.error``) runs nothing and returns an entry with that error."""
        if self.report.error is not None or self.lab is None:
            entry = {"error": f"the rehearsal did not converge: {self.report.error}"}
            self.report.drills[drill.name] = entry
            return entry
        self.last_run = run_drill(self.report, drill, self.lab, self.lab_services, self.workdir,
                                  self.last_run, self.workers, before=self.lab_capture,
                                  recapture=self._recapture)
        return self.report.drills[drill.name]

    def _recapture(self, drill: Drill) -> StackCapture:
        # The same keys, secrets and certificates (CaptureMemory) and the same overlay: only the
        # drill's change differs from what the lab runs.
        hosts = self.hosts
        if drill.hosts is not None:
            outside = set(drill.hosts) - set(self.lab_capture.hosts)
            if outside:
                raise ValueError(f"drill {drill.name}: hosts {sorted(outside)} have no box in this lab "
                                 f"(it has {sorted(self.lab_capture.hosts)})")
            hosts = drill.hosts
        return overlay_mod.apply(only_hosts(capture(
            self.stack, products=self.products, stack_file=drill.stack_file or self.stack_file,
            database_ca_pem=self.database_ca_pem, memory=self.memory, reissue=drill.reissue),
            hosts), self.overlay)

    def _run(self) -> None:
        from rehearsal.checks import check_host
        from rehearsal.lab import Lab

        report = self.report
        if self.with_images:
            from rehearsal.images import Registry

            self.registry = Registry()
        registry = self.registry
        t0 = time.monotonic()
        self.database_ca_pem = registry.ca.cert_pem.decode() if registry else None
        cap = self.capture_override or capture(
            self.stack, products=self.products, stack_file=self.stack_file,
            database_ca_pem=self.database_ca_pem, memory=self.memory)
        report.timings["capture"] = round(time.monotonic() - t0, 2)
        cap = only_hosts(cap, self.hosts)
        self.capture = cap
        plan = overlay_mod.plan(cap, admin_cidrs(self.stack, self.stack_file) if self.capture_override is None else ())
        self.overlay = plan
        lab_cap = overlay_mod.apply(cap, plan)
        self.lab_capture = lab_cap
        for host in lab_cap.hosts.values():
            report.hosts[host.name] = HostReport(name=host.name, product=host.product, kind=host.kind,
                                                 address=host.address)
        workdir = Path(tempfile.mkdtemp(prefix="rehearsal-converge-"))
        self.workdir = workdir
        os.chmod(workdir, 0o700)
        plan_path = workdir / "plan.json"
        self.plan_path = plan_path
        write_plan(lab_cap, plan_path)
        from rehearsal import aptrepo

        # The local apt repository serves what the captured scripts install (and the lab's list).
        packages = set(aptrepo.STACK_PACKAGES) | aptrepo.packages_in_scripts(
            s.inputs.get("stdin") or "" for s in lab_cap.steps if s.kind == "command")
        # The lab services (rehearsal/services.py) answer the names the stack resolves; they are
        # planned before the boxes exist (the boxes get the lab's resolvers) and started once
        # the namespace is up.
        from rehearsal import rootfs, services as services_mod
        from rehearsal.netns import SERVICE_ADDRESS

        service_plan = services_mod.plan_services(lab_cap, extra_names={
            name: SERVICE_ADDRESS for name in (*rootfs.APT_HOSTS, *lab_cap.database_hosts)})
        lab = Lab(networks=plan.lab_networks, boxes=box_specs(lab_cap, plan, service_plan.resolvers),
                  keep=self.keep, packages=packages,
                  **({"lock_path": self.lock_path} if self.lock_path else {}))
        self.lab = lab
        report.netns = lab.netns
        from rehearsal.netns import LabBusy

        try:
            lab.start()
        except LabBusy:
            raise  # another rehearsal runs: the CLI refuses with exit 3, nothing of ours to report
        except Exception as exc:  # noqa: BLE001 - a lab that cannot start is the report's error
            report.error = f"the lab did not start: {exc}"
            return
        report.timings.update({f"lab_{k}": round(v, 2) for k, v in lab.timings.items()})
        preparation = None
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
                return
            report.timings.update({f"images_{k}": round(v, 2) for k, v in image_timings.items()})
            preparation = registry.box_preparation()
            report.standins = {s.reference: {"kind": s.kind, "proven": s.proven, "note": s.note}
                               for s in standins}
        # DNS, ACME, S3, SMTP, webhooks, with certificates of the registry's CA, which the boxes
        # trust through the preparation (without a registry they get it here).
        t0 = time.monotonic()
        self.lab_services = services_mod.LabServices(
            service_plan.with_names({h: lab.service_address for h in (registry.hosts if registry else ())}),
            lab.netns, ca=registry.ca if registry else None)
        try:
            self.lab_services.start()
        except services_mod.ServicesError as exc:
            report.error = f"the lab services did not start: {exc}"
            return
        report.timings.update({f"services_{k}": v for k, v in self.lab_services.timings.items()})
        report.timings["services"] = round(time.monotonic() - t0, 2)
        if preparation is None:
            from rehearsal.images import BoxPreparation

            preparation = BoxPreparation(files=self.lab_services.box_files(), hosts_lines=(),
                                         commands=(("update-ca-certificates",),))
        extra_hosts = [f"{lab.service_address} {name}" for name in lab_cap.database_hosts]
        t0 = time.monotonic()
        try:
            prepare_boxes(lab, lab_cap, preparation, extra_hosts)
        except RuntimeError as exc:
            report.error = str(exc)
            return
        report.timings["prepare"] = round(time.monotonic() - t0, 2)
        for run in (1, 2):
            t0 = time.monotonic()
            try:
                results = run_converge(lab, plan_path, workdir, run, self.workers)
            except ConvergeTimeout as exc:
                report.add_results(run, exc.results)
                report.error = str(exc)
                return
            except RuntimeError as exc:
                report.error = f"converge run {run}: {exc}"
                return
            self.last_run = run
            report.timings[f"converge_{run}"] = round(time.monotonic() - t0, 2)
            # A host that failed in run 1 runs again too (its dependents stay blocked): the
            # report then shows every kind of failure a host has, not only the first.
            report.add_results(run, results)
        if self.checks:
            t0 = time.monotonic()
            state = json.loads((workdir / "state.json").read_text()) if (workdir / "state.json").exists() else {}
            proven = {ref: info["proven"] for ref, info in report.standins.items()}
            for host in lab_cap.hosts.values():
                report.hosts[host.name].checks = check_host(lab, lab_cap, host.name, state, proven)
            report.timings["checks"] = round(time.monotonic() - t0, 2)
            if cap.state is not None and self.hosts is None:
                t0 = time.monotonic()
                report.reachability, live = live_probes(lab, cap, lab_cap, plan, domains=dict(service_plan.domains),
                                                        acme_roots=self.lab_services.acme_roots_pem)
                for name, checks in live.items():
                    report.hosts[name].checks += checks
                report.timings["live_probes"] = round(time.monotonic() - t0, 2)
        for drill in self.drills:
            self.drill(drill)

    def close(self) -> None:
        """Tear down what the rehearsal made (unless ``keep``); teardown errors go to
        ``report.teardown_error``. Safe to call twice."""
        report = self.report
        if self._started:
            report.timings["total"] = round(time.monotonic() - self._started, 2)
        if self.lab_services is not None and not self.keep:  # kept: they live until the namespace goes
            try:
                self.lab_services.close()
            except Exception as exc:  # noqa: BLE001 - teardown goes on
                report.teardown_error = f"lab services: {exc}"
        self.lab_services = None
        if self.registry is not None:
            try:
                self.registry.stop()
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
            self.registry = None
        lab, self.lab = self.lab, None
        if lab is not None and self.keep and lab._started:
            report.kept = f"lab kept: namespace {getattr(lab, 'netns', '?')}; workdir {self.workdir}"
            lab.__exit__(None, None, None)
            return
        if lab is not None:
            try:
                lab.close()
            except Exception as exc:  # noqa: BLE001
                report.teardown_error = str(exc)
        if self.workdir is not None:
            subprocess.run(["rm", "-rf", str(self.workdir)], check=False)
            self.workdir = None
