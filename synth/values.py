"""Property values as the engine receives them, made into reviewable JSON: wire values decoded
(secrets, unknowns, resource references, assets), each secret leaf masked as ``[secret]``
and each unknown as ``[unknown]``, a digest per secret leaf so a diff can tell that it
changed, and the leaf paths (``spec.services[0].envs[2].value``) that name them."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from google.protobuf import json_format

from synth.wire import ARCHIVE_SIG, ASSET_SIG, OUTPUT_SIG, RESOURCE_SIG, SECRET_SIG, SIG_KEY, UNKNOWN

SECRET_MASK = "[secret]"
UNKNOWN_MASK = "[unknown]"


def _plain_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def decode(value: Any, reveal: bool = False) -> tuple[Any, bool]:
    """Engine wire value -> (plain JSON value with secrets masked, whether it held a secret).

    ``reveal`` keeps secret values (still reported as secret): only tests use it, to check what
    a secret contains.
    """
    if isinstance(value, dict):
        sig = value.get(SIG_KEY)
        if sig == SECRET_SIG:
            return (decode(value.get("value"), reveal)[0] if reveal else SECRET_MASK), True
        if sig == OUTPUT_SIG:
            if value.get("secret"):
                return (decode(value.get("value"), reveal)[0] if reveal else SECRET_MASK), True
            if "value" not in value:
                return UNKNOWN_MASK, False
            return decode(value["value"], reveal)
        if sig == RESOURCE_SIG:
            return value.get("urn"), False
        if sig == ASSET_SIG:
            for kind in ("text", "path", "uri"):
                if kind in value:
                    return {"asset": kind, "value": value[kind]}, False
        if sig == ARCHIVE_SIG:
            return {"archive": {k: v for k, v in value.items() if k != SIG_KEY}}, False
        out, secret = {}, False
        for key, item in value.items():
            out[key], item_secret = decode(item, reveal)
            secret = secret or item_secret
        return out, secret
    if isinstance(value, list):
        out_list, secret = [], False
        for item in value:
            plain, item_secret = decode(item, reveal)
            out_list.append(plain)
            secret = secret or item_secret
        return out_list, secret
    if isinstance(value, float):
        return _plain_number(value), False
    if value == UNKNOWN:
        return UNKNOWN_MASK, False
    return value, False


def leaf_path(parts: tuple) -> str:
    """``("spec", "services", 0, "envs", 2, "value")`` -> ``spec.services[0].envs[2].value``:
    the key format of ``secret_leaves`` in the state JSON, which ``synth diff`` rebuilds."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def secret_leaf_paths(value: Any, parts: tuple = ()) -> list[tuple]:
    """Paths (tuples of keys and list indexes) of the secret values inside an engine wire value.

    The walk stops at a secret: a secret object is one leaf, masked as a whole."""
    if isinstance(value, dict):
        sig = value.get(SIG_KEY)
        if sig == SECRET_SIG or (sig == OUTPUT_SIG and value.get("secret")):
            return [parts]
        if sig == OUTPUT_SIG:
            return secret_leaf_paths(value.get("value"), parts) if "value" in value else []
        if sig in (RESOURCE_SIG, ASSET_SIG, ARCHIVE_SIG):
            return []
        return [p for key, item in value.items() for p in secret_leaf_paths(item, parts + (key,))]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in secret_leaf_paths(item, parts + (index,))]
    return []


def holds_unknown(value: Any) -> bool:
    """Whether a decoded (plain JSON) value is, or contains, the unknown mask ``"[unknown]"``."""
    if isinstance(value, dict):
        return any(holds_unknown(item) for item in value.values())
    if isinstance(value, list):
        return any(holds_unknown(item) for item in value)
    return value == UNKNOWN_MASK


def _at(value: Any, parts: tuple) -> Any:
    for part in parts:
        value = value[part]
    return value


def digest(value: Any) -> str:
    """A short digest of a (revealed) secret value: enough to tell that it changed."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


# Docker takes environment variables as ``NAME=value`` strings (pulumi_docker Container.envs);
# the name of a secret one is not secret, and a diff that names it is far more useful.
_ENV_NAME = re.compile(r"^([A-Z_][A-Z0-9_]{0,63})=")


def secret_leaves(raw: dict[str, Any], revealed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{leaf path: {"digest": ..., ["env": NAME], ["unknown": True]}}`` for every secret leaf
    of the inputs (``unknown`` when a preview does not know the value yet)."""
    leaves: dict[str, dict[str, str]] = {}
    for key in sorted(raw):
        for parts in secret_leaf_paths(raw[key], (key,)):
            value = _at(revealed, parts)
            leaf = {"digest": digest(value)}
            if holds_unknown(value):
                # A preview's secret that is not known yet: a diff must not read the digest
                # of the unknown marker as a new value.
                leaf["unknown"] = True
            if parts[0] == "envs" and len(parts) == 2 and isinstance(value, str):
                match = _ENV_NAME.match(value)
                if match:
                    leaf["env"] = match.group(1)
            leaves[leaf_path(parts)] = leaf
    return leaves


def decode_struct(struct, reveal: bool = False) -> tuple[dict[str, Any], list[str]]:
    raw = json_format.MessageToDict(struct, preserving_proto_field_name=True)
    inputs: dict[str, Any] = {}
    secret_keys: list[str] = []
    for key, value in sorted(raw.items()):
        inputs[key], secret = decode(value, reveal)
        if secret:
            secret_keys.append(key)
    return inputs, sorted(secret_keys)
