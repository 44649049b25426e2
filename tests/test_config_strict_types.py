"""The config models are strict about types (``validation.fields.StrictModel``): a value of
another type is one error at its key path with the edit that fixes it, never converted. Lax
pydantic read ``cpus: true`` as 1.0, ``memory_mb: "512"`` as 512 and ``memory_mb: 512.0`` as
512; `pulumi config set --path` stores a float as a string, so that case names ``--type``."""

from __future__ import annotations

import datetime

import pytest

from tests.test_config_boundary import _has, _problems, _raw

pytestmark = pytest.mark.fast

KRO0 = "platform:kro.services[0] (backend)"
QUOTED = "a quoted value is a string: write it without quotes"


def _set(path, value):
    def mutate(config):
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


@pytest.mark.parametrize("path,value,where,fix", [
    (("platform:kro", "services", 0, "memory_mb"), "512", f"{KRO0}.memory_mb", f"{QUOTED} (with `pulumi config set --path`, add `--type int`)"),
    (("platform:kro", "services", 0, "memory_mb"), 512.0, f"{KRO0}.memory_mb", "write a whole number without a decimal point"),
    (("platform:kro", "services", 0, "memory_mb"), True, f"{KRO0}.memory_mb", "write a number here, not true or false"),
    (("platform:kro", "services", 0, "cpus"), True, f"{KRO0}.cpus", "write a number here, not true or false"),
    (("platform:kro", "services", 0, "cpus"), "0.5", f"{KRO0}.cpus", "add `--type float`"),
    (("platform:environment", "management", "break_glass", "enabled"), "yes",
     "platform:environment.management.break_glass.enabled", "add `--type bool`"),
    (("platform:environment", "management", "break_glass", "enabled"), 1,
     "platform:environment.management.break_glass.enabled", "write true or false"),
])
def test_a_value_of_another_type_is_refused_with_its_fix(stack_document, path, value, where, fix):
    document = stack_document("staging")
    _set(path, value)(document["config"])
    problems = _problems(document)
    assert _has(problems, where, fix), problems


def test_an_integer_is_still_a_valid_number_of_cpus(stack_document):
    from stacks.config import validate_stack_config

    document = stack_document("staging")
    _set(("platform:kro", "services", 0, "cpus"), 1)(document["config"])
    config = validate_stack_config(_raw(document), stack="staging", check_secrets=False)
    assert config.product("kro").services[0].cpus == 1.0


def test_text_still_names_a_tier_and_a_day(stack_document):
    """Enumerations and dates have no YAML or JSON form but text, so those fields opt out."""
    from components.tiers import Tier
    from stacks.config import validate_stack_config

    document = stack_document("staging")
    glass = document["config"]["platform:environment"]["management"]["break_glass"]
    glass["expires"] = "2099-01-31"
    config = validate_stack_config(_raw(document), stack="staging", check_secrets=False)
    assert config.environment.management.break_glass.expires == datetime.date(2099, 1, 31)
    assert config.product("pencom").postgres.tier is Tier.DATA
