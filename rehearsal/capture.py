"""Capture: run the stack's own program on the mock engine and extract every host it configures
over SSH, with every remote command and Docker resource it sends to that host.

The mock engine is ``synth``'s (``synth.run.synth_capture``); the rehearsal only changes what the
mocks answer where a host must be able to use the value for real:

- each product's ``platform:<product>_ssh_private_key`` is a freshly generated Ed25519 key (the
  boxes trust its public half), and every other missing secret a random token;
- ``tls:*`` resources answer real keys and certificates (an internal CA whose leaf a real server
  must load), ``getDatabaseCa`` answers the lab's test CA when one is given;
- ``RemoteImage.imageId`` answers the image reference, so a container's ``image`` input is known.

The keys, certificates and secrets themselves are ``rehearsal/capture_answers.py``.

Shapes: ``StackCapture.hosts`` maps host name (the component's name, e.g. ``pencom-staging-edge``)
to ``Host``; ``StackCapture.steps`` lists every ``Step`` in dependency order (see ``order``).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Optional, Sequence

from rehearsal.capture_answers import TLS_ANSWERS, CaptureMemory, plain, public_openssh, rehearsal_config

COMMAND = "command:remote:Command"
NETWORK = "docker:index/network:Network"
IMAGE = "docker:index/remoteImage:RemoteImage"
CONTAINER = "docker:index/container:Container"
DOCKER_PROVIDER = "pulumi:providers:docker"
DROPLET = "digitalocean:index/droplet:Droplet"
STEP_KINDS = {COMMAND: "command", NETWORK: "network", IMAGE: "image", CONTAINER: "container"}
HOST_COMPONENTS = {"platform:components:OnPremVps": "onprem", "platform:components:DropletStack": "droplet"}


class CaptureError(Exception):
    """The stack's capture has a shape the rehearsal cannot map to hosts (names the resource)."""


@dataclass
class Host:
    """One machine the stack configures over SSH.

    ``address`` is the stack's address for SSH (a mock engine answer for droplets); ``bastion``
    the name of the jump host; ``user_data`` the droplet's cloud-init document (None on-prem).
    ``private_key`` is the OpenSSH private key the stack connects with, ``public_key`` its public
    half (for the box's authorized_keys / the droplet's DigitalOcean key)."""

    name: str
    product: str
    kind: str
    address: str
    user: str
    port: int = 22
    bastion: Optional[str] = None
    private_address: Optional[str] = None
    tier: Optional[str] = None
    docker_host: Optional[str] = None
    ssh_opts: list[str] = field(default_factory=list)
    user_data: Optional[str] = None
    private_key: str = ""
    public_key: str = ""


@dataclass
class Step:
    """One resource the converge applies to ``host``: kind ``command``, ``network``, ``image``
    or ``container``; ``inputs`` are the captured (revealed) inputs; ``depends`` the URNs of the
    steps it waits for."""

    urn: str
    name: str
    kind: str
    host: str
    inputs: dict[str, Any]
    depends: list[str] = field(default_factory=list)
    parent: Optional[str] = None
    delete_before_replace: bool = False
    """The resource's ``delete_before_replace`` option: a replacement removes the old one first."""


@dataclass
class StackCapture:
    stack: str
    hosts: dict[str, Host]
    steps: list[Step]
    products: list[str]
    database_hosts: list[str] = field(default_factory=list)
    """Names of managed databases the hosts talk to (the lab resolves them to stand-ins)."""
    state: Optional[dict[str, Any]] = field(default=None, repr=False, compare=False)
    """The synth document the capture came from (secrets revealed, stack addresses): what the
    reachability matrix's expected side reads. Not part of ``to_json`` (the converge plan)."""
    stack_config: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The stack file's ``config`` mapping, as written."""

    def to_json(self) -> dict[str, Any]:
        return {"stack": self.stack, "products": self.products,
                "hosts": {n: asdict(h) for n, h in self.hosts.items()},
                "steps": [asdict(s) for s in self.steps], "database_hosts": self.database_hosts}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "StackCapture":
        return cls(stack=doc["stack"], products=list(doc["products"]),
                   hosts={n: Host(**h) for n, h in doc["hosts"].items()},
                   steps=[Step(**s) for s in doc["steps"]],
                   database_hosts=list(doc.get("database_hosts", [])))

    def host_steps(self, host: str) -> list[Step]:
        return [s for s in self.steps if s.host == host]



def rehearsal_mocks(database_ca_pem: Optional[str] = None, memory: Optional[CaptureMemory] = None,
                    reissue: Iterable[str] = ()):
    """``SynthMocks`` whose answers a real host can use (see the module docstring); with
    ``memory``, the ``tls:*`` answers are those of the earlier capture for unchanged inputs,
    except for the resources named in ``reissue``."""
    from synth.mock_monitor import SynthMocks

    invokes = {}
    if database_ca_pem:
        invokes["digitalocean:index/getDatabaseCa:getDatabaseCa"] = \
            lambda args: {"certificate": database_ca_pem, "clusterId": args.get("clusterId", "")}
    invokes["tls:index/getPublicKey:getPublicKey"] = lambda args: {
        "publicKeyOpenssh": public_openssh(plain(args["privateKeyOpenssh"])) + "\n"}
    tls = {typ: memory.remembered(typ, answer, reissue) if memory is not None else answer
           for typ, answer in TLS_ANSWERS.items()}
    return SynthMocks(invoke_answers=invokes, resource_outputs={
        **tls, IMAGE: lambda n, i: {"imageId": i["name"], "repoDigest": i["name"]},
    })


# -- extraction -------------------------------------------------------------------------------

def _product_of(urn: str, by_urn: dict[str, dict]) -> str:
    current: Optional[str] = urn
    while current:
        resource = by_urn.get(current)
        if resource is None:
            break
        if resource["type"].startswith("platform:products:"):
            return resource["name"]
        current = resource.get("parent")
    raise CaptureError(f"{urn}: no product component above it")


def _ssh_target(url: str) -> tuple[str, str]:
    if not url.startswith("ssh://") or "@" not in url:
        raise CaptureError(f"docker provider host {url!r} is not ssh://user@host")
    user, host = url[len("ssh://"):].split("@", 1)
    return user, host.split(":", 1)[0]


def extract(state: dict[str, Any], keys: dict[str, tuple[str, str]],
            products: Optional[Iterable[str]] = None) -> StackCapture:
    """Hosts and steps from a revealed synth state (``Capture.to_json(reveal=True)``).

    Raises CaptureError when a command or Docker resource cannot be placed on a host."""
    resources = state["resources"]
    by_urn = {r["urn"]: r for r in resources}
    hosts: dict[str, Host] = {}
    by_address: dict[str, str] = {}
    provider_host: dict[str, str] = {}
    for r in resources:
        if r["type"] != DOCKER_PROVIDER:
            continue
        component = by_urn.get(r.get("parent") or "")
        if component is None or component["type"] not in HOST_COMPONENTS:
            raise CaptureError(f"{r['urn']}: docker provider outside a host component")
        user, address = _ssh_target(r["inputs"]["host"])
        import json as _json

        opts = r["inputs"].get("sshOpts") or []
        opts = _json.loads(opts) if isinstance(opts, str) else list(opts)
        product = _product_of(component["urn"], by_urn)
        name = component["name"]
        private, public = keys.get(product, ("", ""))
        hosts[name] = Host(name=name, product=product, kind=HOST_COMPONENTS[component["type"]],
                           address=address, user=user, docker_host=r["inputs"]["host"], ssh_opts=opts,
                           private_address=component["inputs"].get("privateAddress"),
                           tier=component["inputs"].get("tier"), private_key=private, public_key=public)
        by_address[address] = name
        provider_host[r["urn"]] = name
    for r in resources:
        if r["type"] == DROPLET:
            component = by_urn.get(r.get("parent") or "")
            if component and component["name"] in hosts:
                hosts[component["name"]].user_data = r["inputs"].get("userData")
    steps: list[Step] = []
    for r in resources:
        kind = STEP_KINDS.get(r["type"])
        if kind is None:
            continue
        if kind == "command":
            connection = r["inputs"].get("connection") or {}
            host = by_address.get(connection.get("host"))
            if host is None:
                raise CaptureError(f"{r['urn']}: connects to {connection.get('host')!r}, which is no "
                                   "host with a docker provider")
            h = hosts[host]
            h.port = int(connection.get("port", 22))
            if connection.get("user") and connection["user"] != h.user:
                # The bootstrap path (an existing sudo user creates the deploy user) is kept as is.
                pass
            proxy = connection.get("proxy")
            if proxy:
                if proxy.get("host") not in by_address:
                    raise CaptureError(f"{r['urn']}: jump host {proxy.get('host')!r} is not a captured host")
                h.bastion = by_address[proxy["host"]]
        else:
            host = provider_host.get(r.get("provider") or "")
            if host is None:
                raise CaptureError(f"{r['urn']}: {kind} with no SSH docker provider")
        depends = list(r.get("dependencies") or [])
        if r.get("provider") in by_urn:
            # Pulumi configures a provider only after its own dependencies (the host's setup
            # scripts), and a resource only after its provider: they are the resource's too.
            depends += list(by_urn[r["provider"]].get("dependencies") or [])
        steps.append(Step(urn=r["urn"], name=r["name"], kind=kind, host=host, inputs=r["inputs"],
                          depends=depends, parent=r.get("parent"),
                          delete_before_replace=bool(r.get("delete_before_replace"))))
    wanted = set(products) if products else None
    if wanted:
        unknown = wanted - {h.product for h in hosts.values()}
        if unknown:
            raise CaptureError(f"--product {sorted(unknown)}: the stack has no host of that product "
                               f"(products with hosts: {sorted({h.product for h in hosts.values()})})")
        hosts = {n: h for n, h in hosts.items() if h.product in wanted}
        # A jump host of another product stays: a host is unreachable without it.
        steps = [s for s in steps if s.host in hosts]
    _expand_dependencies(steps, by_urn)
    database_hosts = sorted({
        v for r in resources if r["type"] == "digitalocean:index/databaseCluster:DatabaseCluster"
        for v in _cluster_names(r["name"])})
    return StackCapture(stack=state["stack"], hosts=hosts, steps=order(steps),
                        products=sorted({h.product for h in hosts.values()}),
                        database_hosts=database_hosts)


def _cluster_names(name: str) -> list[str]:
    from synth import mockdata

    outputs = mockdata.database_cluster(name, {})
    return [outputs["host"], outputs["privateHost"]]


def _expand_dependencies(steps: list[Step], by_urn: dict[str, dict]) -> None:
    """A dependency on a component means every step below it (as Pulumi waits for its children);
    a dependency on a resource that is no step (a droplet, a password) is already satisfied."""
    step_urns = {s.urn for s in steps}
    children: dict[str, list[str]] = {}
    for urn, r in by_urn.items():
        if r.get("parent"):
            children.setdefault(r["parent"], []).append(urn)

    def below(urn: str) -> Iterable[str]:
        for child in children.get(urn, []):
            yield child
            yield from below(child)

    for s in steps:
        expanded: set[str] = set()
        for dep in s.depends:
            if dep in step_urns:
                expanded.add(dep)
            elif by_urn.get(dep, {}).get("custom") is False:
                expanded |= {c for c in below(dep) if c in step_urns}
        expanded.discard(s.urn)
        s.depends = sorted(expanded)


def order(steps: Sequence[Step]) -> list[Step]:
    """Topological order on ``depends`` (Kahn), ties broken by URN so two runs agree.

    Raises CaptureError naming the steps of a cycle."""
    by_urn = {s.urn: s for s in steps}
    waiting = {s.urn: {d for d in s.depends if d in by_urn} for s in steps}
    done: list[Step] = []
    ready = sorted(u for u, deps in waiting.items() if not deps)
    placed: set[str] = set()
    while ready:
        urn = ready.pop(0)
        done.append(by_urn[urn])
        placed.add(urn)
        newly = [u for u, deps in waiting.items() if u not in placed and u not in ready
                 and urn in deps and deps <= placed]
        ready = sorted(ready + newly)
    if len(done) != len(steps):
        stuck = sorted(set(by_urn) - placed)
        raise CaptureError(f"dependency cycle among: {stuck[:5]}")
    return done


def capture(stack: str, *, products: Optional[Iterable[str]] = None, stack_file=None,
            database_ca_pem: Optional[str] = None, memory: Optional[CaptureMemory] = None,
            reissue: Iterable[str] = ()) -> StackCapture:
    """Run the stack's program with rehearsal secrets and mocks; extract its hosts and steps.
    ``memory`` (kept by the caller across captures): a later capture keeps the keys, secrets
    and certificates of the earlier one (see ``CaptureMemory``); ``reissue``: names of ``tls:*``
    resources to answer anew (a forced certificate re-issue).

    Raises ConfigError (invalid stack config) or CaptureError (unmappable capture)."""
    from synth.engine import PROJECT_ROOT, program_from_main, run_program

    file, keys = rehearsal_config(stack, stack_file, memory)
    run = run_program(program_from_main(PROJECT_ROOT), stack=stack, config=file.config,
                      secret_keys=file.secret_keys, project=file.project,
                      mocks=rehearsal_mocks(database_ca_pem, memory, reissue))
    state = run.to_json(reveal=True)
    captured = extract(state, keys, products)
    import yaml

    captured.state = state
    captured.stack_config = dict(yaml.safe_load(file.path.read_text()).get("config") or {})
    return captured


def container_name(step: Step) -> str:
    """The name Docker gets: the resource name and a suffix, as Pulumi auto-names it (stable
    across runs here, so the second converge finds the container the first one made)."""
    return step.inputs.get("name") or f"{step.name}-{hashlib.sha256(step.urn.encode()).hexdigest()[:7]}"
