"""Holes a new user found in the config boundary (December 2026), each refused before any
resource is registered with one error at its exact key path and its fix: list items that are no
mapping, mounts outside the service's own directory, root spelled with leading zeros, names that
collide once slugged, TLS switched off in a container's environment, URIs with a password."""

from __future__ import annotations

import copy

import pytest
import yaml

from stacks.errors import ConfigError, key_path
from tests.conftest import PROJECT_ROOT
from tests.test_config_boundary import _has, _problems, _raw

pytestmark = pytest.mark.fast


def _lists_of_mappings(node, loc=()):
    """The loc of every non-empty list whose items are all mappings."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _lists_of_mappings(value, (*loc, key))
    elif isinstance(node, list):
        if node and all(isinstance(item, dict) for item in node):
            yield loc
        for index, value in enumerate(node):
            yield from _lists_of_mappings(value, (*loc, index))


@pytest.mark.parametrize("stack", ["staging", "prod"])
@pytest.mark.parametrize("bad,text", [(None, "is an empty list item (a `-` with nothing after it)"),
                                      ("oops", 'is "oops", not a mapping')])
def test_an_item_that_is_no_mapping_is_one_error_at_its_index(stack, bad, text):
    """A null or scalar item in any list of mappings of a committed stack file: one problem,
    at ``list[index]``, not an AttributeError of a rule that read the item (pencom's
    app_services, read_waivers and egress.https crashed the validation)."""
    from stacks.config import validate_stack_config

    base = yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text())
    locs = list(_lists_of_mappings(base["config"]))
    assert len(locs) >= 15, locs
    for loc in locs:
        document = copy.deepcopy(base)
        node = document["config"]
        for part in loc:
            node = node[part]
        node.append(bad)
        with pytest.raises(ConfigError) as raised:
            validate_stack_config(_raw(document), stack=stack, check_secrets=False)
        top = loc[0].split(":", 1)[1]
        where = key_path(top, (*loc[1:], len(node) - 1), document["config"][loc[0]])
        assert len(raised.value.problems) == 1 and raised.value.problems[0].startswith(f"{where}: {text}"), \
            (loc, raised.value.problems)


@pytest.mark.parametrize("user", ["00", "0000", "00:00", "0:0", "000:1000"])
def test_uid_zero_in_any_spelling_is_root(stack_document, user):
    """Docker reads a numeric user as a number: ``00`` and ``0000:0`` are root as ``0`` is."""
    document = stack_document("staging")
    document["config"]["platform:pencom"]["app_services"][0]["user"] = user
    problems = _problems(document)
    assert _has(problems, "platform:pencom.app_services[0] (core).user", "runs the service as root"), problems


def test_a_uid_with_a_zero_in_it_is_not_root():
    from components.containers import runs_as_root

    assert not any(runs_as_root(u) for u in ("1000", "10:0", "100:100", "rootless", "0x"))


def _mount(host_path, container_path="/t"):
    def mutate(c):
        c["platform:pencom"]["app_services"][0]["mounts"] = [
            {"host_path": host_path, "container_path": container_path, "read_only": False}]
    return mutate


MOUNT = "platform:pencom.app_services[0] (core).mounts[0]"


@pytest.mark.parametrize("host_path", ["/srv", "/srv/", "/srv/pencom-staging-app", "/srv/pencom-staging-data/postgres",
                                       "/srv/pencom-staging-app/core/../payments", "/srv/pencom-staging-app/files/core",
                                       "/opt/core", "/srv/core"])
def test_a_mount_outside_the_services_own_directory_is_refused(stack_document, host_path):
    """/srv or a host's directory hands the service every service's data; another service's
    directory (``..`` included) that service's. Only /srv/<host dir>/<service> and below."""
    document = stack_document("staging")
    _mount(host_path)(document["config"])
    problems = _problems(document)
    assert problems == [f"{MOUNT}.host_path: {host_path} is not the service's own directory; mount "
                        "/srv/<host dir>/core or a directory under it (a mount of /srv, of a host's whole "
                        "directory or of another service's directory gives the container their data)"], problems


@pytest.mark.parametrize("container_path", ["/", "//", "/data/.."])
def test_a_mount_over_the_containers_root_is_refused(stack_document, container_path):
    document = stack_document("staging")
    _mount("/srv/pencom-staging-app/core/cache", container_path)(document["config"])
    problems = _problems(document)
    assert len(problems) == 1 and _has(problems, f"{MOUNT}.container_path", "is the container's root"), problems


def test_a_sensitive_mount_is_one_error_not_two(stack_document):
    document = stack_document("staging")
    _mount("/etc/shadow")(document["config"])
    problems = _problems(document)
    assert len(problems) == 1 and _has(problems, f"{MOUNT}.host_path", "sensitive host directory /etc"), problems


@pytest.mark.parametrize("product,cluster", [("pencom", "platform:pencom.postgres"),
                                             ("vedfinance", "platform:vedfinance.postgres_service")])
def test_a_database_named_wal_is_refused(stack_document, product, cluster):
    """Its backup job would be ``<stack>-wal``, the WAL archive job's name."""
    document = stack_document("staging")
    document["config"][f"platform:{product}"]["databases"][0]["name"] = "wal"
    problems = _problems(document)
    assert problems == [f"platform:{product}.databases[0] (wal).name: wal is the label of the WAL archive job "
                        f"of {cluster} (point-in-time recovery): both would be the backup job <stack>-wal, with "
                        "one set of units, metrics and bucket objects; rename the database"], problems


def test_hostnames_that_name_the_same_resources_are_refused_with_both_paths(stack_document):
    """``api-x.zone`` and ``api.x.zone`` both become the DNS record and uptime check
    ``...-api-x-zone`` and the nginx upstream ``upstream_api_x_zone``: a duplicate URN."""
    document = stack_document("staging")
    routes = document["config"]["platform:kro"]["routes"]
    routes += [{**routes[0], "host": "api-x.stage.krotrust.com"}, {**routes[0], "host": "api.x.stage.krotrust.com"}]
    problems = _problems(document)
    first, second = len(routes) - 2, len(routes) - 1
    assert problems == [
        f"platform:kro.routes[{second}] (api.x.stage.krotrust.com).host: hostname api.x.stage.krotrust.com names "
        "the same DNS record, uptime check and nginx upstream (api-x-stage-krotrust-com) as "
        f"api-x.stage.krotrust.com at platform:kro.routes[{first}] (api-x.stage.krotrust.com).host (dots and "
        "hyphens read alike); rename one"], problems


PASSWORD = "hunter2pw"


@pytest.mark.parametrize("value", [f"bob:{PASSWORD}@api.stage.krotrust.com", f"redis://:{PASSWORD}@r:6379",
                                   f"https://bob:{PASSWORD}@api.stage.krotrust.com"])
@pytest.mark.parametrize("mutate,path", [
    (lambda c, v: c["platform:kro"]["routes"][0].__setitem__("host", v), "platform:kro.routes[0] (backend).host"),
    (lambda c, v: c["platform:kro"]["services"][0].__setitem__("image", v), "platform:kro.services[0] (backend).image"),
    (lambda c, v: c["platform:environment"].__setitem__("name", v), "platform:environment.name"),
    (lambda c, v: c["platform:kro"]["services"][0]["healthcheck"].__setitem__("interval_s", v),
     "platform:kro.services[0] (backend).healthcheck.interval_s"),
])
def test_a_uri_with_a_password_is_never_echoed(stack_document, mutate, path, value):
    """A bad value that carries ``user:password@`` (with or without a scheme, an empty user
    included) is named by its key path; the userinfo is masked wherever a message quotes it."""
    document = stack_document("staging")
    mutate(document["config"], value)
    problems = _problems(document)
    assert _has(problems, path), problems
    assert not any(PASSWORD in p for p in problems), problems


def test_a_uri_with_a_password_is_masked_on_the_command_line(stack_document, write_stack):
    from tests.test_config_boundary import _cli

    document = stack_document("staging")
    document["config"]["platform:kro"]["routes"][0]["host"] = f"bob:{PASSWORD}@api.stage.krotrust.com"
    result = _cli(write_stack(document))
    assert result.returncode == 2, result.stderr
    assert "platform:kro.routes[0] (backend).host: label '***@api'" in result.stderr, result.stderr
    assert PASSWORD not in result.stderr + result.stdout and "Traceback" not in result.stderr


@pytest.mark.parametrize("name,value", [
    ("PGSSLMODE", "require"), ("PGSSLMODE", "verify-ca"), ("PGSSLMODE", "allow"), ("DB_SSLMODE", "disable"),
    ("PYTHONHTTPSVERIFY", "0"), ("GIT_SSL_NO_VERIFY", "false"), ("NODE_TLS_REJECT_UNAUTHORIZED", "0"),
    ("DATABASE_SSL", "false"), ("DB_SSL", "0"), ("REDIS_TLS_ENABLED", "no"), ("VERIFY_SSL", "False"),
    ("DATABASE_SSL_REJECT_UNAUTHORIZED", "false"), ("MINIO_INSECURE", "true"), ("TLS_SKIP_VERIFY", "1"),
])
def test_a_tls_off_switch_by_its_name_is_refused(stack_document, name, value):
    """Below verify-full libpq takes any certificate (require, verify-ca) or none; git skips
    verification when GIT_SSL_NO_VERIFY is set at all; PYTHONHTTPSVERIFY=0 turns it off in
    Python's urllib (PEP 493); a DATABASE_SSL-style switch set false does the same."""
    document = stack_document("staging")
    document["config"]["platform:pencom"]["app_services"][0]["env"][name] = value
    problems = _problems(document)
    from validation.connections import TLS_OFF_FIX

    assert problems == [f"platform:pencom.app_services[0] (core).env.{name}: {name}={value} {TLS_OFF_FIX}"], problems


@pytest.mark.parametrize("name,value", [("PGSSLMODE", "verify-full"), ("DATABASE_SSL", "true"),
                                        ("NODE_TLS_REJECT_UNAUTHORIZED", "1"), ("SSL_CERT_FILE", "/run/platform/ca.crt"),
                                        ("FEATURE_FLAG", "false"), ("INSECURE_COOKIE_WARNING", "false")])
def test_tls_kept_on_passes(name, value):
    from components.container_env import tls_switched_off

    assert tls_switched_off(name, value) is None


HEX_KEY = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


@pytest.mark.parametrize("value", [HEX_KEY, HEX_KEY.upper(), HEX_KEY[:48]])
def test_a_hex_key_in_plain_config_is_refused_unshown(stack_document, value):
    """``openssl rand -hex 32`` pasted as a plain env value: refused like the other plaintext
    secrets, whatever the variable's name, and never quoted."""
    document = stack_document("staging")
    document["config"]["platform:pencom"]["app_services"][0]["env"]["SIGNING_SEED_HEX"] = value
    problems = _problems(document)
    assert _has(problems, "platform:pencom.app_services[0] (core).env.SIGNING_SEED_HEX",
                "holds a hex key in plain text (value not shown)"), problems
    assert not any(value in p for p in problems)


@pytest.mark.parametrize("value", ["4f3e2d1c0b9a88776655443322110fed", "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
                                   "sha256:" + HEX_KEY, "restic " + HEX_KEY, "0" * 64])
def test_ids_and_digests_in_hex_are_no_key(value):
    """A Cloudflare account id (32 digits), a git commit (40), a digest with its algorithm, a
    restic snapshot id after its tool's name, and a run of one digit."""
    from validation.formats import secret_value_kind

    assert secret_value_kind(value) is None
