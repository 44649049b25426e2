"""What every Docker host shares, droplet or on-prem: idempotent setup over SSH, a Docker
provider over SSH, a bridge network, and its ``Workload`` (files, containers, TLS ingress,
datastore inits, admin-session logging), all built by the constructor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from components import egress, hostsetup, wireguard
from components.containers import ContainerSpec
from components.ingress import Ingress, ingress_scripts, nginx_spec
from components.remote import SshTarget, run_script
from components.host_containers import datastore_init, run_containers
from components.service_files import HostFile, reload_for, service_directories


# Registries whose images need credentials to pull: DigitalOcean's is always private; GHCR is
# private unless the package is made public.
PRIVATE_REGISTRIES = ("registry.digitalocean.com", "ghcr.io")


def image_registry(image: str) -> str:
    """The registry host of an image reference (``docker.io`` when the first part names no host,
    as Docker's reference grammar reads it: a host has a dot or a port, or is localhost)."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def registry_auth(images: Sequence[str], docker_config: Optional[pulumi.Input[str]]
                  ) -> list[docker.ProviderRegistryAuthArgs]:
    """Credentials for the private registries ``images`` are pulled from.

    ``docker_config`` is a secret Docker ``config.json`` text (``{"auths": {host: {"auth":
    base64("user:token")}}}``, as ``doctl registry docker-config`` prints it); the provider picks
    each registry's entry from it (``config_file_content`` of pulumi_docker's
    ``ProviderRegistryAuthArgs``). None: no credentials, public images only."""
    if docker_config is None:
        return []
    hosts = sorted({image_registry(i) for i in images} & set(PRIVATE_REGISTRIES))
    return [docker.ProviderRegistryAuthArgs(address=host, config_file_content=docker_config)
            for host in hosts]


@dataclass(frozen=True)
class DatastoreInit:
    """A datastore's idempotent init (SQL or JS in ``text``, kept at ``path`` on the host), fed
    to its ``service`` container through ``apply`` once ``ready`` succeeds in it, after the
    containers start (``host_containers.datastore_init``); ``resource`` is its resource's name."""

    resource: str
    service: str
    text: pulumi.Input[str]
    ready: str
    apply: str
    path: str


@dataclass(frozen=True)
class SessionCollector:
    """Makes the host the collector of its product's admin sessions, listening on ``address``
    (``hostsetup.session_collector_section``); the script is secret (the key)."""

    address: str
    cert_pem: pulumi.Input[str]
    key_pem: pulumi.Input[str]
    ca_pem: pulumi.Input[str]
    archive: bool = False
    """Hand what it receives to the host's off-host archive (``SessionArchive``) too."""


@dataclass(frozen=True)
class Workload:
    """What a Docker host runs, all given to its constructor: ``containers`` (and nginx with
    certificates when ``ingress`` is given), each service's ``secret_env`` and ``files``,
    ``inits`` run once their datastore is up, and the admin-session logging the host ships
    (``sessions``) or collects (``collector``). A value that exists only once the host does (a
    record of its address) is a ``pulumi.deferred_output()`` resolved after it."""

    containers: Sequence[ContainerSpec] = ()
    secret_env: Mapping[str, Mapping[str, pulumi.Input[str]]] = field(default_factory=dict)
    files: Mapping[str, Sequence[HostFile]] = field(default_factory=dict)
    ingress: Optional[Ingress] = None
    inits: Sequence[DatastoreInit] = ()
    sessions: Optional[hostsetup.SessionShipping] = None
    collector: Optional[SessionCollector] = None


@dataclass(frozen=True)
class HostBasis:
    """What a kind of Docker host provides for the rest to be built on: how to reach it
    (``ssh``; the Docker provider's ``docker_address`` and ``ssh_opts``), its data directory,
    its setup ``scripts`` (run in order, after ``after``), its egress lock and registries."""

    ssh: SshTarget
    docker_address: pulumi.Input[str]
    data_dir: str
    scripts: Mapping[str, pulumi.Input[str]]
    after: Sequence[pulumi.Resource] = ()
    ssh_opts: Sequence[str] = ()
    egress: Optional[egress.EgressLock] = None
    registries: Sequence[docker.ProviderRegistryAuthArgs] = ()


class DockerHost(pulumi.ComponentResource):
    """Base of ``DropletStack`` and ``OnPremVps``. Its constructor builds the whole host, in
    order: the machine (``_basis``, the kind's own), the setup scripts, the Docker provider and
    network, the ``DOCKER-USER`` rules (``_docker_user_rules``), the admin-session logging,
    the ``workload``'s files, containers, ingress certificates and datastore inits; then it
    registers ``_outputs()``, last. Nothing is added to a host after it is constructed.

    Attributes for what comes after it: ``ssh``, ``data_dir``, ``containers`` (service ->
    container), ``inits`` (resource name -> command), ``files_delivered`` (the resources after
    which the host's files are in place: what a command that reads them, a backup runner,
    depends on)."""

    ssh: SshTarget
    data_dir: str
    files_delivered: list[pulumi.Resource]
    containers: dict[str, docker.Container]
    inits: dict[str, pulumi.Resource]
    private_address: Optional[str] = None
    wireguard_public_key: Optional[pulumi.Output[str]] = None
    """The public half of the host's management-network key (when it is an endpoint)."""

    def __init__(self, t: str, name: str, props: Optional[dict], opts: Optional[pulumi.ResourceOptions],
                 workload: Optional[Workload]) -> None:
        super().__init__(t, name, props, opts)
        workload = workload or Workload()
        basis = self._basis(name)
        self.ssh, self.data_dir, self.egress = basis.ssh, basis.data_dir, basis.egress
        setup_done = self._setup(name, basis)
        provider, network, own = self._docker(name, basis, setup_done)
        specs = list(workload.containers)
        lock = basis.egress
        if lock is not None:
            unknown = ({*lock.static_addresses(), *(n.container for n in lock.own_networks)}
                       - {s.name for s in specs})
            if unknown:
                raise ValueError(f"{name}: egress exemptions or allow-lists for containers that are not "
                                 f"deployed: {sorted(unknown)}")
        if workload.sessions is not None:
            self._ship_sessions(name, workload.sessions, setup_done)
        # DOCKER-USER before any container starts; the containers wait for it.
        firewall = run_script(f"{name}-docker-firewall", self.ssh,
                              hostsetup.script(egress.docker_user_section(self._docker_user_rules(specs))),
                              parent=self, depends_on=setup_done)
        setup_done = [*setup_done, firewall]
        if workload.collector is not None:
            self._collect_sessions(name, workload.collector, setup_done)
        self.files_delivered = list(setup_done)
        ingress_ready: list[pulumi.Resource] = []
        ingress = workload.ingress
        if ingress is not None:
            config_script, cert_script = ingress_scripts(name, self.data_dir, ingress)
            ingress_ready = [run_script(f"{name}-ingress-config", self.ssh, config_script,
                                        parent=self, depends_on=setup_done)]
            specs.append(nginx_spec(name, self.data_dir, ingress))
        mounts: dict = {}
        if workload.files:
            images = {spec.name: spec.image for spec in specs}
            written = []
            for service, service_files in sorted(workload.files.items()):
                delivery = service_directories(name, self.data_dir, service, service_files,
                                               reload_for(images.get(service)))
                mounts[service] = delivery.mounts
                previous: list[pulumi.Resource] = []
                for suffix, script in delivery.scripts.items():
                    previous = [run_script(f"{name}-{suffix}", self.ssh, script, parent=self,
                                           depends_on=[*setup_done, *previous])]
                    written += previous
            self.files_delivered = written
        self.containers = run_containers(
            name, specs, parent=self, provider=provider, network=network.name,
            secret_env=workload.secret_env, extra_mounts=mounts, private_address=self.private_address,
            depends_on=self.files_delivered + ingress_ready,
            static_addresses=lock.static_addresses() if lock else None,
            own_networks={n.container: (own[n.container].name, n.peers) for n in lock.own_networks} if lock else None,
        )
        if ingress is not None:
            run_script(f"{name}-certificates", self.ssh, cert_script, parent=self,
                       depends_on=[self.containers["nginx"], *ingress.depends_on])
        self.inits = {init.resource: datastore_init(
            init.resource, self.ssh, stack=name, service=init.service, text=init.text, ready=init.ready,
            apply=init.apply, path=init.path, parent=self, depends_on=[self.containers[init.service]])
            for init in workload.inits}
        self.register_outputs(self._outputs())

    def _basis(self, name: str) -> HostBasis:
        """The kind's own resources (the machine, its firewall) and what the rest is built on."""
        raise NotImplementedError

    def _docker_user_rules(self, containers: Sequence[ContainerSpec]) -> str:
        """The ``DOCKER-USER`` rules (``egress.render_docker_user_rules``) for ``containers``."""
        raise NotImplementedError

    def _wireguard_script(self, name: str, endpoint: Optional[wireguard.Endpoint]
                          ) -> Optional[pulumi.Output[str]]:
        """The host's ``wireguard`` setup script (a secret: it holds the private key) from a
        generated key (``{name}-wg-key``, ``random.RandomBytes``: 32 bytes, kept only in the
        encrypted state), and the key's public half on ``wireguard_public_key``. None without an
        endpoint."""
        if endpoint is None:
            return None
        key = random.RandomBytes(f"{name}-wg-key", length=wireguard.KEY_BYTES,
                                 opts=pulumi.ResourceOptions(parent=self))
        # The public half of a secret key is not secret: peers put it in their configs.
        self.wireguard_public_key = pulumi.Output.unsecret(key.base64.apply(wireguard.public_key))
        return pulumi.Output.secret(key.base64.apply(
            lambda private: hostsetup.script(wireguard.wireguard_section(endpoint, private))))

    def _outputs(self) -> dict:
        raise NotImplementedError

    def _setup(self, name: str, basis: HostBasis) -> list[pulumi.Resource]:
        """Each script a remote command, in order, each re-run only when its text changes."""
        previous = list(basis.after)
        for script_name, text in basis.scripts.items():
            previous = [run_script(f"{name}-setup-{script_name}", self.ssh, text, parent=self,
                                   depends_on=previous)]
        return previous

    def _docker(self, name: str, basis: HostBasis, setup_done: Sequence[pulumi.Resource]
                ) -> tuple[docker.Provider, docker.Network, dict[str, docker.Network]]:
        """The Docker provider over SSH, the host's bridge network and the networks of their own
        (container -> network ``{name}-{container}``, the lock's ``own_networks``): with an egress
        lock, fixed bridge names (the host's packet filter matches them) and the lock's subnets,
        Docker assigning from the host network's dynamic range (the rest is left for fixed
        addresses) and from the whole of an own network's."""
        lock = basis.egress
        provider = docker.Provider(
            f"{name}-docker",
            host=pulumi.Output.from_input(basis.docker_address).apply(lambda a: f"ssh://{hostsetup.DEPLOY_USER}@{a}"),
            ssh_opts=["-o", "StrictHostKeyChecking=accept-new", "-o", "ServerAliveInterval=30",
                      *basis.ssh_opts],
            registry_auth=list(basis.registries) or None,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(setup_done)),
        )
        network = docker.Network(
            f"{name}-network", name=name, driver="bridge",
            options={"com.docker.network.bridge.name": lock.bridge} if lock and lock.bridge else None,
            ipam_configs=[docker.NetworkIpamConfigArgs(subnet=lock.subnet, ip_range=lock.dynamic_range())]
            if lock and lock.subnet else None,
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )
        own = {n.container: docker.Network(
            f"{name}-{n.container}-network", name=f"{name}-{n.container}", driver="bridge",
            options={"com.docker.network.bridge.name": n.bridge},
            ipam_configs=[docker.NetworkIpamConfigArgs(subnet=n.subnet)],
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        ) for n in (lock.own_networks if lock else ())}
        return provider, network, own

    def _ship_sessions(self, name: str, shipping: hostsetup.SessionShipping,
                       setup_done: Sequence[pulumi.Resource]) -> None:
        """Ships the host's admin-session audit records to the collector
        (``hostsetup.session_shipping_section``), after the baseline installed rsyslog."""
        text = pulumi.Output.from_input(shipping.ca_pem).apply(
            lambda ca: hostsetup.script(hostsetup.session_shipping_section(shipping, ca)))
        run_script(f"{name}-session-shipping", self.ssh, text, parent=self, depends_on=list(setup_done))

    def _collect_sessions(self, name: str, c: SessionCollector, setup_done: Sequence[pulumi.Resource]) -> None:
        text = pulumi.Output.secret(pulumi.Output.all(c.cert_pem, c.key_pem, c.ca_pem).apply(
            lambda parts: hostsetup.script(hostsetup.session_collector_section(c.address, *parts, archive=c.archive))))
        run_script(f"{name}-session-collector", self.ssh, text, parent=self, depends_on=list(setup_done))
