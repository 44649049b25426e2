"""The products' plans (``stacks/<product>/plan.py``), read as plain values: no mock engine, no
resources. What the synth tests check on the desired state, checked here where it is decided:
one source per env key, every datastore backed up, every backup expected by monitoring, every
scraped service with a port; for KRO and GIV also over generated configs (hypothesis)."""

from __future__ import annotations

import dataclasses
import json

import pulumi
import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stacks import giv, kro, pencom, vedfinance
from stacks.giv.config import BACKEND_ENV
from stacks.config import validate_stack_config
from stacks.errors import ConfigError
from stacks.wiring import (BucketKey, ClusterUri, ConfigSecret, EnvMaps, Generated, ResourceValue, SecretUrl,
                           ServiceEnv, host_file)
from synth.engine import PROJECT_ROOT
from tests.plan_checks import check_plan, walk
from validation.formats import looks_secret_name

pytestmark = pytest.mark.fast


def _document(stack: str) -> dict:
    return yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text())


def _raw(document: dict) -> dict:
    return {k.split(":", 1)[1]: v if isinstance(v, str) else json.dumps(v)
            for k, v in document["config"].items() if k.startswith("platform:")}


def _config(stack: str, document: dict | None = None):
    return validate_stack_config(_raw(document or _document(stack)), check_secrets=False, stack=stack)


@pytest.fixture(scope="module", params=["staging", "prod"])
def stack(request):
    return request.param, _config(request.param)


def _plans(stack_config):
    found = {}
    for product, module in (("kro", kro), ("giv", giv), ("pencom", pencom), ("vedfinance", vedfinance)):
        if product in stack_config.products:
            found[product] = module.plan(stack_config.product(product), stack_config.environment)
    return found


def test_both_stacks_plan_something(stack):
    name, stack_config = stack
    plans = _plans(stack_config)
    assert {"kro", "giv", "pencom"} <= set(plans), "a scan of no plan would pass every test below"
    assert (name == "staging") == ("vedfinance" in plans)


def test_plans_are_frozen_plain_values(stack):
    for product, plan in _plans(stack[1]).items():
        for path, value in walk(plan):
            assert not isinstance(value, (pulumi.Output, pulumi.Resource)), f"{product}: {path} is a Pulumi object"
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                assert type(value).__dataclass_params__.frozen, f"{product}: {path} ({type(value).__name__})"


def test_a_plan_is_a_function_of_the_config(stack):
    stack_config = stack[1]
    assert _plans(stack_config) == _plans(stack_config)


def test_every_env_key_has_exactly_one_source(stack):
    for product, plan in _plans(stack[1]).items():
        for service, env in plan.env.items():
            keys = env.keys()
            assert len(keys) == len(set(keys)), f"{product}/{service}: {keys}"
            # The service's own plain env stays in its container spec; every other source has a value.
            assert {s for k, s in env.sources if k not in dict(env.plain) and k not in dict(env.secret)} \
                <= {"its env in the stack config"}, f"{product}/{service}: a source without a value"
            assert set(keys) <= {k for k, _ in env.sources}


def test_pencom_env_maps_are_complete():
    stack_config = _config("prod")
    cfg = stack_config.product("pencom")
    plan = pencom.plan(cfg, stack_config.environment)
    for spec in [*cfg.edge_services, *cfg.app_services]:
        env = plan.env[spec.name]
        assert dict(env.plain)["NODE_EXTRA_CA_CERTS"] == "/run/platform/ca.crt"
        assert dict(env.secret)["INTERNAL_API_KEY"] == Generated(f"{plan.name}-internal-api-key", 48)
        for key, secret_key in spec.secret_env.items():
            assert dict(env.secret)[key] == ConfigSecret(secret_key)
    for d in cfg.databases:
        url = dict(plan.env[d.service].secret)[d.env or "DATABASE_URL"]
        assert isinstance(url, SecretUrl) and f"/{d.name}?sslmode=verify-full" in url.template
        assert url.password == Generated(f"{plan.name}-pg-{d.service}")
    for c in cfg.bucket.consumers:
        assert dict(plan.env[c.service].secret)["SPACES_SECRET_ACCESS_KEY"] == BucketKey(c.service, "secret")
    # The container specs carry the plain env after the service's own.
    containers = {s.name: s for s in [*plan.detail.edge, *plan.detail.app]}
    for spec in [*cfg.edge_services, *cfg.app_services]:
        assert containers[spec.name].env == {**spec.env, **dict(plan.env[spec.name].plain)}


def test_every_datastore_is_backed_up_and_every_backup_is_watched(stack):
    stack_config = stack[1]
    for product, plan in _plans(stack_config).items():
        if product in ("kro", "giv"):
            continue  # managed clusters: test_every_managed_database_is_backed_up_and_watched
        cfg, plan = stack_config.product(product), plan.detail
        labels = {b.label for b in plan.backups}
        assert {d.name for d in cfg.databases} <= labels
        assert {"redis", "wal"} <= labels
        if product == "pencom":
            assert {d.name for d in cfg.mongo_databases} | {"files"} <= labels
        watched = {b for b in plan.backup_job_names}
        assert {f"{plan.name}-{b.label.replace('_', '-')}" for b in plan.backups if b.kind != "pitr"} == watched
        assert [b.rpo_minutes for b in plan.backups if b.kind == "pitr"] == [plan.cluster_rpo]
        assert plan.cluster_rpo == min(d.rpo_minutes for d in cfg.databases)


def test_every_scraped_service_has_a_port():
    stack_config = _config("prod")
    plan = pencom.plan(stack_config.product("pencom"), stack_config.environment).detail
    targets = [t for ts in plan.scrape.services.values() for t in ts] + list(plan.scrape.node) \
        + list(plan.scrape.cadvisor)
    assert targets
    for target in targets:
        host, _, port = target.rpartition(":")
        assert host and port.isdigit() and 0 < int(port) < 65536, target


def test_a_user_key_the_program_sets_is_a_config_error_with_its_key_path():
    document = _document("prod")
    cfg = document["config"]["platform:pencom"]
    owner = cfg["databases"][0]["service"]
    index = next(i for i, s in enumerate(cfg["app_services"]) if s["name"] == owner)
    cfg["app_services"][index].setdefault("env", {})["DATABASE_URL"] = "postgresql://mine"
    with pytest.raises(ConfigError) as caught:
        _config("prod", document)
    assert f"platform:pencom.app_services[{index}] ({owner}).env.DATABASE_URL" in str(caught.value)
    assert "set by the program" in str(caught.value)


def test_the_plan_refuses_a_second_source_even_past_the_rules():
    env = EnvMaps()
    env.secret("api", {"DATABASE_URL": ConfigSecret("k")}, "its secret_env in the stack config")
    with pytest.raises(ValueError, match="api: DATABASE_URL is set by its secret_env in the stack config and "
                                         "by databases"):
        env.secret("api", {"DATABASE_URL": Generated("pw")}, "databases (a)")


def test_two_databases_for_one_service_are_a_config_error():
    document = _document("staging")
    cfg = document["config"]["platform:vedfinance"]
    cfg["databases"].append({**cfg["databases"][0], "name": "other_db"})
    with pytest.raises(ConfigError, match="two DATABASE_URL values"):
        _config("staging", document)


CLAIM = st.tuples(st.sampled_from(["api", "web", "worker"]), st.sampled_from(["A", "B", "C", "D"]),
                  st.sampled_from(["config", "program", "proxy"]), st.booleans())


@settings(max_examples=200, deadline=None)
@given(st.lists(CLAIM, max_size=12))
def test_env_maps_keep_one_source_per_key_in_claim_order(claims):
    env = EnvMaps()
    seen: dict[tuple[str, str], str] = {}
    for service, key, source, secret in claims:
        if (service, key) in seen:
            with pytest.raises(ValueError, match=f"{service}: {key} is set by {seen[service, key]} and by {source}"):
                (env.secret if secret else env.plain)(service, {key: "v" if not secret else Generated(key)}, source)
            continue
        (env.secret if secret else env.plain)(service, {key: "v" if not secret else Generated(key)}, source)
        seen[service, key] = source
    frozen = env.freeze()
    for service, maps in frozen.items():
        assert isinstance(maps, ServiceEnv)
        expected = [k for (s, k) in seen if s == service]
        assert [k for k, _ in maps.sources] == expected
        assert sorted(maps.keys()) == sorted(expected)
    assert set(frozen) == {s for s, _ in seen}


# --- KRO and GIV: managed clusters -------------------------------------------------------------

def test_every_managed_database_is_backed_up_and_watched(stack):
    stack_config = stack[1]
    plans = _plans(stack_config)
    kro_plan, giv_plan = plans["kro"].detail, plans["giv"].detail
    assert kro_plan.backup_job_names == (kro_plan.backup.job,) == (f"{kro_plan.name}-db",)
    assert kro_plan.backup.uri.cluster == kro_plan.database.cluster
    with_data = {c.resource for c in giv_plan.clusters if c.databases}
    assert with_data == {f"{giv_plan.name}-pg", f"{giv_plan.name}-mongo"}
    assert {b.cluster for b in giv_plan.backups} == with_data
    assert giv_plan.backup_job_names == tuple(b.job for b in giv_plan.backups)
    for b in giv_plan.backups:
        # The job reads the CA where the ops droplet's backup service holds it.
        assert b.uri.ca_path == host_file(giv_plan.ops_data_dir, "backup", b.ca_file)
        assert b.uri.cluster == b.cluster and b.uri.user and b.uri.database


def test_giv_clusters_admit_the_app_and_only_the_backup_runner_where_it_backs_up(stack):
    giv_plan = _plans(stack[1])["giv"].detail
    backed_up = {b.cluster for b in giv_plan.backups}
    for c in giv_plan.clusters:
        assert "app" in c.admits, c.resource
        assert ("ops" in c.admits) == (c.resource in backed_up), c.resource
    assert len({c.resource for c in giv_plan.clusters}) == len({c.attachment for c in giv_plan.clusters}) == 3


def test_kro_database_url_is_the_clusters_and_the_backup_reads_the_same_ca(stack):
    stack_config = stack[1]
    cfg = stack_config.product("kro")
    p = kro.plan(cfg, stack_config.environment).detail
    url = dict(p.env[cfg.database_service].secret)["DATABASE_URL"]
    assert url == ClusterUri(p.database.cluster, ca_path=cfg.database_ca_path, user=cfg.database.user,
                             database=cfg.database.name, pool=p.database.pool if cfg.database.use_pool else None)
    assert p.backup.ca_on_host == host_file(p.data_dir, cfg.database_service, cfg.database_ca_path)
    # The egress lock admits the database service to the cluster's ports in the VPC, and nothing else of the VPC.
    vpc = [(s, cidr, port) for s, cidr, port in p.egress.allowed if cidr == cfg.vpc_ip_range]
    assert sorted(vpc) == [(cfg.database_service, cfg.vpc_ip_range, 25060),
                           (cfg.database_service, cfg.vpc_ip_range, 25061)]


# Generated configs: the prod stack file with KRO's services and GIV's components changed. Names
# and env keys come from small alphabets, so collisions (with each other and with the keys the
# program sets) are frequent.
SERVICE_NAMES = ("backend", "frontend", "admin-frontend", "worker")
USER_KEYS = ("NODE_ENV", "JWT_SECRET", "DATABASE_URL", "REDIS_URL", "MONGODB_URI", "SPACES_REGION")
PLAIN_KEYS = tuple(k for k in dict.fromkeys([*USER_KEYS, *BACKEND_ENV]) if not looks_secret_name(k))
"""Keys a plain ``env`` may hold (a secret-looking name there is a config error of its own)."""


def _kro_service(name: str, port: int | None, env: list[str], secret_env: list[str]) -> dict:
    spec = {"name": name, "image": f"registry.digitalocean.com/kro/{name}:2026.11.2", "memory_mb": 256,
            "cpus": 0.25, "env": {k: "v" for k in env}, "secret_env": {k: f"kro_{k.lower()}" for k in secret_env},
            "healthcheck": {"command": ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:80/"]}}
    if port is not None:
        spec["port"] = port
    return spec


KRO_SERVICE = st.tuples(st.sampled_from(SERVICE_NAMES), st.sampled_from([None, 80, 3000]),
                        st.lists(st.sampled_from(PLAIN_KEYS), unique=True, max_size=3),
                        st.lists(st.sampled_from(USER_KEYS), unique=True, max_size=2))


@settings(max_examples=40, deadline=None)
@given(services=st.lists(KRO_SERVICE, min_size=1, max_size=4, unique_by=lambda s: s[0]),
       database_service=st.sampled_from(SERVICE_NAMES), use_pool=st.booleans(), monitored=st.booleans())
def test_kro_plan_invariants_over_generated_configs(services, database_service, use_pool, monitored):
    """Whatever the services, the rules reject exactly the configs whose database service sets
    DATABASE_URL itself (or names no service); every accepted config plans one source per env
    key, a DATABASE_URL through the pool iff ``use_pool``, a port for every scraped service and
    every route, and a backup job that monitoring expects."""
    document = _document("prod")
    cfg = document["config"]["platform:kro"]
    cfg["services"] = [_kro_service(*s) for s in services]
    cfg["database_service"] = database_service
    cfg["database"]["use_pool"] = use_pool
    ported = [s[0] for s in services if s[1] is not None]
    cfg["routes"] = [{"host": f"{name}.krotrust.com", "service": name} for name in ported] or cfg["routes"]
    if not monitored:
        cfg.pop("monitoring")
    by_name = {s[0]: s for s in services}
    own = set(by_name[database_service][2]) | set(by_name[database_service][3]) if database_service in by_name else set()
    try:
        stack_config = _config("prod", document)
    except ConfigError as exc:
        # The only generated problems: a key the program sets, a database service that is not
        # a service, routes to services without a port, a key in env and secret_env at once.
        assert ("DATABASE_URL" in own or database_service not in by_name or not ported
                or any(set(s[2]) & set(s[3]) for s in services)), str(exc)
        return
    assert "DATABASE_URL" not in own and database_service in by_name
    whole = kro.plan(stack_config.product("kro"), stack_config.environment)
    check_plan(whole)  # the shared shape's invariants over the generated configs too
    p = whole.detail
    for service, env in p.env.items():
        keys = [k for k, _ in env.sources]
        assert len(keys) == len(set(keys)), service
    url = dict(p.env[database_service].secret)["DATABASE_URL"]
    assert isinstance(url, ClusterUri) and (url.pool is not None) == use_pool
    assert p.backup_job_names == (p.backup.job,)
    assert all(isinstance(port, int) for port in p.metrics_ports.values())
    assert set(p.metrics_ports) <= set(ported)
    assert {s.name for s in p.services} == set(by_name)
    assert set(p.hosts) == {f"{n}.krotrust.com" for n in ported}


@settings(max_examples=40, deadline=None)
@given(own_env=st.lists(st.sampled_from(PLAIN_KEYS), unique=True, max_size=3),
       own_secret=st.lists(st.sampled_from([*USER_KEYS, *BACKEND_ENV]), unique=True, max_size=3),
       origins=st.lists(st.sampled_from(["www.krogiving.com", "krogiving.com", "partners.krogiving.com"]),
                        unique=True, max_size=3))
# Found by this test: a key in a component's env and secret_env passed the rules, and the plan
# raised (the env map refuses a second source) instead of a config error with its key path.
@example(own_env=["NODE_ENV"], own_secret=["NODE_ENV"], origins=[])
def test_giv_plan_invariants_over_generated_configs(own_env, own_secret, origins):
    """The backend's own env keys and the ones the program sets never overlap in an accepted
    config (the rules name the key); the plan sets every program key once, each secret one a
    reference to a cluster or the media key, and CORS admits the static sites and the extra
    origins, each once."""
    document = _document("prod")
    cfg = document["config"]["platform:giv"]
    backend = cfg["components"][0]
    backend["env"] = {k: "v" for k in own_env}
    backend["secret_env"] = {k: f"giv_{k.lower()}" for k in own_secret}
    cfg["frontend_origins"] = origins
    try:
        stack_config = _config("prod", document)
    except ConfigError as exc:
        assert (set(own_env) | set(own_secret)) & set(BACKEND_ENV) or set(own_env) & set(own_secret), str(exc)
        return
    assert not (set(own_env) | set(own_secret)) & set(BACKEND_ENV)
    whole = giv.plan(stack_config.product("giv"), stack_config.environment)
    check_plan(whole)
    p = whole.detail
    env = p.env[backend["name"]]
    keys = [k for k, _ in env.sources]
    assert len(keys) == len(set(keys)) and set(keys) == {*own_env, *own_secret, *BACKEND_ENV}
    program = {k: v for k, v in [*env.plain, *env.secret] if k in BACKEND_ENV}
    assert set(program) == set(BACKEND_ENV)
    for key, value in program.items():
        assert isinstance(value, (str, ResourceValue, ClusterUri, BucketKey, ConfigSecret)), key
        if isinstance(value, ClusterUri):
            assert value.cluster in {c.resource for c in p.clusters}
    static = {f"https://{c['domain']}" for c in cfg["components"] if c["kind"] == "static_site"}
    assert set(p.media.origins) == static | {f"https://{h}" for h in origins}
    assert len(p.media.origins) == len(set(p.media.origins))
