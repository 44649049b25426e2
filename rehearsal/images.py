"""Stand-in images for every image reference a stack names, and the registry that serves them.

Public registries cannot be reached here, so a rehearsal builds, for every reference the stack's
``docker:index/remoteImage:RemoteImage`` resources name, a local image under that same reference
with the same contract (ports, healthcheck command, user, data paths, entrypoint/command), and
serves it from a local registry (Debian's ``docker-registry`` 2.8) inside the lab's network
namespace, so that the Docker daemons in the boxes really pull it under the stack's reference.

The parts: the contracts (``rehearsal/image_contracts.py``), the stand-ins planned from them
(``rehearsal/standin_plan.py``), their builds and caches (``rehearsal/standin_build.py``), the
test CA (``rehearsal/lab_ca.py``); this module is the registry and the whole of it in one call.

API (agreed in rehearsal/LAB_API.md, section "Images")::

    contracts = contracts_from_state(state)           # state: `python -m synth STACK --json` dict
    standins  = plan_standins(contracts)              # pure: kind, proven, note, recipe hash
    registry  = Registry(cache_dir=IMAGE_CACHE)       # test CA + storage persist in the cache
    registry.start(lab)                               # lab.spawn_service(...) on SERVICE_ADDRESS:443
    missing   = registry.missing(standins)            # what the registry lacks (skopeo inspect)
    build_standins(missing, docker_client)            # into the harness daemon, cached (docker save)
    registry.push(missing, lab.harness_docker_host)   # skopeo copy in the namespace
    prep      = registry.box_preparation()            # files/hosts lines/commands for each box
    registry.stop()
    # or all of it:  ensure_standins(contracts, lab, registry) -> list[StandIn]

The registry's storage (``IMAGE_CACHE/registry``) keeps every pushed blob, so that a warm run
pushes nothing.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Protocol, Sequence

from rehearsal.image_contracts import ImageContract, ImageError, contracts_from_state, split_reference
from rehearsal.lab_ca import TestCA
from rehearsal.standin_build import IMAGE_CACHE, build_standins, require_tool
from rehearsal.standin_plan import LABEL_RECIPE, StandIn, plan_standins

# The agreed API (rehearsal/LAB_API.md) reads the contracts from here too.
__all__ = ["IMAGE_CACHE", "REGISTRY_HOSTS", "BoxPreparation", "ImageError", "Registry", "ServiceHost",
           "TestCA", "contracts_from_state", "ensure_standins"]

REGISTRY_PORT = 443
REGISTRY_HOSTS = ("registry-1.docker.io", "index.docker.io", "docker.io", "ghcr.io", "gcr.io",
                  "quay.io", "registry.digitalocean.com", "public.ecr.aws", "registry.k8s.io")
"""Hostnames the registry answers for (its certificate's SANs, the boxes' /etc/hosts); the
registries of the stack's references are added to these. ``docker.io`` references are pulled
from ``registry-1.docker.io``."""


# --- the registry -----------------------------------------------------------------------------

class ServiceHost(Protocol):
    """What :meth:`Registry.start` needs of a lab (rehearsal.lab.Lab has it)."""

    service_address: str

    def spawn_service(self, name: str, argv: Sequence[str], env: Optional[dict] = None) -> Path: ...

    def netns_argv(self, argv: Sequence[str]) -> list[str]: ...


@dataclass(frozen=True)
class BoxPreparation:
    """What makes a box trust and resolve the rehearsal registry under every registry hostname.

    ``files``: absolute path in the box -> content (mode 0644, root-owned):
    ``/etc/docker/certs.d/<host>/ca.crt`` per host, and the CA under
    ``/usr/local/share/ca-certificates/`` (Docker Hub is verified against the system store, not
    certs.d). ``hosts_lines``: lines to append to the box's /etc/hosts. ``commands``: argvs to
    run as root after the files are written (``update-ca-certificates``); a dockerd already
    running must be restarted to see the new system store."""

    files: dict[str, bytes]
    hosts_lines: tuple[str, ...]
    commands: tuple[tuple[str, ...], ...]
    extra_hosts: dict[str, str] = field(default_factory=dict)
    """The same names as ``hosts_lines``, as name -> address for ``BoxSpec.extra_hosts``
    (``docker --add-host``: a container's /etc/hosts is Docker's, rewritten on restart)."""


class Registry:
    """Debian's ``docker-registry`` serving every stand-in on ``address:443`` over TLS.

    ``cache_dir``: holds ``ca/`` (the :class:`TestCA`) and ``registry/`` (the storage, kept across
    runs so a warm run pushes nothing). ``hosts``: registry hostnames to answer for, beyond
    :data:`REGISTRY_HOSTS` (add the hosts of the stack's references; :func:`ensure_standins` does).
    """

    def __init__(self, cache_dir: Path = IMAGE_CACHE, hosts: Iterable[str] = (),
                 storage: Optional[Path] = None):
        self.cache_dir = Path(cache_dir)
        self.hosts = tuple(dict.fromkeys([*REGISTRY_HOSTS, *hosts]))
        self.storage = Path(storage) if storage else self.cache_dir / "registry"
        self.ca = TestCA(self.cache_dir / "ca")
        self.address: Optional[str] = None
        self._lab: Optional[ServiceHost] = None
        self._workdir: Optional[Path] = None

    @property
    def endpoint(self) -> str:
        """``address:443``, for pushes from the namespace."""
        if self.address is None:
            raise ImageError("the registry is not started")
        return f"{self.address}:{REGISTRY_PORT}"

    def start(self, lab: ServiceHost, timeout: float = 30.0) -> None:
        """Spawn the registry in the lab's namespace on ``lab.service_address:443`` and wait
        until it answers ``/v2/`` over TLS. Raises ImageError with the log's tail."""
        registry_bin = require_tool("docker-registry")
        self.address = lab.service_address
        self._lab = lab
        self.storage.mkdir(parents=True, exist_ok=True)
        self._workdir = Path(tempfile.mkdtemp(prefix="rehearsal-registry-"))
        issued = self.ca.issue([*self.hosts, self.address])
        (self._workdir / "server.crt").write_bytes(issued.cert_pem + self.ca.cert_pem)
        key = self._workdir / "server.key"
        key.touch(mode=0o600)
        key.write_bytes(issued.key_pem)
        (self._workdir / "ca").mkdir()
        (self._workdir / "ca" / "ca.crt").write_bytes(self.ca.cert_pem)
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)},
                        "delete": {"enabled": True}},
            "http": {"addr": self.endpoint, "secret": base64.b64encode(os.urandom(24)).decode(),
                     "tls": {"certificate": str(self._workdir / "server.crt"), "key": str(key)}},
        }
        (self._workdir / "config.yml").write_text(json.dumps(config))  # YAML is a JSON superset
        log = lab.spawn_service("registry", [registry_bin, "serve", str(self._workdir / "config.yml")])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = subprocess.run(lab.netns_argv([
                sys.executable, "-c", "import ssl, sys, urllib.request; urllib.request.urlopen("
                "sys.argv[1], context=ssl.create_default_context(cafile=sys.argv[2]), timeout=5)",
                f"https://{self.endpoint}/v2/", f"{self._workdir}/ca/ca.crt"]), capture_output=True)
            if probe.returncode == 0:
                return
            time.sleep(0.3)
        tail = Path(log).read_text(errors="replace")[-2000:] if log and Path(log).exists() else ""
        raise ImageError(f"the registry did not answer on {self.endpoint} within {timeout:.0f}s: {tail}")

    def stop(self) -> None:
        """Remove the registry's certificate files; the process itself is stopped by the lab
        that spawned it (lab.spawn_service registers it for teardown)."""
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _skopeo(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        assert self._lab is not None and self._workdir is not None
        return subprocess.run(self._lab.netns_argv([require_tool("skopeo"), *args]), capture_output=True,
                              timeout=timeout)

    def missing(self, standins: Sequence[StandIn]) -> list[StandIn]:
        """The stand-ins the registry does not hold with their current recipe (one ``skopeo
        inspect`` each, four at a time), in the order given."""
        from concurrent.futures import ThreadPoolExecutor

        def current(standin: StandIn) -> bool:
            _, path, tag = split_reference(standin.reference)
            proc = self._skopeo("inspect", "--cert-dir", str(self._workdir / "ca"),
                                f"docker://{self.endpoint}/{path}:{tag}", timeout=300)
            labels = (json.loads(proc.stdout).get("Labels") or {}) if proc.returncode == 0 else {}
            return labels.get(LABEL_RECIPE) == standin.recipe

        with ThreadPoolExecutor(max_workers=4) as pool:
            held = list(pool.map(current, standins))
        return [s for s, ok in zip(standins, held) if not ok]

    def push(self, standins: Sequence[StandIn], docker_host: str) -> None:
        """Copy each stand-in from the daemon at ``docker_host`` into the registry under its
        repository path (``skopeo copy`` run in the namespace; blobs already held are skipped)."""
        for standin in standins:
            _, path, tag = split_reference(standin.reference)
            proc = self._skopeo("copy", "--quiet", "--src-daemon-host", docker_host,
                                "--dest-cert-dir", str(self._workdir / "ca"),
                                f"docker-daemon:{standin.reference}",
                                f"docker://{self.endpoint}/{path}:{tag}", timeout=1800)
            if proc.returncode != 0:
                raise ImageError(f"pushing {standin.reference}: "
                                 + proc.stderr.decode(errors="replace")[-2000:])

    def box_preparation(self) -> BoxPreparation:
        """The files, /etc/hosts lines and commands that make a box pull every stack reference
        from this registry (see :class:`BoxPreparation`)."""
        if self.address is None:
            raise ImageError("the registry is not started")
        files = {f"/etc/docker/certs.d/{host}/ca.crt": self.ca.cert_pem for host in self.hosts}
        files["/usr/local/share/ca-certificates/platform-rehearsal-ca.crt"] = self.ca.cert_pem
        return BoxPreparation(files=files,
                              hosts_lines=(f"{self.address} {' '.join(self.hosts)}",),
                              commands=(("update-ca-certificates",),),
                              extra_hosts={host: self.address for host in self.hosts})


def ensure_standins(contracts: Sequence[ImageContract], lab: Any, registry: Registry,
                    docker_client: Any, cache_dir: Path = IMAGE_CACHE) -> tuple[list[StandIn], dict[str, float]]:
    """Plan the stand-ins, start ``registry`` in ``lab`` and make it hold every one: build (or
    load from cache) and push only what it lacks. Returns the stand-ins and timings (seconds:
    ``registry``, ``check``, plus :func:`build_standins`'s, and ``push``)."""
    standins = plan_standins(contracts, trust_pem=registry.ca.cert_pem)
    timings: dict[str, float] = {}
    started = time.monotonic()
    registry.hosts = tuple(dict.fromkeys([*registry.hosts,
                                          *(split_reference(s.reference)[0] for s in standins)]))
    registry.start(lab)
    timings["registry"] = time.monotonic() - started
    started = time.monotonic()
    lacking = registry.missing(standins)
    timings["check"] = time.monotonic() - started
    if lacking:
        timings.update(build_standins(lacking, docker_client, cache_dir, lab.harness_docker_host))
        started = time.monotonic()
        registry.push(lacking, lab.harness_docker_host)
        timings["push"] = time.monotonic() - started
    return standins, timings
