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
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

from rehearsal import overlay as overlay_mod
from rehearsal.boxprep import box_specs, deploy_user_script, prepare_boxes  # noqa: F401 -- re-exported
from rehearsal.capture import CaptureMemory, StackCapture, capture
from rehearsal.liveprobes import live_probes, reachability_matrix  # noqa: F401 -- re-exported
from rehearsal.report import HostReport, Report
from rehearsal.runs import (  # noqa: F401 -- re-exported: the rehearsal's one front
    CONVERGE_TIMEOUT_S, ConvergeTimeout, Drill, DrillContext, merged, only_hosts, run_converge, run_drill,
    write_plan)


def admin_cidrs(stack: str, stack_file=None) -> list[str]:
    import yaml

    from synth.run import stack_file_path

    doc = yaml.safe_load(Path(stack_file or stack_file_path(stack)).read_text()) or {}
    env = (doc.get("config") or {}).get("platform:environment") or {}
    return list(env.get("admin_cidrs") or [])


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
        self.running: Optional[StackCapture] = None
        """What the boxes run after the drills so far (None: ``lab_capture``)."""
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
                                  self.last_run, self.workers, before=self.running or self.lab_capture,
                                  recapture=self._recapture, converged=self._converged)
        return self.report.drills[drill.name]

    def _converged(self, after: StackCapture) -> None:
        # The next drill's "before" is what the boxes run now, not the first converge's plan.
        self.running = merged(self.running or self.lab_capture, after)

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
        # The lab services (rehearsal/services/) answer the names the stack resolves; they are
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
        # DNS, ACME, S3, SMTP, webhooks and the managed databases' stand-ins, with certificates of
        # the registry's CA, which the boxes trust through the preparation (without a registry
        # they get it here) and the capture's getDatabaseCa answered.
        t0 = time.monotonic()
        from rehearsal.services.managed import managed_databases

        self.lab_services = services_mod.LabServices(
            service_plan.with_names({h: lab.service_address for h in (registry.hosts if registry else ())})
            .with_managed(managed_databases(cap.state or {}))
            .with_locked_buckets(services_mod.locked_buckets(cap.state or {})),
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
                                                        acme_roots=self.lab_services.acme_roots_pem,
                                                        database_ca=self.lab_services.ca_pem)
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
