"""Which input changes make a provider replace a resource, and which resources hold state.

Pulumi's bridged providers decide replacement in the provider plugin (Terraform's ``ForceNew``),
which the offline synth does not have. Two sources, merged:

- ``REPLACING_INPUTS``: a small table, checked on 2026-11-30 against the Terraform providers the
  Pulumi SDKs bridge (``ForceNew: true`` in the resource schemas of
  github.com/digitalocean/terraform-provider-digitalocean ``digitalocean/<kind>/resource_*.go``,
  github.com/cloudflare/terraform-provider-cloudflare ``internal/services/r2_bucket/schema.go``
  (``RequiresReplace``), github.com/aminueza/terraform-provider-minio ``minio/resource_minio_s3_bucket.go``)
  and the DigitalOcean docs (a Spaces bucket cannot be renamed or moved between regions).
- ``sdk_documented_replacements``: the inputs whose docstring in the installed SDK says
  "Changing this forces a new resource to be created", so a provider upgrade that documents a
  new one is picked up without editing the table.

A resource's own ``replace_on_changes`` option (in the synth JSON) adds to both.

Which resources hold state (``STATEFUL_TYPES``, ``writable_data_mounts``, ``stateful_reason``), and
what the protected kinds without data of their own serve (``DEPENDENCY_LOSS``, ``loss``), is
decided here once: ``synth diff`` warns on deleting or replacing them and the policy pack
(``policy/rules/data_protection.py``, ``policy/rules/containers.py``) protects them, both from these
functions. They read plain or proxied mappings and sequences alike (the CrossGuard analyzer hands
policies read-only proxies, not dicts and lists).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Mapping, Sequence

REPLACING_INPUTS: dict[str, tuple[str, ...]] = {
    "digitalocean:index/droplet:Droplet": ("image", "region", "sshKeys", "userData", "vpcUuid"),
    "digitalocean:index/databaseCluster:DatabaseCluster": ("engine", "region", "name", "privateNetworkUuid"),
    "digitalocean:index/databaseDb:DatabaseDb": ("name", "clusterId"),
    "digitalocean:index/databaseUser:DatabaseUser": ("name", "clusterId"),
    "digitalocean:index/vpc:Vpc": ("region", "ipRange"),
    "digitalocean:index/volume:Volume": ("region", "name", "snapshotId"),
    "digitalocean:index/spacesBucket:SpacesBucket": ("name", "region"),
    "digitalocean:index/reservedIp:ReservedIp": ("region",),
    "cloudflare:index/r2Bucket:R2Bucket": ("name", "location", "accountId", "jurisdiction"),
    "minio:index/s3Bucket:S3Bucket": ("bucket",),
    # kreuzwerker/terraform-provider-docker resource_docker_container.go: everything `docker run`
    # fixed is ForceNew; only restart, memory, cpu_shares and cpu_set update in place.
    "docker:index/container:Container": ("image", "envs", "ports", "mounts", "volumes", "command",
                                         "entrypoints", "user", "networksAdvanced", "labels",
                                         "capabilities", "healthcheck",
                                         "readOnly", "securityOpts", "tmpfs", "logOpts"),
    "docker:index/network:Network": ("name", "driver", "options", "ipamConfigs"),
    "docker:index/remoteImage:RemoteImage": ("name",),
    # terraform-provider-random has no Update: every attribute RequiresReplace.
    "random:index/randomPassword:RandomPassword": ("*",),
    "random:index/randomBytes:RandomBytes": ("*",),
    "random:index/randomString:RandomString": ("*",),
    "random:index/randomId:RandomId": ("*",),
    # terraform-provider-tls: the key's shape, the request's and the certificates' every field
    # RequiresReplace; a LocallySignedCert's earlyRenewalHours alone updates in place.
    "tls:index/privateKey:PrivateKey": ("algorithm", "rsaBits", "ecdsaCurve"),
    "tls:index/certRequest:CertRequest": ("*",),
    "tls:index/selfSignedCert:SelfSignedCert": ("*",),
    "tls:index/locallySignedCert:LocallySignedCert": ("certRequestPem", "caCertPem", "caPrivateKeyPem",
                                                      "validityPeriodHours", "allowedUses",
                                                      "isCaCertificate", "setSubjectKeyId"),
}
"""``"*"``: every input of the resource forces its replacement."""

# Resources whose deletion or replacement loses data (a database, a disk, a bucket, a host with
# its local volumes). Source: what each type stores. The policy pack protects this set in
# production (policy/rules/data_protection.py), plus what the data depends on.
STATEFUL_TYPES = frozenset({
    "digitalocean:index/droplet:Droplet",
    "digitalocean:index/databaseCluster:DatabaseCluster",
    "digitalocean:index/databaseDb:DatabaseDb",
    "digitalocean:index/volume:Volume",
    "digitalocean:index/spacesBucket:SpacesBucket",
    "cloudflare:index/r2Bucket:R2Bucket",
    "minio:index/s3Bucket:S3Bucket",
    "docker:index/volume:Volume",
})

CONTAINER = "docker:index/container:Container"

# What deleting or replacing a resource that holds no data of its own takes with it, for the
# kinds production protects besides STATEFUL_TYPES (policy/rules/data_protection.py) and the reserved IPs
# it protects. "The data it holds" would be false for them. Sources: a VPC is deleted only once
# it has no members (DigitalOcean API, DELETE /v2/vpcs/{vpc_id}:
# https://docs.digitalocean.com/reference/api/reference/vpcs/), and a droplet's ``vpcUuid`` and a
# cluster's ``privateNetworkUuid`` force new resources (REPLACING_INPUTS); a DatabaseUser's
# ``password`` is an output the provider generates (pulumi_digitalocean.DatabaseUser); a
# reserved IP is an address DigitalOcean allocates.
DEPENDENCY_LOSS: dict[str, str] = {
    "digitalocean:index/vpc:Vpc":
        "the private network its droplets and database clusters are attached to (DigitalOcean "
        "refuses to delete a VPC that still has members, and moving a member to another VPC "
        "replaces it: `vpcUuid`, `privateNetworkUuid`)",
    "digitalocean:index/databaseUser:DatabaseUser":
        "the login the services use: a user created again gets a new generated password, so every "
        "service holding the old one fails to connect until it is redeployed",
    "digitalocean:index/reservedIp:ReservedIp":
        "the public address DNS points at: a new reserved IP is a different address",
}


def writable_data_mounts(resource: dict) -> list[str]:
    """The container paths a Docker container writes to storage that outlives it: ``volumes``
    entries (a host path, a named volume or another container's volumes) and ``mounts`` of type
    ``bind`` or ``volume`` that are not ``readOnly`` (pulumi_docker ``ContainerVolumeArgs`` and
    ``ContainerMountArgs``: both default to writable). ``tmpfs`` is memory, not data. Empty for
    any other resource type.

    A self-hosted datastore (PostgreSQL, MongoDB, Redis, MinIO, Prometheus' TSDB) keeps its data
    there, so this is read from the captured inputs rather than from a list of image names."""
    if resource.get("type") != CONTAINER:
        return []
    inputs = resource.get("inputs")
    inputs = inputs if isinstance(inputs, Mapping) else {}
    paths = []
    for volume in _sequence(inputs.get("volumes")):
        if (isinstance(volume, Mapping) and volume.get("readOnly") is not True
                and (volume.get("hostPath") or volume.get("volumeName") or volume.get("fromContainer"))):
            paths.append(str(volume.get("containerPath") or volume.get("fromContainer")))
    for mount in _sequence(inputs.get("mounts")):
        if (isinstance(mount, Mapping) and mount.get("readOnly") is not True
                and mount.get("type") in ("bind", "volume")):
            paths.append(str(mount.get("target")))
    return paths


def _sequence(value) -> list:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else []


def stateful_reason(resource: dict) -> str | None:
    """Why deleting or replacing ``resource`` (a synth JSON resource) loses data, or None:
    its type holds data (``STATEFUL_TYPES``), or it is a container with writable data mounts."""
    if resource.get("type") in STATEFUL_TYPES:
        return "the data it holds"
    paths = writable_data_mounts(resource)
    if paths:
        return f"the data it writes to {', '.join(f'`{p}`' for p in paths)}"
    return None


MAINTENANCE_LABEL = "platform.maintenance."
"""components.containers.MAINTENANCE_LABEL: the labels a maintenance acknowledgement puts on its
container (not imported: the policy pack reads this module without the components)."""


def maintenance_of(resource: dict) -> dict[str, str] | None:
    """The maintenance acknowledgement a container carries in its labels (``image``,
    ``replaces``, ``backup``, ``restore_test``, ``window``), or None. Stated in the stack config
    (``maintenance`` of a service: components.containers.Maintenance)."""
    if resource.get("type") != CONTAINER:
        return None
    inputs = resource.get("inputs")
    inputs = inputs if isinstance(inputs, Mapping) else {}
    found = {}
    for label in _sequence(inputs.get("labels")):
        if isinstance(label, Mapping) and str(label.get("label", "")).startswith(MAINTENANCE_LABEL):
            found[str(label["label"])[len(MAINTENANCE_LABEL):]] = label.get("value")
    return found or None


def loss(resource: dict) -> str | None:
    """What deleting or replacing ``resource`` loses, in words true for its kind, or None:
    its data (:func:`stateful_reason`), else what a protected kind serves (``DEPENDENCY_LOSS``)."""
    return stateful_reason(resource) or DEPENDENCY_LOSS.get(resource.get("type", ""))


_FORCES = re.compile(r":param [^:]*? (\w+):((?:(?!:param ).)*?)forces a new resource", re.S)


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.capitalize() for part in rest)


@functools.lru_cache(maxsize=None)
def sdk_documented_replacements(type_: str) -> frozenset[str]:
    """Engine names of the inputs the installed SDK documents as forcing a new resource.

    ``type_`` is a token such as ``digitalocean:index/droplet:Droplet``; an unknown package or
    class gives an empty set (never an error: the table above still applies)."""
    package, _, rest = type_.partition(":")
    class_name = rest.rsplit(":", 1)[-1]
    try:
        module = importlib.import_module(f"pulumi_{package.replace('-', '_')}")
        cls = getattr(module, class_name)
        source = inspect.getsource(cls)
    except (ImportError, AttributeError, OSError, TypeError):
        return frozenset()
    return frozenset(_camel(m.group(1)) for m in _FORCES.finditer(source)
                     if m.group(1) != "resource_name")


def top_level(path: str) -> str:
    """The top-level input name of an input path (``envs[3]`` -> ``envs``, ``spec.name`` ->
    ``spec``, ``triggers[*]`` -> ``triggers``)."""
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def replacing_inputs(resource: dict) -> frozenset[str]:
    """Top-level input names whose change replaces ``resource`` (a synth JSON resource): the
    table, the SDK's docs, and its ``replace_on_changes`` paths by their top-level name
    (``triggers[*]`` is ``triggers``)."""
    table = REPLACING_INPUTS.get(resource["type"], ())
    inputs = resource.get("inputs")
    every = frozenset(inputs) if "*" in table and isinstance(inputs, Mapping) else frozenset()
    return (frozenset(name for name in table if name != "*") | every
            | sdk_documented_replacements(resource["type"])
            | frozenset(top_level(str(path)) for path in resource.get("replace_on_changes") or ()))
