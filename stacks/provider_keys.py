"""The config keys each provider the program uses reads, taken from its installed SDK.

Every ``pulumi-<name>`` package generates ``pulumi_<name>/config/vars.py``: one property per
provider setting, each reading ``__config__.get('<key>')`` (or ``get_int``, ``get_bool``...)
of ``__config__ = pulumi.Config('<name>')``. Those calls are the keys the provider takes
(``digitalocean:token``, ``cloudflare:apiToken``, ``docker:host``), so the list follows the
SDK in requirements.txt with no copy to keep up; a package without ``config/`` (pulumi-command,
pulumi-random) has no provider settings. The module is read, not imported (``ast``): no
provider code runs to find a key name.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import lru_cache
from pathlib import Path

ENGINE_KEYS = frozenset({"version", "pluginDownloadURL"})
"""Keys of a provider's namespace that the Pulumi engine, not the provider, reads for the default
provider: the plugin's version and where to download it (``pkg/resource/deploy/providers``,
``GetProviderVersion`` and ``GetProviderDownloadURL``)."""


def _vars_file(namespace: str) -> Path | None:
    """``config/vars.py`` of the installed ``pulumi_<namespace>``; None when the package has
    none. LookupError when the package is not installed."""
    spec = importlib.util.find_spec(f"pulumi_{namespace}")
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"pulumi_{namespace} is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "config" / "vars.py"
    return path if path.is_file() else None


def _config_calls(tree: ast.Module) -> tuple[str | None, set[str]]:
    """The namespace of ``__config__ = pulumi.Config('<ns>')`` and the first argument of every
    ``__config__.<get...>('<key>')`` call in a generated ``vars.py``."""
    namespace, keys = None, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__config__"
                                                for t in node.targets) \
                and isinstance(node.value, ast.Call) and node.value.args \
                and isinstance(node.value.args[0], ast.Constant):
            namespace = node.value.args[0].value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "__config__" \
                and node.func.attr.startswith("get") and node.args and isinstance(node.args[0], ast.Constant):
            keys.add(node.args[0].value)
    return namespace, keys


@lru_cache(maxsize=None)
def provider_keys(namespace: str) -> frozenset[str] | None:
    """The keys of ``<namespace>:`` the provider of ``pulumi_<namespace>`` reads (the SDK's
    ``config/vars.py``), empty when the SDK has no config module; None when the SDK is not
    installed or its config module reads another namespace (then nothing is judged). The
    engine's ``ENGINE_KEYS`` are not among them."""
    try:
        path = _vars_file(namespace)
    except LookupError:
        return None
    if path is None:
        return frozenset()
    read_namespace, keys = _config_calls(ast.parse(path.read_text(), str(path)))
    return frozenset(keys) if read_namespace == namespace else None
