"""Environments are isolated at the network, data and credentials layers (the reference
architecture, /work/shared/seeds/hosting-network-deployment-kredete.md, "Environments"): nothing
one stack creates or configures is reachable or valid from the other.

Read from the shared synth captures of prod and staging (secrets revealed, so generated
passwords and tokens are compared by value): buckets, networks, hosts, firewall sources,
credential scopes and every generated secret. What a capture cannot compare is the value of
an external secret (``pulumi config set --secret``, a placeholder per key here): those live in
each stack's own encrypted config, and the config boundary refuses the SSH CA key when it is
one of the stack's deploy keys (tests/test_ssh_access.py)."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest
import yaml

from synth.state import State
from tests.conftest import synth_once

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("prod", "staging")
PUBLIC = {"0.0.0.0/0", "::/0", "any"}


@pytest.fixture(scope="module")
def captures() -> dict[str, State]:
    return {s: State(synth_once(s, reveal_secrets=True)) for s in STACKS}


def _config(stack: str) -> dict:
    return yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]


def _other(stack: str) -> str:
    return next(s for s in STACKS if s != stack)


def _buckets(state: State) -> set[str]:
    return ({r["inputs"]["name"] for r in state.of_type("cloudflare:index/r2Bucket:R2Bucket")}
            | {r["inputs"]["bucket"] for r in state.of_type("minio:index/s3Bucket:S3Bucket")}
            | {r["inputs"]["name"] for r in state.of_type("digitalocean:index/spacesBucket:SpacesBucket")})


def _credential_scopes(state: State) -> dict[str, set[str]]:
    """Every credential the stack creates -> the buckets it is valid for."""
    scopes: dict[str, set[str]] = {}
    for token in state.of_type("cloudflare:index/accountToken:AccountToken"):
        buckets = set()
        for policy in token["inputs"]["policies"]:
            for resource in json.loads(policy["resources"]):
                # com.cloudflare.edge.r2.bucket.<account>_<jurisdiction>_<bucket>
                buckets.add(resource.rsplit(".", 1)[1].split("_", 2)[2])
        scopes[token["name"]] = buckets
    for key in state.of_type("digitalocean:index/spacesKey:SpacesKey"):
        scopes[key["name"]] = {g["bucket"] for g in key["inputs"]["grants"]}
    for policy in state.of_type("minio:index/iamPolicy:IamPolicy"):
        document = json.loads(policy["inputs"]["policy"])
        scopes[policy["name"]] = {arn.split(":::", 1)[1].split("/", 1)[0]
                                  for statement in document["Statement"] for arn in statement["Resource"]}
    return scopes


def _networks(stack: str, state: State) -> list[ipaddress.IPv4Network]:
    """The stack's own address space: its VPCs, its management (WireGuard) network, Pencom's
    private network, its hosts."""
    networks = [ipaddress.ip_network(r["inputs"]["ipRange"]) for r in state.of_type("digitalocean:index/vpc:Vpc")]
    networks += [ipaddress.ip_network(m["inputs"]["network"])
                 for m in state.of_type("platform:components:ManagementNetwork")]
    pencom = _config(stack).get("platform:pencom")
    if pencom:
        networks.append(ipaddress.ip_network(pencom["internal_cidr"]))
    for host in state.of_type("platform:components:OnPremVps"):
        for address in {host["inputs"]["address"], host["inputs"]["privateAddress"]}:
            networks.append(ipaddress.ip_network(address))
    return networks


def _firewall_sources(state: State) -> dict[str, set[str]]:
    """Who each firewall of the stack admits: DigitalOcean Firewalls, and the UFW rules the
    on-prem hosts' setup scripts apply (``ufw allow proto P from SOURCE ...``)."""
    sources: dict[str, set[str]] = {}
    for firewall in state.of_type("digitalocean:index/firewall:Firewall"):
        sources[firewall["name"]] = {s for rule in firewall["inputs"]["inboundRules"]
                                     for s in rule.get("sourceAddresses") or []}
    for command in state.of_type("command:remote:Command"):
        found = set(re.findall(r"^ufw allow proto \S+ from (\S+) ", command["inputs"].get("stdin") or "", re.M))
        if found:
            sources.setdefault(command["name"], set()).update(found)
    return sources


def test_the_stacks_share_no_bucket(captures):
    prod, staging = (_buckets(captures[s]) for s in STACKS)
    assert prod and staging
    assert not prod & staging


@pytest.mark.parametrize("stack", STACKS)
def test_every_credential_is_valid_only_for_its_own_stacks_buckets(stack, captures):
    own, other = _buckets(captures[stack]), _buckets(captures[_other(stack)])
    scopes = _credential_scopes(captures[stack])
    assert len(scopes) >= 10, scopes
    for name, buckets in scopes.items():
        assert buckets, name
        assert buckets <= own, f"{name} is valid for buckets this stack does not own: {buckets - own}"
        assert not buckets & other, name
    other_tokens = _credential_scopes(captures[_other(stack)])
    assert not set(scopes) & set(other_tokens), "credential names are per stack"


def test_the_stacks_address_spaces_do_not_overlap(captures):
    prod, staging = (_networks(s, captures[s]) for s in STACKS)
    overlapping = [(a, b) for a in prod for b in staging if a.overlaps(b)]
    assert not overlapping


@pytest.mark.parametrize("stack", STACKS)
def test_no_firewall_admits_the_other_stacks_networks(stack, captures):
    """Every source a firewall of the stack admits is the public internet (public ports), the
    operators' admin CIDRs, or the stack's own networks; none is in the other stack's."""
    own = _networks(stack, captures[stack])
    other = _networks(_other(stack), captures[_other(stack)])
    admin = set(_config(stack)["platform:environment"]["admin_cidrs"])
    sources = _firewall_sources(captures[stack])
    assert sum(1 for name in sources if "setup-ufw" in name) >= 4, sorted(sources)
    for firewall, admitted in sources.items():
        for source in admitted - PUBLIC - admin:
            network = ipaddress.ip_network(source, strict=False)
            assert not any(network.overlaps(o) for o in other), f"{firewall} admits {source} of {_other(stack)}"
            assert any(network.subnet_of(o) for o in own if o.version == network.version), \
                f"{firewall} admits {source}, which is none of {stack}'s networks"


@pytest.mark.parametrize("stack", STACKS)
def test_database_firewalls_trust_only_their_own_stacks_resources(stack, captures):
    def trusted(state: State) -> set[str]:
        return {rule["value"] for fw in state.of_type("digitalocean:index/databaseFirewall:DatabaseFirewall")
                for rule in fw["inputs"]["rules"]}

    own, other = trusted(captures[stack]), trusted(captures[_other(stack)])
    assert own and not own & other


def test_no_generated_secret_is_shared(captures):
    """Passwords, keys and certificates the program generates are resources of one stack;
    their values (revealed) appear in no input of the other stack."""
    generated = {}
    for stack in STACKS:
        state = captures[stack]
        generated[stack] = {r["name"] for t in ("random:index/randomPassword:RandomPassword",
                                                "tls:index/privateKey:PrivateKey",
                                                "tls:index/selfSignedCert:SelfSignedCert",
                                                "cloudflare:index/accountToken:AccountToken",
                                                "digitalocean:index/spacesKey:SpacesKey",
                                                "minio:index/iamUser:IamUser")
                            for r in state.of_type(t)}
        assert len(generated[stack]) >= 30
    assert not generated["prod"] & generated["staging"]


@pytest.mark.parametrize("stack", STACKS)
def test_nothing_of_one_stack_is_referenced_by_the_other(stack, captures):
    """The catch-all: a resource of the other stack, by its name or the name it has at the
    provider (a bucket, a cluster), appears in no input of this one (IDs, generated passwords,
    tokens and certificates all carry their resource's name in the capture), so nothing here
    reaches or trusts it."""
    other = _other(stack)
    own_names = {r["name"] for r in captures[stack].document["resources"]}
    # Resource names, and the names the other stack gives things in the providers (buckets,
    # clusters, VPCs, tokens: a resource's ``name``/``bucket`` input).
    other_names = {r["name"] for r in captures[other].document["resources"]}
    other_names |= {str(r.get("inputs", {}).get(k)) for r in captures[other].document["resources"]
                    for k in ("name", "bucket") if isinstance(r.get("inputs", {}).get(k), str)}
    other_names = {n for n in other_names - own_names if other in n}
    assert len(other_names) > 100
    text = json.dumps([r.get("inputs") for r in captures[stack].document["resources"]])
    pattern = re.compile("|".join(re.escape(n) for n in sorted(other_names, key=len, reverse=True)))
    found = {m.group(0) for m in pattern.finditer(text)}
    # A name that merely starts with another (kro-staging-db vs kro-staging-db-firewall) is
    # matched by the longest first; what is left must not be a reference.
    assert not found, sorted(found)[:10]


def test_the_stacks_share_no_firewall_source(captures):
    """Said out loud: the admin CIDRs (the operators' office) are the break-glass path, which
    staging keeps on and prod off, so prod admits them nowhere and the stacks share no source;
    each has its own management network (the test above)."""
    prod = set().union(*_firewall_sources(captures["prod"]).values()) - PUBLIC
    staging = set().union(*_firewall_sources(captures["staging"]).values()) - PUBLIC
    admin = set(_config("prod")["platform:environment"]["admin_cidrs"])
    assert admin <= staging, "staging's break-glass admits the admin CIDRs"
    assert not prod & admin, prod & admin
    assert not prod & staging, prod & staging


def _global_names(stack: str) -> list:
    from stacks.collisions import global_names
    from stacks.other_stacks import stack_views
    from stacks.registry import PRODUCTS

    environment, views, _ = stack_views(ROOT / f"Pulumi.{stack}.yaml", PRODUCTS)
    return global_names(environment, views, PRODUCTS)


@pytest.mark.parametrize("stack", STACKS)
def test_the_global_names_cover_every_bucket_and_app_the_stack_creates(stack, captures):
    """``stacks.collisions.global_names`` is the config boundary's list of what a stack names
    outside itself (stacks/other_stacks.py refuses a stack that shares one): every R2 and
    Spaces bucket and App Platform app the program creates is on it."""
    claimed = {(what, value[1] if isinstance(value, tuple) else str(value)) for what, _, _, value in _global_names(stack)}
    state = captures[stack]
    created = ({("R2 bucket", r["inputs"]["name"]) for r in state.of_type("cloudflare:index/r2Bucket:R2Bucket")}
               | {("Spaces bucket", r["inputs"]["name"]) for r in state.of_type("digitalocean:index/spacesBucket:SpacesBucket")}
               | {("App Platform app", r["inputs"]["spec"]["name"]) for r in state.of_type("digitalocean:index/app:App")})
    assert len(created) >= 10
    assert created <= claimed, sorted(created - claimed)


def test_the_committed_stacks_share_no_global_name():
    prod, staging = ({(what, str(value)) for what, _, _, value in _global_names(s)} for s in STACKS)
    assert len(prod) >= 20 and len(staging) >= 20
    assert not prod & staging
