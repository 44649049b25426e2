"""Every detail of the Pulumi SDK's wire format and internals that the synth engine relies on.

The engine speaks the resource monitor's protocol directly (it records whole
``RegisterResourceRequest``s), so it depends on values and private names that the SDK does not
promise to keep. They are all here, in one place, and ``tests/test_synth_wire.py`` fails loudly
when the installed SDK (``pulumi==3.272.0`` in requirements.txt) changes any of them.

Sources: ``pulumi/runtime/rpc.py`` (signature keys, the unknown sentinel, resource registries),
``pulumi/_types.py`` (the input-type and resource property tables),
``pulumi/runtime/mocks.py`` (URN shape), ``pulumi/runtime/settings.py`` (the pending-outputs
set), ``pulumi/runtime/sync_await.py``, and the provider SDKs' generated ``_utilities.py``
(``Module.mod_info`` and ``Package.pkg_info``: the type token -> class table each package
registers on import).
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any, Iterator, Optional

from pulumi.runtime import resource as _resource_runtime
from pulumi.runtime import rpc
from pulumi.runtime.proto import source_pb2
from pulumi.runtime import settings as _settings
from pulumi import _types as _sdk_types
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

# Copied from pulumi/runtime/rpc.py (and sdk/go/common/resource/properties.go): keys and
# signatures that mark secrets, resource references, output values, assets and archives in a
# property map, and the string that stands for an unknown value.
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
OUTPUT_SIG = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
ASSET_SIG = "c44067f5952c0a294b673a41bacd8c17"
ARCHIVE_SIG = "0def7320c3a5731c473e5ecbe6d01bc7"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

# The SDK's own names for the values above, checked against ours by the wire test.
SDK_CONSTANTS = {
    "SIG_KEY": "_special_sig_key",
    "SECRET_SIG": "_special_secret_sig",
    "RESOURCE_SIG": "_special_resource_sig",
    "OUTPUT_SIG": "_special_output_value_sig",
    "ASSET_SIG": "_special_asset_sig",
    "ARCHIVE_SIG": "_special_archive_sig",
    "UNKNOWN": "UNKNOWN",
}

# Pulumi's own URNs (``urn:pulumi:<stack>::<project>::<type>::<name>``, as MockMonitor.make_urn
# builds them). A provider never accepts one as an input.
PULUMI_URN_PREFIX = "urn:pulumi:"

serialize_properties = rpc.serialize_properties
deserialize_properties = rpc.deserialize_properties

# The SDK's event-loop helpers (pulumi/runtime/sync_await.py): run a coroutine to completion
# from synchronous code, and make sure the thread has a loop to run it on.
sync_await = _sync_await
ensure_event_loop = _ensure_event_loop

# The type tables the ``@pulumi.input_type`` and resource classes carry (pulumi/_types.py),
# read by synth/sdkschema.py to derive the provider schemas: whether a class is an input type,
# its Python -> engine property names, its properties' types by engine name, and a resource class's
# output names.
is_input_type = _sdk_types.is_input_type
input_type_py_to_pulumi_names = _sdk_types.input_type_py_to_pulumi_names
input_type_types = _sdk_types.input_type_types
resource_py_to_pulumi_names = _sdk_types.resource_py_to_pulumi_names


def clear_pending_outputs() -> None:
    """Forget the SDK's process-wide set of pending output tasks (``SETTINGS.outputs``).

    It lives outside any context variable, so tasks left by a run that failed would otherwise
    be awaited on the next run's event loop."""
    _settings.SETTINGS.outputs.clear()


@contextlib.contextmanager
def without_stack_traces() -> Iterator[None]:
    """Skip the SDK's per-registration stack trace (``pulumi/runtime/resource.py``
    ``_get_stack_trace``: it walks the whole Python stack and reads each frame's source line, to
    give the engine source positions for its diagnostics). The capture records none of it, and
    it costs about 5% of a synth's CPU time."""
    original = _resource_runtime._get_stack_trace
    _resource_runtime._get_stack_trace = source_pb2.StackTrace
    try:
        yield
    finally:
        _resource_runtime._get_stack_trace = original


def secret(value: Any) -> dict[str, Any]:
    """``value`` wrapped as a secret in a property map."""
    return {SIG_KEY: SECRET_SIG, "value": value}


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


def _import_package(pkg: str) -> None:
    # A provider SDK registers its type table when imported; ``pulumi_<pkg>`` is the codegen's
    # module name for package ``pkg``.
    try:
        importlib.import_module(f"pulumi_{pkg}")
    except ImportError:
        pass


def resource_class(type_token: str) -> Optional[type]:
    """The SDK class of a custom resource or provider type token, or None when no installed SDK
    registers it (components, or a package that is not installed).

    ``pulumi:providers:<pkg>`` tokens come from the package table (``pkg_info``), every other
    token ``<pkg>:<module>:<Type>`` from the module table (``mod_info``)."""
    parts = type_token.split(":")
    if len(parts) != 3:
        return None
    if parts[0] == "pulumi" and parts[1] == "providers":
        _import_package(parts[2])
        for package in rpc._RESOURCE_PACKAGES.get(parts[2], []):
            info = package.pkg_info
            if info.get("token") == type_token:
                return getattr(importlib.import_module(info["fqn"]), info["class"])
        return None
    pkg, mod, _ = parts
    _import_package(pkg)
    for module in rpc._RESOURCE_MODULES.get(rpc._module_key(pkg, mod), []):
        class_name = module.mod_info.get("classes", {}).get(type_token)
        if class_name:
            return getattr(importlib.import_module(module.mod_info["fqn"]), class_name)
    return None
