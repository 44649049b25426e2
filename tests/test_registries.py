"""Private registries: the Docker provider of each host gets the product's registry logins."""

from __future__ import annotations

import json

import pytest

from components.dockerhost import image_registry, registry_auth
from tests.diff_catalog import product_document

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("image, host", [
    ("registry.digitalocean.com/kro/kro-backend:2026.11.2", "registry.digitalocean.com"),
    ("ghcr.io/v-edfinance/api:2026.11.3", "ghcr.io"),
    ("redis:7.4.1-alpine", "docker.io"),
    ("pgvector/pgvector:0.8.0-pg17", "docker.io"),
    ("localhost:5000/x:1", "localhost:5000"),
])
def test_image_registry_follows_dockers_reference_grammar(image, host):
    assert image_registry(image) == host


def test_only_private_registries_in_use_get_credentials():
    images = ["ghcr.io/a/b:1", "redis:7", "registry.digitalocean.com/k/x:1"]
    auth = registry_auth(images, "{}")
    assert [a.address for a in auth] == ["ghcr.io", "registry.digitalocean.com"]
    assert registry_auth(images, None) == []
    assert [a.address for a in registry_auth(["redis:7"], "{}")] == []


def _provider(state, suffix):
    return next(r for r in state.of_type("pulumi:providers:docker") if r["name"].endswith(suffix))


def test_kro_pulls_from_docr_with_a_required_secret(synth, write_stack):
    from stacks.config import validate_stack_config
    from stacks.errors import ConfigError

    document = product_document("kro")
    state = synth(write_stack(document, "staging"), reveal_secrets=True)
    provider = _provider(state, "kro-staging-docker")
    assert "registryAuth" in provider["secret_inputs"], "credentials are secret"
    auth = provider["inputs"]["registryAuth"]
    auth = json.loads(auth) if isinstance(auth, str) else auth
    assert [a["address"] for a in auth] == ["registry.digitalocean.com"]
    assert auth[0]["configFileContent"] == "synth-placeholder-secret:platform:kro_registry_auth"
    raw = {k.split(":", 1)[1]: v for k, v in document["config"].items()}
    raw = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in raw.items()}
    with pytest.raises(ConfigError, match=r"platform:kro_registry_auth: required secret is not set"):
        validate_stack_config(raw, {"kro_ssh_private_key", "kro_jwt_secret", "kro_alerts_smtp_password"})


def test_ghcr_credentials_are_optional_and_used_when_set(synth, write_stack):
    document = product_document("vedfinance")
    without = synth(write_stack(document, "staging"))
    assert "registryAuth" not in _provider(without, "vedfinance-staging-docker")["inputs"]
    document["config"]["platform:vedfinance_registry_auth"] = {"secure": "v1:docker-config"}
    state = synth(write_stack(document, "staging"), reveal_secrets=True)
    provider = _provider(state, "vedfinance-staging-docker")
    auth = provider["inputs"]["registryAuth"]
    auth = json.loads(auth) if isinstance(auth, str) else auth
    assert [a["address"] for a in auth] == ["ghcr.io"]
    assert auth[0]["configFileContent"].startswith("synth-placeholder-secret")
    assert "registryAuth" in provider["secret_inputs"]
