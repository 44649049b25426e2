"""The products' plans (``stacks/<product>/plan.py``), read as plain values: no mock engine, no
resources. What the synth tests check on the desired state, checked here where it is decided:
one source per env key, every datastore backed up, every backup expected by monitoring, every
scraped service with a port."""

from __future__ import annotations

import dataclasses
import json

import pulumi
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stacks import pencom, vedfinance
from stacks.config import validate_stack_config
from stacks.errors import ConfigError
from stacks.wiring import BucketKey, ConfigSecret, EnvMaps, Generated, SecretUrl, ServiceEnv
from synth.engine import PROJECT_ROOT

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
    for product, module in (("pencom", pencom), ("vedfinance", vedfinance)):
        if product in stack_config.products:
            found[product] = module.plan(stack_config.product(product), stack_config.environment)
    return found


def _walk(value, path="plan"):
    """Every value inside a plan, with where it sits."""
    yield path, value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _walk(getattr(value, f.name), f"{path}.{f.name}")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{path}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


def test_both_stacks_plan_something(stack):
    name, stack_config = stack
    plans = _plans(stack_config)
    assert "pencom" in plans, "a scan of no plan would pass every test below"
    assert (name == "staging") == ("vedfinance" in plans)


def test_plans_are_frozen_plain_values(stack):
    for product, plan in _plans(stack[1]).items():
        for path, value in _walk(plan):
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
    containers = {s.name: s for s in [*plan.edge, *plan.app]}
    for spec in [*cfg.edge_services, *cfg.app_services]:
        assert containers[spec.name].env == {**spec.env, **dict(plan.env[spec.name].plain)}


def test_every_datastore_is_backed_up_and_every_backup_is_watched(stack):
    stack_config = stack[1]
    for product, plan in _plans(stack_config).items():
        cfg = stack_config.product(product)
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
    plan = pencom.plan(stack_config.product("pencom"), stack_config.environment)
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
