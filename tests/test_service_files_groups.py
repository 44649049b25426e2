"""A certificate travels with its key: the plain files in a secret file's directory are
delivered in the secrets' commit, so a re-issued leaf restarts its server once, on a matching
pair, while every other plain file stays in the readable ``files-<service>`` diff."""

from __future__ import annotations

import re

import pytest

from components.service_files import HostFile, delivery_groups

pytestmark = pytest.mark.fast

WRITTEN = re.compile(r"^if put_file (\S+) ", re.M)


def test_a_certificate_in_its_keys_directory_goes_with_the_key():
    crt = HostFile("/run/platform/tls/server.crt", "cert")
    key = HostFile("/run/platform/tls/server.key", "key", mode="0600", owner="999:999")
    ca = HostFile("/run/platform/ca.crt", "ca")
    hba = HostFile("/run/platform/hba/pg_hba.conf", "hba")
    assert delivery_groups([crt, key, ca, hba]) == {"files": [ca, hba], "secrets": [crt, key]}
    # No secret: one readable group; only secrets: one group.
    assert delivery_groups([crt, ca]) == {"files": [crt, ca]}
    assert delivery_groups([key]) == {"secrets": [key]}


def test_alertmanager_keeps_its_config_readable_and_its_password_apart():
    config = HostFile("/etc/alertmanager/alertmanager.yml", "route: {}")
    password = HostFile("/etc/alertmanager/secrets/smtp_password", "pw", mode="0400", owner="65534:65534")
    assert delivery_groups([config, password]) == {"files": [config], "secrets": [password]}


@pytest.fixture(scope="module")
def staging_scripts():
    from synth.state import State
    from tests.conftest import synth_once

    state = State(synth_once("staging", reveal_secrets=True))
    return {c["name"]: c["inputs"]["stdin"] for c in state.of_type("command:remote:Command")}


@pytest.mark.parametrize("step_prefix, service, key", [
    ("pencom-staging-data", "postgres", "/run/platform/tls/server.key"),
    ("pencom-staging-data", "redis", "/run/platform/tls/redis.key"),
    ("vedfinance-staging", "postgres", "/run/platform/tls/server.key")])
def test_the_stacks_datastore_certificates_are_committed_with_their_keys(staging_scripts, step_prefix, service, key):
    secrets = staging_scripts[f"{step_prefix}-secrets-{service}"]
    files = staging_scripts.get(f"{step_prefix}-files-{service}", "")
    written = [p.rsplit(f"/files/{service}", 1)[1] for p in WRITTEN.findall(secrets)]
    assert key in written and "/run/platform/tls/server.crt" in written, written
    assert "/run/platform/tls/server.crt" not in [p.rsplit(f"/files/{service}", 1)[1] for p in WRITTEN.findall(files)]
    # One commit: one restart of the server for a new pair.
    assert len(re.findall(r"^  commit_files '[^']*' 'for cid in [^']*docker restart", secrets, re.M)) == 1
