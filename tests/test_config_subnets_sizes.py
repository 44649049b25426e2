"""Holes a new user found in the config boundary (December 2026, third round): Docker subnets
that are IPv6 (the synth hung listing a /64's hosts), too small or misaligned for what the
program derives from them, inside the product's own VPC or docker0, or without room for the
node's containers; container limits beyond the droplet; an allow-list naming a program
exemption; and YAML alias bombs. Each is refused before any resource is registered, with one
error at its key path that says the fix."""

from __future__ import annotations

import ipaddress
import time

import pytest
import yaml

from stacks.config import validate_stack_config
from tests.test_config_boundary import _cli, _problems, _raw

pytestmark = pytest.mark.fast

IPV4_ONLY = "must be an IPv4 range: the hosts' Docker networks and their packet filter (iptables) are IPv4 only"


def _set_egress_subnet(config: dict, product: str, field: str, value: str) -> None:
    if product == "pencom":
        egress = config["platform:pencom"]["egress"]
        if field == "edge_subnet":
            egress["edge_subnet"] = value
        else:
            egress["node_subnets"] = {field.split(".")[1]: value}
    else:
        config[f"platform:{product}"]["egress"] = {"subnet": value}


EVERY_DOCKER_SUBNET = [("pencom", "edge_subnet", "platform:pencom.egress.edge_subnet"),
                       ("pencom", "node_subnets.app", "platform:pencom.egress.node_subnets.app"),
                       ("pencom", "node_subnets.data", "platform:pencom.egress.node_subnets.data"),
                       ("pencom", "node_subnets.storage", "platform:pencom.egress.node_subnets.storage"),
                       ("kro", "subnet", "platform:kro.egress.subnet"),
                       ("giv", "subnet", "platform:giv.egress.subnet"),
                       ("vedfinance", "subnet", "platform:vedfinance.egress.subnet")]


@pytest.mark.parametrize("value", ["fd00:2::/64", "fd00:6::/120"])
@pytest.mark.parametrize("product,field,path", EVERY_DOCKER_SUBNET)
def test_an_ipv6_docker_subnet_is_refused_at_its_key(stack_document, product, field, path, value):
    """A /64 hung the synth (``list(network.hosts())``); a GIV /120 rendered IPv6 into iptables."""
    document = stack_document("staging")
    _set_egress_subnet(document["config"], product, field, value)
    started = time.monotonic()
    problems = _problems(document)
    assert time.monotonic() - started < 20
    assert len(problems) == 1 and problems[0].startswith(f"{path}: {IPV4_ONLY}"), problems


@pytest.mark.parametrize("product,field,path,value,longest", [
    ("vedfinance", "subnet", "platform:vedfinance.egress.subnet", "172.31.251.8/29", 26),
    ("kro", "subnet", "platform:kro.egress.subnet", "10.0.0.16/28", 26),
    ("kro", "subnet", "platform:kro.egress.subnet", "172.31.251.8/29", 26),
    ("giv", "subnet", "platform:giv.egress.subnet", "172.31.251.64/27", 26),
    ("pencom", "edge_subnet", "platform:pencom.egress.edge_subnet", "172.31.250.0/28", 27),
    ("pencom", "node_subnets.storage", "platform:pencom.egress.node_subnets.storage", "172.31.253.0/30", 28),
])
def test_a_docker_subnet_too_small_for_the_derivations_names_the_smallest_size(
        stack_document, product, field, path, value, longest):
    """A V-EdFinance /29 crashed with IndexError after KRO and GIV had registered; KRO's /28
    raised "exempt addresses outside", its /29 "host bits set" in database_subnet()."""
    document = stack_document("staging")
    _set_egress_subnet(document["config"], product, field, value)
    problems = _problems(document)
    prefix = value.split("/")[1]
    assert len(problems) == 1 and problems[0].startswith(f"{path}: /{prefix} is too small: "), problems
    assert f"use a /{longest} or larger" in problems[0], problems


@pytest.mark.parametrize("subnet,text", [
    ("172.31.251.9/26", "has host bits set: a range starts at its network address; write 172.31.251.0/26"),
    # KRO's derived database network inside its VPC: the subnet's key and the derived range.
    ("10.111.16.0/24", "the database service's own network takes the /28 below it, 10.111.15.240/28"),
])
def test_a_kro_subnet_names_its_network_address_or_its_derived_range(stack_document, subnet, text):
    document = stack_document("staging")
    document["config"]["platform:kro"]["egress"] = {"subnet": subnet}
    problems = _problems(document)
    assert len(problems) == 1 and problems[0].startswith(f"platform:kro.egress.subnet: {text}"), problems


@pytest.mark.parametrize("subnet", ["172.31.251.0/26", "172.31.240.0/20", "10.200.0.0/16"])
def test_the_smallest_or_a_broad_single_host_subnet_synthesizes(stack_document, subnet):
    """At the bound the derivations fit: KRO's /28 below is aligned, the fixed addresses stay in
    the lower half (arithmetic, so a /16 costs nothing)."""
    from stacks.kro.config import database_subnet
    from stacks.shared_config import ContainerEgressConfig, container_egress_lock

    document = stack_document("staging")
    for product in ("kro", "giv", "vedfinance"):
        document["config"][f"platform:{product}"]["egress"] = {"subnet": subnet}
    validate_stack_config(_raw(document), stack="staging", check_secrets=False)
    assert ipaddress.ip_network(database_subnet(subnet)).prefixlen == 28
    lock = container_egress_lock(ContainerEgressConfig(subnet=subnet), bridge="br-test", containers=["alertmanager", "blackbox"])
    base = ipaddress.ip_network(subnet).network_address
    assert lock.exempt == (("alertmanager", str(base + 10)), ("blackbox", str(base + 11)))


def test_no_derivation_lists_the_hosts_of_a_broad_network():
    """Fixed addresses are arithmetic: the lock of a /8 is built at once (a list of its hosts
    would hold 16 million addresses; of a /64, never finish)."""
    from components import egress

    started = time.monotonic()
    lock = egress.workload_lock(bridge="br-test", subnet="10.0.0.0/8", exempt=["alertmanager"])
    assert lock.exempt == (("alertmanager", "10.0.0.10"),) and lock.dynamic_range() == "10.128.0.0/9"
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("product,subnet,other", [
    ("kro", "10.111.0.0/24", "platform:kro.vpc_ip_range (10.111.0.0/20)"),
    ("kro", "172.17.0.0/24", "docker0's default subnet on every host (172.17.0.0/16)"),
    ("giv", "10.121.0.0/24", "platform:giv.vpc_ip_range (10.121.0.0/20)"),
    ("vedfinance", "172.17.5.0/24", "docker0's default subnet on every host (172.17.0.0/16)"),
])
def test_a_single_host_subnet_inside_its_vpc_or_docker0_is_refused(stack_document, product, subnet, other):
    document = stack_document("staging")
    document["config"][f"platform:{product}"]["egress"] = {"subnet": subnet}
    problems = _problems(document)
    assert problems == [f"platform:{product}.egress.subnet: {subnet} overlaps {other}: the host would route that "
                        "range into its Docker bridge; choose a private range apart from it, such as "
                        "172.31.251.0/24"], problems


def test_a_node_subnet_without_room_for_its_containers_is_refused(stack_document):
    """A /30 for the app node's 9 containers rendered an ipRange /31; a /28 leaves 6 addresses
    in its upper half after the broadcast address and Docker's gateway."""
    document = stack_document("staging")
    document["config"]["platform:pencom"]["egress"]["node_subnets"] = {"app": "172.31.251.0/28"}
    problems = _problems(document)
    assert problems == ["platform:pencom.egress.node_subnets.app: 172.31.251.0/28 is too small for the app node: "
                        "Docker gives its 9 containers addresses in the upper half (6 free after the broadcast "
                        "address and Docker's gateway); use a /27 or larger"], problems
    document["config"]["platform:pencom"]["egress"]["node_subnets"] = {"app": "172.31.251.0/27"}
    validate_stack_config(_raw(document), stack="staging", check_secrets=False)


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_the_node_container_count_is_the_plans(stack_document, stack):
    from stacks.pencom.egress_rules import node_containers
    from stacks.pencom.network import EDGE_EXEMPT
    from stacks.pencom.plan import detail

    config = validate_stack_config(_raw(stack_document(stack)), stack=stack, check_secrets=False)
    cfg = config.product("pencom")
    plan = detail(cfg, config.environment)
    expected = {node: len(getattr(plan, node)) for node in ("edge", "app", "data", "storage")}
    expected["edge"] -= len(EDGE_EXEMPT)
    assert node_containers(cfg) == expected


@pytest.mark.parametrize("change,problems", [
    ({"memory_mb": 200000, "cpus": 64}, [
        "platform:kro.services[0] (backend).memory_mb: 200000 MiB is more than the droplet has "
        "(platform:kro.droplet.size s-1vcpu-2gb: 1 vCPU, 2048 MiB); lower it or grow the droplet",
        "platform:kro.services[0] (backend).cpus: 64 is more than the droplet's 1 vCPU "
        "(platform:kro.droplet.size s-1vcpu-2gb: 1 vCPU, 2048 MiB); lower it or grow the droplet"]),
    ({"memory_mb": 1900}, ["platform:kro.services: memory limits add up to 3212 MiB"]),
    ({"cpus": 0.0001}, ["platform:kro.services[0] (backend).cpus: Input should be greater than or equal to 0.01"]),
])
def test_kro_limits_are_bounded_by_the_droplet(stack_document, change, problems):
    document = stack_document("staging")
    document["config"]["platform:kro"]["services"][0].update(change)
    found = _problems(document)
    assert len(found) == len(problems) and all(f.startswith(p) for f, p in zip(found, problems)), found


def test_droplet_capacity_reads_the_slug():
    from validation.provider_lists import digitalocean, droplet_capacity

    assert droplet_capacity("s-1vcpu-2gb") == (1, 2048)
    assert droplet_capacity("s-1vcpu-512mb-10gb") == (1, 512)
    assert droplet_capacity("g-2vcpu-8gb") == (2, 8192) and droplet_capacity("c-4-intel") == (4, 8192)
    assert droplet_capacity("so1_5-2vcpu-16gb") == (2, 16384)
    assert droplet_capacity("2gb") is None and droplet_capacity("gpu-h100x1-80gb") is None
    assert all(droplet_capacity(s) is not None for s in digitalocean()["droplet_sizes"]
               if s[0] in "sgmc" and not s[:1].isdigit() and "gpu" not in s)


@pytest.mark.parametrize("product", ["kro", "giv"])
@pytest.mark.parametrize("exemption", ["alertmanager", "blackbox"])
def test_an_allow_list_naming_a_program_exemption_is_refused_alike(stack_document, product, exemption):
    """GIV accepted ``services: [alertmanager]`` where KRO said it is not a container of the host."""
    document = stack_document("staging")
    document["config"][f"platform:{product}"]["egress"] = {"allow": [
        {"name": "mail-relay", "cidrs": ["203.0.113.0/24"], "port": 587, "services": [exemption]}]}
    problems = _problems(document)
    assert problems == [f"platform:{product}.egress.allow[0] (mail-relay).services[0]: {exemption} is one of the "
                        "program's exemptions: it reaches the internet directly already (Alertmanager: mail and "
                        "Slack; blackbox: the probed hostnames); remove it here"], problems


def _bomb(levels: int) -> str:
    lines = ["  platform:zzz:", '    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    previous = "a"
    for name in "bcdefghijk"[:levels - 1]:
        lines.append(f"    {name}: &{name} [" + ",".join([f"*{previous}"] * 10) + "]")
        previous = name
    lines.append("    z: [" + ",".join([f"*{previous}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_at_its_file_and_line(tmp_path):
    """8 nested levels took ~30 s before "unknown key"; now the file is refused after composing."""
    from synth.engine import PROJECT_ROOT

    committed = (PROJECT_ROOT / "Pulumi.staging.yaml").read_text().rstrip("\n") + "\n"
    path = tmp_path / "Pulumi.staging.yaml"
    path.write_text(committed + _bomb(8))
    started = time.monotonic()
    result = _cli(path)
    assert time.monotonic() - started < 20
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    line = len(committed.splitlines()) + 7  # f: [*e, ...], the first alias past the bound
    assert f"{path}:{line}:" in result.stderr and "the aliases expand to more than 100,000 values" in result.stderr


def test_small_aliases_and_the_committed_files_stay_readable():
    from synth.engine import PROJECT_ROOT
    from synth.stackfile import MAX_EXPANDED_VALUES, UniqueKeyLoader, _expanded, load_yaml

    three_levels = load_yaml("config:\n" + _bomb(3))["config"]["platform:zzz"]  # 11,111 values: read
    assert three_levels["z"][0][0][0] == ["lol"] * 10
    for stack in ("staging", "prod"):
        loader = UniqueKeyLoader((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text())
        assert _expanded(loader.get_single_node(), {}) < MAX_EXPANDED_VALUES / 20
    with pytest.raises(yaml.YAMLError, match="recursive|expand"):
        load_yaml("a: &a [*a]\n")
