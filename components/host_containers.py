"""What runs in a Docker host's containers: each service's container (pinned image, hardened
by ``containers.container_plan``, secret env one variable per secret) and the one-shot,
idempotent init of a datastore inside its running container."""

from __future__ import annotations

from typing import Mapping, Sequence

import pulumi
import pulumi_docker as docker

from components import hostsetup
from components.containers import ContainerSpec, Mount, container_plan, replaced_delete_first
from components.remote import SshTarget, run_script


def run_containers(
    stack: str,
    specs: Sequence[ContainerSpec],
    *,
    parent: pulumi.Resource,
    provider: docker.Provider,
    network: pulumi.Input[str],
    secret_env: Mapping[str, Mapping[str, pulumi.Input[str]]],
    extra_mounts: Mapping[str, Sequence[Mount]] | None = None,
    private_address: str | None = None,
    depends_on: Sequence[pulumi.Resource] = (),
    static_addresses: Mapping[str, str] | None = None,
    own_networks: Mapping[str, tuple[pulumi.Input[str], Sequence[str]]] | None = None,
) -> dict[str, docker.Container]:
    """Pull each pinned image and run its container with the hardening of ``container_plan``.

    ``static_addresses`` pins containers to addresses on the network (egress exemptions and
    allow-lists match them). Containers are not given fixed names: Pulumi auto-names them after the resource plus a
    random suffix, drawn anew for a replacement, and they are found by their network alias, so a
    replacement never collides with the old one. ``own_networks`` (container -> (network name,
    peers)) puts a container on a network of its own instead of ``network`` (its alias there),
    and adds that network as the second network of each peer.

    Deploys: a stateless container is replaced create-before-delete (``delete_before_replace``
    set to False explicitly, which overrides a provider default): the new container starts next
    to the old one with the same alias, the provider's ``wait`` holds the update until Docker
    calls it healthy (``wait_timeout`` from its healthcheck, at most 600 s), nginx resolves the
    alias every second and retries a refused or failed connection on the other address, and the
    old container is removed last. A new container that never becomes healthy fails the update
    and the old one keeps serving. A container that publishes host ports or has a writable mount
    is deleted before its replacement starts (``replaced_delete_first``): a maintenance step.
    So is a container at one of ``static_addresses``: the new one cannot take the address while
    the old one holds it. A container on a network of its own is stateless like any other: its
    replacement takes another address of that network.
    """
    unknown = set(secret_env) - {s.name for s in specs}
    if unknown:
        raise ValueError(f"secret env for services that are not deployed: {sorted(unknown)}")
    created: dict[str, docker.Container] = {}
    for spec in specs:
        image = docker.RemoteImage(
            f"{stack}-{spec.name}-image", name=spec.image, keep_locally=True,
            opts=pulumi.ResourceOptions(parent=parent, provider=provider),
        )
        plan = container_plan(spec, network=network, stack=stack, private_address=private_address,
                              extra_mounts=list((extra_mounts or {}).get(spec.name, [])))
        if spec.name in (static_addresses or {}):
            plan["networks_advanced"][0]["ipv4_address"] = static_addresses[spec.name]
        for owner, (own_network, peers) in sorted((own_networks or {}).items()):
            if owner == spec.name:
                plan["networks_advanced"][0]["name"] = own_network
            elif spec.name in peers:
                plan["networks_advanced"].append({"name": own_network})
        secrets = dict(secret_env.get(spec.name, {}))
        plain_env = plan.pop("envs")
        clash = {v.split("=", 1)[0] for v in plain_env} & set(secrets)
        if clash:
            raise ValueError(f"{spec.name}: {sorted(clash)} set both as plain and secret env")
        # One secret per variable, not one secret list: the plain variables stay reviewable.
        envs = plain_env + [pulumi.Output.secret(pulumi.Output.concat(f"{n}=", secrets[n]))
                            for n in sorted(secrets)]
        created[spec.name] = docker.Container(
            f"{stack}-{spec.name}",
            image=image.image_id,
            envs=envs,
            **plan,
            opts=pulumi.ResourceOptions(
                parent=parent, provider=provider, depends_on=list(depends_on),
                delete_before_replace=replaced_delete_first(
                    spec, list((extra_mounts or {}).get(spec.name, [])),
                    fixed_address=spec.name in (static_addresses or {})),
            ),
        )
    return created


def datastore_init(resource: str, target: SshTarget, *, stack: str, service: str, text: pulumi.Input[str],
                   ready: str, apply: str, path: str, parent: pulumi.Resource,
                   depends_on: Sequence[pulumi.Resource]) -> pulumi.Resource:
    """Waits until ``ready`` succeeds inside the datastore's container, then feeds it ``text``
    (idempotent SQL or JS, kept at ``path``) through ``apply`` whenever the text changed."""
    def render(body: str) -> str:
        return hostsetup.script(
            f'cid="$(docker ps -q --filter label=platform.stack={stack} --filter label=platform.service={service})"',
            f'[ -n "$cid" ] || {{ echo "{service} container not running" >&2; exit 1; }}',
            # The readiness command expands its variables in the container, not here.
            "# shellcheck disable=SC2016",
            f'wait_for 60 docker exec "$cid" {ready} || {{ echo "{service} is not ready after 60 s" >&2; exit 1; }}',
            hostsetup.deliver_file(path, "0600", "root:root", body, on_change=f'docker exec -i "$cid" {apply} < {path}'),
        )

    return run_script(resource, target, pulumi.Output.secret(pulumi.Output.from_input(text).apply(render)),
                      parent=parent, depends_on=list(depends_on))
