"""The data-tier probes' and the managed stand-ins' pure parts (no lab, no server): which URLs
are tried, where their CA comes from, and what the stand-ins are told to hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from rehearsal.checks import datastores
from rehearsal.services.managed import ManagedDatabase, managed_databases, postgres_setup_sql, redis_config
from tests.conftest import synth_once

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("url,kind", [
    ("postgresql://u:p@h:5432/d?sslmode=verify-full&sslrootcert=/ca.crt", "postgres"),
    ("postgres://u:p@h/d?sslmode=verify-full", "postgres"),
    ("postgresql://u:p@h:5432/d?sslmode=require", None),
    ("rediss://default:p@h:25061", "redis"),
    ("redis://default:p@redis:6379", None),
    ("mongodb+srv://u:p@h/d?tls=true", None),
    ("https://example.com", None), ("3000", None),
])
def test_which_urls_are_datastore_connections_the_probes_try(url, kind):
    assert datastores.kind(url) == kind


def _app_state(envs):
    return {"resources": [{"type": datastores.APP, "name": "giv-staging-app-app", "inputs": {"spec": {
        "services": [{"name": "backend", "envs": [{"key": k, "value": v} for k, v in envs.items()]}]}}}]}


def test_an_app_platform_component_s_ca_is_the_spec_variable_its_sslrootcert_file_is_named_for():
    state = _app_state({"DATABASE_URL": "postgresql://u:p@db.x:25060/d?sslmode=verify-full&sslrootcert=/w/.certs/postgres-ca.crt",
                        "POSTGRES_CA_CERT": "PEM-OF-THE-CLUSTER", "REDIS_URL": "rediss://default:p@cache.x:25061",
                        "MONGODB_URI": "mongodb+srv://u:p@m.x/d?tls=true"})
    handed = datastores.app_platform_urls(state, ("site",), {"db.x": "100.64.0.1"}.get, b"PUBLIC", product="giv")
    assert [(h.client, h.key, h.address, h.ca_pem) for h in handed] == [
        ("app backend", "DATABASE_URL", "100.64.0.1", b"PEM-OF-THE-CLUSTER"),
        ("app backend", "REDIS_URL", None, b"PUBLIC")]
    assert datastores.app_platform_urls(state, ("site",), str, b"", product="kro") == []
    # No CA variable for the file: nothing to verify against, so not proven (never a pass).
    state = _app_state({"DATABASE_URL": "postgresql://u:p@db.x/d?sslmode=verify-full&sslrootcert=/w/pg-ca.crt"})
    [h] = datastores.app_platform_urls(state, ("site",), {"db.x": "100.64.0.1"}.get, b"")
    [check] = datastores.handed_checks([h], b"")
    assert check.status == "not proven" and "PG_CA_CERT" in check.detail


def test_the_stand_ins_hold_every_managed_cluster_user_and_database_of_staging():
    databases = {d.cluster: d for d in managed_databases(synth_once("staging"))}
    assert {c: d.engine for c, d in databases.items()} == {
        "kro-staging-db-cluster": "pg", "giv-staging-pg-cluster": "pg", "giv-staging-cache-cluster": "valkey",
        "giv-staging-mongo-cluster": "mongodb"}
    kro = databases["kro-staging-db-cluster"]
    assert kro.names == ("kro-staging-db-cluster-do-user-0.db.ondigitalocean.com",
                         "private-kro-staging-db-cluster-do-user-0.db.ondigitalocean.com")
    assert [u for u, _ in kro.users] == ["doadmin", "kro_backend"] and kro.databases == ("kro",)
    sql = postgres_setup_sql(list(databases.values()))
    assert 'CREATE ROLE "kro_backend" LOGIN PASSWORD \'mock-kro-staging-db-user-kro_backend-password\';' in sql
    assert 'CREATE DATABASE "krogiving"' in sql and "mongo" not in sql
    assert sql.count('CREATE ROLE "doadmin"') == 1


def test_sql_and_redis_config_quote_what_they_are_given():
    odd = ManagedDatabase("c", "pg", ("h",), 25060, (('a"b', "p'q"),), ("d",))
    assert 'CREATE ROLE "a""b" LOGIN PASSWORD \'p\'\'q\';' in postgres_setup_sql([odd])
    cache = ManagedDatabase("v", "valkey", ("h",), 25061, (("doadmin", "pw1"),))
    text = redis_config([cache, odd], "100.64.0.1", Path("/c.crt"), Path("/c.key"), Path("/w"))
    assert "port 0\ntls-port 25061\n" in text and "user default on >pw1 ~* &* +@all" in text
