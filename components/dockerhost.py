"""What every Docker host shares, droplet or on-prem: idempotent setup over SSH, a Docker
provider over SSH, a bridge network, and ``deploy`` for files, containers and TLS ingress."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from components import egress, hostsetup, wireguard
from components.containers import ContainerSpec
from components.ingress import Ingress, ingress_scripts, nginx_spec
from components.remote import SshTarget, run_script
from components.host_containers import run_containers
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


class DockerHost(pulumi.ComponentResource):
    """Base of ``DropletStack`` and ``OnPremVps``. Subclasses call ``_setup`` and ``_docker`` in
    their constructor and implement ``_outputs``."""

    ssh: SshTarget
    data_dir: str
    setup_done: list[pulumi.Resource]
    files_delivered: list[pulumi.Resource]
    """The resources after which the host's files are in place (setup, firewall, each service's
    files): what a command that reads them (a backup runner) depends on."""
    private_address: Optional[str] = None
    wireguard_public_key: Optional[pulumi.Output[str]] = None
    """The public half of the host's management-network key (when it is an endpoint)."""
    _deploy_started = False
    _deployed = False

    def _setup(self, name: str, scripts: Mapping[str, str],
               depends_on: Sequence[pulumi.Resource]) -> None:
        """Each script a remote command, in order, each re-run only when its text changes."""
        previous = list(depends_on)
        for script_name, text in scripts.items():
            previous = [run_script(f"{name}-setup-{script_name}", self.ssh, text, parent=self,
                                   depends_on=previous)]
        self.setup_done = previous
        self.files_delivered = list(previous)

    def _docker(self, name: str, address: pulumi.Input[str], ssh_opts: Sequence[str] = (),
                bridge: Optional[str] = None, subnet: Optional[tuple[str, str]] = None,
                registries: Sequence[docker.ProviderRegistryAuthArgs] = ()) -> None:
        """``subnet`` is (subnet, range Docker assigns from), leaving the rest for fixed addresses;
        ``registries`` are the private registries' credentials (``registry_auth``)."""
        self.docker_provider = docker.Provider(
            f"{name}-docker",
            host=pulumi.Output.from_input(address).apply(lambda a: f"ssh://{hostsetup.DEPLOY_USER}@{a}"),
            ssh_opts=["-o", "StrictHostKeyChecking=accept-new", "-o", "ServerAliveInterval=30",
                      *ssh_opts],
            registry_auth=list(registries) or None,
            opts=pulumi.ResourceOptions(parent=self, depends_on=self.setup_done),
        )
        self.network = docker.Network(
            f"{name}-network", name=name, driver="bridge",
            # A fixed interface name lets the host's packet filter match the containers' traffic.
            options={"com.docker.network.bridge.name": bridge} if bridge else None,
            ipam_configs=[docker.NetworkIpamConfigArgs(subnet=subnet[0], ip_range=subnet[1])] if subnet else None,
            opts=pulumi.ResourceOptions(parent=self, provider=self.docker_provider),
        )

    def _start_deploy(self) -> None:
        # deploy() registers the outputs: a second call would add children after them.
        if self._deploy_started or self._deployed:
            raise RuntimeError(f"{self.pulumi_resource_name}: deploy() runs once per host; pass every "
                               "container to one call")
        self._deploy_started = True

    def _docker_firewall(self, rules_text: str) -> None:
        """Installs and applies the ``DOCKER-USER`` rules (``egress.render_docker_user_rules``)
        before any container starts; the containers wait for it. The first step of a
        subclass's ``deploy``."""
        self._start_deploy()
        firewall = run_script(f"{self.pulumi_resource_name}-docker-firewall", self.ssh,
                              hostsetup.script(egress.docker_user_section(rules_text)),
                              parent=self, depends_on=self.setup_done)
        self.setup_done = [*self.setup_done, firewall]
        self.files_delivered = [*self.files_delivered, firewall]

    def ship_sessions(self, shipping: hostsetup.SessionShipping) -> None:
        """Ships the host's admin-session audit records to the monitoring host's collector
        (``hostsetup.session_shipping_section``), after the baseline installed rsyslog."""
        text = pulumi.Output.from_input(shipping.ca_pem).apply(
            lambda ca: hostsetup.script(hostsetup.session_shipping_section(shipping, ca)))
        run_script(f"{self.pulumi_resource_name}-session-shipping", self.ssh, text, parent=self,
                   depends_on=self.setup_done)

    def collect_sessions(self, address: str, cert_pem: pulumi.Input[str], key_pem: pulumi.Input[str],
                         ca_pem: pulumi.Input[str]) -> None:
        """Makes this host the collector of its product's admin sessions, listening on its
        ``address`` (``hostsetup.session_collector_section``); the script is secret (the key)."""
        text = pulumi.Output.secret(pulumi.Output.all(cert_pem, key_pem, ca_pem).apply(
            lambda parts: hostsetup.script(hostsetup.session_collector_section(address, *parts))))
        run_script(f"{self.pulumi_resource_name}-session-collector", self.ssh, text, parent=self,
                   depends_on=self.setup_done)

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

    def deploy(
        self,
        containers: Sequence[ContainerSpec],
        *,
        secret_env: Mapping[str, Mapping[str, pulumi.Input[str]]] | None = None,
        files: Mapping[str, Sequence[HostFile]] | None = None,
        ingress: Optional[Ingress] = None,
        static_addresses: Mapping[str, str] | None = None,
    ) -> dict[str, docker.Container]:
        """Run ``containers`` (and nginx with certificates when ``ingress`` is given), then
        register the component's outputs. Called once, after what the containers need exists;
        a second call raises ``RuntimeError`` (it would register the outputs twice)."""
        name = self.pulumi_resource_name
        if not self._deploy_started or self._deployed:
            self._start_deploy()
        specs = list(containers)
        ingress_ready: list[pulumi.Resource] = []
        if ingress is not None:
            config_script, cert_script = ingress_scripts(name, self.data_dir, ingress)
            ingress_ready = [run_script(f"{name}-ingress-config", self.ssh, config_script,
                                        parent=self, depends_on=self.setup_done)]
            specs.append(nginx_spec(name, self.data_dir, ingress))
        mounts: dict = {}
        if files:
            images = {spec.name: spec.image for spec in specs}
            written = []
            for service, service_files in sorted(files.items()):
                delivery = service_directories(name, self.data_dir, service, service_files,
                                               reload_for(images.get(service)))
                mounts[service] = delivery.mounts
                written += [run_script(f"{name}-{suffix}", self.ssh, script, parent=self,
                                       depends_on=self.setup_done)
                            for suffix, script in delivery.scripts.items()]
            self.files_delivered = written
        created = run_containers(
            name, specs, parent=self, provider=self.docker_provider, network=self.network.name,
            secret_env=secret_env or {}, extra_mounts=mounts, private_address=self.private_address,
            depends_on=self.files_delivered + ingress_ready, static_addresses=static_addresses,
        )
        if ingress is not None:
            run_script(f"{name}-certificates", self.ssh, cert_script, parent=self,
                       depends_on=[created["nginx"], *ingress.depends_on])
        self.register_outputs(self._outputs())
        self._deployed = True
        return created
