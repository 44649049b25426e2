"""The synth engine's dependence on Pulumi SDK internals, all in synth/wire.py, checked against
the installed SDK: when an SDK upgrade changes one of them, this fails before any synth lies."""

from __future__ import annotations

import asyncio
import contextvars
import importlib

import pulumi_digitalocean as do
import pytest
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings

from synth import wire

pytestmark = pytest.mark.fast

get_type_token = importlib.import_module("pulumi.type_token").get_type_token


def test_signature_constants_are_the_sdks():
    for ours, theirs in wire.SDK_CONSTANTS.items():
        assert getattr(wire, ours) == getattr(rpc, theirs), (
            f"pulumi/runtime/rpc.py changed {theirs}: update synth/wire.py {ours}")


def test_private_hooks_the_engine_uses_still_exist():
    assert isinstance(settings.SETTINGS.outputs, set)
    assert callable(wire.sync_await) and callable(wire.ensure_event_loop)
    assert isinstance(rpc._RESOURCE_MODULES, dict) and isinstance(rpc._RESOURCE_PACKAGES, dict)
    assert rpc._module_key("digitalocean", "index/vpc") == "digitalocean:index/vpc"
    assert {"urn", "id", "state"} == set(pulumi_mocks.MockMonitor.ResourceRegistration._fields)
    from pulumi.runtime import resource

    original = resource._get_stack_trace
    assert callable(original)
    with wire.without_stack_traces():
        assert resource._get_stack_trace() == wire.source_pb2.StackTrace()
    assert resource._get_stack_trace is original


def test_type_tokens_map_to_the_sdk_classes():
    assert wire.resource_class("digitalocean:index/vpc:Vpc") is do.Vpc
    assert wire.resource_class("pulumi:providers:digitalocean") is do.Provider
    assert get_type_token(do.Vpc) == "digitalocean:index/vpc:Vpc"
    assert wire.resource_class("platform:components:DropletStack") is None
    assert wire.resource_class("digitalocean:index/noSuchThing:NoSuchThing") is None


def test_mock_urns_have_the_engines_shape():
    def make() -> str:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            monitor = pulumi_mocks.MockMonitor(_NoMocks())
            pulumi_mocks.set_mocks(_NoMocks(), project="p", stack="s", monitor=monitor)
            return monitor.make_urn("", "digitalocean:index/vpc:Vpc", "v")
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    urn = contextvars.Context().run(make)
    assert urn == "urn:pulumi:s::p::digitalocean:index/vpc:Vpc::v"
    assert urn.startswith(wire.PULUMI_URN_PREFIX)


class _NoMocks(pulumi_mocks.Mocks):
    def new_resource(self, args):
        return "", {}

    def call(self, args):
        return {}


def test_the_sdk_type_tables_sdkschema_reads():
    assert wire.is_input_type(do.VpcArgs) and not wire.is_input_type(do.Vpc)
    assert wire.input_type_py_to_pulumi_names(do.VpcArgs)["ip_range"] == "ipRange"
    assert wire.input_type_types(do.VpcArgs)["ipRange"] is str
    assert wire.resource_py_to_pulumi_names(do.Vpc)["ip_range"] == "ipRange"
