"""Builders for the small desired-state documents the policies' cases are made of (the synth
JSON shape: ``{"resources": [{"urn", "type", "name", "inputs", ...}]}``)."""

from __future__ import annotations

from typing import Any, Iterable

from policy.rules.base import T_COMMAND, T_CONTAINER

URN = "urn:pulumi:{stack}::platform::{type}::{name}"
WORLD = ["0.0.0.0/0", "::/0"]


def urn(type_: str, name: str, stack: str = "prod") -> str:
    return URN.format(stack=stack, type=type_, name=name)


def res(type_: str, name: str, inputs: dict, *, stack: str = "prod", deps: Iterable[str] = (),
        protect: bool = False, secret_inputs: Iterable[str] = (), custom: bool = True) -> dict:
    return {"urn": urn(type_, name, stack), "type": type_, "name": name, "custom": custom,
            "parent": None, "provider": None, "inputs": inputs, "secret_inputs": list(secret_inputs),
            "dependencies": list(deps), "protect": protect, "retain_on_delete": protect,
            "delete_before_replace": False, "ignore_changes": [], "import_id": None}


def doc(*resources: dict, stack: str = "prod") -> dict:
    return {"project": "platform", "stack": stack, "resources": list(resources), "outputs": {}}


def container_inputs(**overrides: Any) -> dict:
    inputs = {"image": "sha256:abc", "memory": 256, "cpus": "0.5",
              "healthcheck": {"tests": ["CMD", "true"]}, "privileged": False,
              "securityOpts": ["no-new-privileges:true"], "user": "1000:1000",
              "capabilities": {"drops": ["ALL"]}, "readOnly": True, "restart": "unless-stopped",
              "logDriver": "json-file", "logOpts": {"max-size": "10m", "max-file": "5"},
              "labels": [{"label": "platform.tier", "value": "app"}], "ports": [], "volumes": []}
    inputs.update(overrides)
    return {k: v for k, v in inputs.items() if v is not None}


def container(name: str = "c", **overrides: Any) -> dict:
    return res(T_CONTAINER, name, container_inputs(**overrides))


def script(name: str, files: dict[str, str] | None = None, body: str = "") -> dict:
    """A remote command whose stdin writes ``files`` with put_file heredocs, then ``body``."""
    parts = ["#!/usr/bin/env bash", "set -euo pipefail"]
    for path, content in (files or {}).items():
        parts.append(f"if put_file {path} 0644 root:root <<'PLATFORM_EOF'; then\n{content.rstrip()}\nPLATFORM_EOF\n  true\nfi")
    parts.append(body)
    return res(T_COMMAND, name, {"create": "bash -s", "stdin": "\n".join(parts) + "\n",
                                 "connection": {"host": "10.0.0.5", "user": "deploy", "privateKey": "[secret]"}})
