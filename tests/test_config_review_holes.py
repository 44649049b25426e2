"""Holes a new user's review found in the config boundary (December 2026, second round), each
refused before any resource is registered with one error at its exact key path and its fix:
signed uids, PostgreSQL major upgrades hidden in a pgvector tag, a management network that
overlaps another network of the stack, service names that are the host's own directories,
maintenance windows far from today, and the error paths of the CLIs."""

from __future__ import annotations

import pytest

from tests.test_config_boundary import _has, _problems

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("user,part", [("-0", "-0"), ("-0:-0", "-0"), ("+0:+0", "+0"), ("1000:-0", "-0"),
                                       ("+1000", "+1000")])
def test_a_signed_uid_or_gid_is_refused(stack_document, user, part):
    """Docker reads a numeric user with Go's strconv.Atoi, which takes a sign: -0 and +0 are root."""
    document = stack_document("staging")
    document["config"]["platform:pencom"]["app_services"][0]["user"] = user
    problems = _problems(document)
    assert len(problems) == 1 and problems[0].startswith(
        f"platform:pencom.app_services[0] (core).user: has the signed id {part}: Docker reads -0 and +0 as uid 0 "
        "(Go's strconv.Atoi); write the uid:gid without a sign (e.g. 1000:1000)"), problems


def test_the_boundary_and_the_policy_share_one_root_test():
    from validation.users import runs_as_root, signed_id

    assert all(runs_as_root(u) for u in ("root", "0", "00:00", "-0", "+0:+0", "-000"))
    assert not any(runs_as_root(u) for u in ("1000", "10:0", "-1", "0x", "rootless", "", "--0"))
    assert [signed_id(u) for u in ("-0", "1:+2", "1000:1000", "a-b", "-", "--0")] == ["-0", "+2", None, None, None, None]


PGVECTOR = "platform:vedfinance.services[4] (postgres).maintenance"


def _pgvector_ack(document: dict, replaces: str, image: str = "pgvector/pgvector:0.8.0-pg17") -> dict:
    service = document["config"]["platform:vedfinance"]["services"][4]
    assert service["image"] == "pgvector/pgvector:0.8.0-pg17", "the committed staging stack moved: update the test"
    service["image"] = image
    service["maintenance"] = {"image": image, "replaces": replaces,
                              "backup": "restic snapshot 1a2b3c4d in r2:vedfinance-staging",
                              "restore_test": "2026-12-01", "window_start": "2026-12-06T02:00:00Z"}
    return document


@pytest.fixture
def december_2(monkeypatch):
    """Today is 2026-12-02 for the config boundary (``validation.clock``)."""
    import datetime

    from validation import clock

    monkeypatch.setattr(clock, "today", lambda: datetime.date(2026, 12, 2))


def test_a_pgvector_postgresql_major_upgrade_is_not_a_patch(stack_document, december_2):
    """pgvector tags lead with pgvector's version: 0.8.0-pg16 to 0.8.0-pg17 is PostgreSQL 16 to 17."""
    document = _pgvector_ack(stack_document("staging"), "pgvector/pgvector:0.8.0-pg16")
    name = document["config"]["platform:vedfinance"]["services"][4]["name"]
    problems = _problems(document)
    assert problems == [f"platform:vedfinance.services[4] ({name}).maintenance.replaces: pgvector/pgvector:0.8.0-pg16 "
                        "to pgvector/pgvector:0.8.0-pg17 changes the PostgreSQL major version (16 to 17): the data "
                        "files need an upgrade (pg_upgrade, or a dump and restore), which a container replacement "
                        "does not do"], problems


def test_a_tag_whose_major_cannot_be_read_is_refused_not_guessed(stack_document, december_2):
    document = _pgvector_ack(stack_document("staging"), "pgvector/pgvector:0.7.4", "pgvector/pgvector:0.8.0")
    name = document["config"]["platform:vedfinance"]["services"][4]["name"]
    problems = _problems(document)
    assert problems == [f"platform:vedfinance.services[4] ({name}).maintenance.replaces: the major version cannot "
                        "be read from pgvector/pgvector:0.7.4 and pgvector/pgvector:0.8.0: an acknowledgement covers "
                        "a patch within one major version, so tag both images with their version (e.g. "
                        "17.3-bookworm, 0.8.0-pg17)"], problems


def test_image_major_reads_the_postgresql_major():
    from components.container_fields import image_major

    assert image_major("pgvector/pgvector:0.8.0-pg17") == ("PostgreSQL", "17")
    assert image_major("pgvector/pgvector:pg16") == ("PostgreSQL", "16")
    assert image_major("postgres:17.2-bookworm") == ("PostgreSQL", "17")
    assert image_major("postgis/postgis:16-3.4") == ("PostgreSQL", "16")
    assert image_major("mongo:7.0.15") == ("", "7")
    assert image_major("postgres:017") == image_major("postgres:17.0")
    assert image_major("pgvector/pgvector:0.8.0") is None
    assert image_major("minio/minio:RELEASE.2025-04-22T22-12-26Z") is None


@pytest.mark.parametrize("window,restore,path,text", [
    ("2099-01-01T02:00:00Z", "2098-12-30", "window_start",
     "(2099-01-01) is more than 90 days ahead (today 2026-12-02, at the latest 2027-03-02); set the window"),
    ("2027-03-03T02:00:00Z", "2027-03-01", "window_start", "(2027-03-03) is more than 90 days ahead"),
    ("2020-01-01T02:00:00Z", "2019-11-30", "restore_test",
     "(2019-11-30) is more than 30 days before the window (2020-01-01)"),
    ("2026-12-06T02:00:00Z", "2026-11-05", "restore_test",
     "(2026-11-05) is more than 30 days before the window (2026-12-06); run the restore test"),
    ("2026-12-06T02:00:00Z", "2026-12-07", "restore_test", "(2026-12-07) is after the window (2026-12-06)"),
])
def test_a_maintenance_window_far_ahead_or_a_stale_restore_test_is_refused(stack_document, december_2, window, restore, path, text):
    document = _pgvector_ack(stack_document("staging"), "pgvector/pgvector:0.8.0-pg17", "pgvector/pgvector:0.8.1-pg17")
    plan = document["config"]["platform:vedfinance"]["services"][4]["maintenance"]
    plan["window_start"], plan["restore_test"] = window, restore
    problems = _problems(document)
    assert len(problems) == 1 and _has(problems, f"{PGVECTOR}.{path}", text), problems


@pytest.mark.parametrize("window,restore", [("2026-12-01T02:00:00Z", "2026-11-01"),
                                            ("2027-03-02T02:00:00Z", "2027-03-02"),
                                            ("2026-06-06T02:00:00Z", "2026-06-05")])
def test_a_maintenance_window_at_the_limits_is_accepted(stack_document, december_2, window, restore):
    """A past window stays accepted: README step 5 leaves the acknowledgement in place after its
    patch (removing it would replace the container), and the boundary runs on every deploy."""
    from stacks.config import validate_stack_config
    from tests.test_config_boundary import _raw

    document = _pgvector_ack(stack_document("staging"), "pgvector/pgvector:0.8.0-pg17", "pgvector/pgvector:0.8.1-pg17")
    plan = document["config"]["platform:vedfinance"]["services"][4]["maintenance"]
    plan["window_start"], plan["restore_test"] = window, restore
    validate_stack_config(_raw(document), stack="staging", check_secrets=False)


@pytest.mark.parametrize("network,other", [
    ("10.111.0.0/24", "platform:kro.vpc_ip_range (10.111.0.0/20)"),
    ("10.121.0.0/24", "platform:giv.vpc_ip_range (10.121.0.0/20)"),
    ("172.17.0.0/24", "docker0's default subnet on every host (172.17.0.0/16)"),
    ("172.31.251.0/24", "platform:kro.egress.subnet (172.31.251.0/24)"),
    ("10.41.0.0/24", "platform:pencom.internal_cidr (10.41.0.0/24)"),
    ("172.31.252.0/24", "platform:pencom.egress.node_subnets.data (172.31.252.0/24)"),
])
def test_the_management_network_stays_apart_from_every_network_of_the_stack(stack_document, network, other):
    """A VPC, a private network, a Docker subnet of the program or docker0: a peer's replies would
    be routed into it. One problem per overlapped network, at management.network, naming it."""
    document = stack_document("staging")
    management = document["config"]["platform:environment"]["management"]
    management["network"] = network
    base = network.split("/")[0].rsplit(".", 1)[0]
    for i, peer in enumerate(management["peers"]):
        peer["address"] = f"{base}.{16 + i}"
    problems = _problems(document)
    where = "platform:environment.management.network"
    assert _has(problems, where, f"{network} overlaps {other}: a peer's replies would go into that network; "
                "choose a private range apart from every network of the stack"), problems
    assert all(p.startswith(where + ":") for p in problems), problems


HOST_DIRS_TEXT = ("is a directory the host keeps for itself in /srv/<host dir>/ (acme (the ingress's), alertmanager "
                  "(the monitoring stack's), files (every service's delivered files), grafana (the monitoring "
                  "stack's), nginx (the ingress's), prometheus (the monitoring stack's), tls (the ingress's private "
                  "keys)) and a service's directory is /srv/<host dir>/<its name>; rename the service")


@pytest.mark.parametrize("name", ["tls", "files", "acme", "nginx", "prometheus"])
@pytest.mark.parametrize("product,services,host", [("kro", "services", "kro-staging"),
                                                   ("vedfinance", "services", "vedfinance-staging"),
                                                   ("pencom", "app_services", "pencom-staging-app")])
def test_a_service_named_like_a_host_directory_is_refused(stack_document, name, product, services, host):
    """A KRO service named tls mounting /srv/kro-staging/tls would read nginx's private keys; one
    named files every service's delivered files. One error, at the name, with the list."""
    document = stack_document("staging")
    service = document["config"][f"platform:{product}"][services][0]
    service["name"] = name
    service["mounts"] = [{"host_path": f"/srv/{host}/{name}", "container_path": "/data", "read_only": True}]
    problems = _problems(document)
    where = f"platform:{product}.{services}[0] ({name})"
    assert _has(problems, f"{where}.name", f"{name} {HOST_DIRS_TEXT}"), problems
    assert not [p for p in problems if p.startswith(f"{where}.name") and HOST_DIRS_TEXT not in p], problems
    assert not _has(problems, f"{where}.mounts[0].host_path"), problems


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_the_host_directories_are_every_directory_the_synthesized_hosts_keep(stack):
    """Every first-level directory under /srv/<host>/ in the synthesized state is a service's
    (a container of the stack) or one of HOST_DIRECTORIES, and each of those is used."""
    import json
    import re

    from components.containers import HOST_DIRECTORIES
    from tests.conftest import synth_once

    state = synth_once(stack)
    containers = {r["name"] for r in state["resources"]
                  if r["type"] == "docker:index/container:Container"}
    text = json.dumps(state)
    found = set(re.findall(r"/srv/[a-z0-9-]+/([A-Za-z0-9._-]+)", text))
    services = {d for d in found if any(c == d or c.endswith(f"-{d}") for c in containers)}
    assert found - services <= set(HOST_DIRECTORIES), found - services
    assert set(HOST_DIRECTORIES) <= found, set(HOST_DIRECTORIES) - found


@pytest.mark.parametrize("key,shown,kind", [
    (None, "~", "null (a ~, null or empty key)"),
    (True, "true", "the boolean true (an unquoted yes, no, on, off, true or false)"),
    (1, "1", "a int"),
])
def test_an_env_key_yaml_reads_as_no_string_is_refused_at_its_key_path(stack_document, write_stack, key, shown, kind):
    """``~: production`` became the variable ``null=production``, ``on: x`` ``true=x``."""
    from synth.stackfile import StackFileError, load_stack_file

    document = stack_document("staging")
    document["config"]["platform:kro"]["services"][0]["env"][key] = "production"
    path = write_stack(document, "staging")
    with pytest.raises(StackFileError) as raised:
        load_stack_file(path, "staging", "platform")
    assert str(raised.value) == (f"{path}: platform:kro.services[0].env.{shown}: YAML reads this key as {kind}, not "
                                 "a name; write the name (quote it, e.g. 'on': or '1':)")


def test_an_env_value_of_null_names_the_fix(stack_document):
    document = stack_document("staging")
    document["config"]["platform:kro"]["services"][0]["env"]["PORT"] = None
    problems = _problems(document)
    assert len(problems) == 1 and problems[0].startswith("platform:kro.services[0] (backend).env.PORT: ") \
        and problems[0].endswith("; YAML reads a key with nothing after it (or ~, null) as null: write the value, "
                                 "quoted ('' for an empty string), or remove the key"), problems


@pytest.mark.parametrize("host_path,text", [("/etc/shadow", "is under the sensitive host directory /etc"),
                                            ("/run/docker.sock", "is the container runtime's socket"),
                                            ("/", "mounting the host's / gives the container the host")])
def test_a_mount_of_the_host_is_refused_at_its_host_path(stack_document, host_path, text):
    document = stack_document("staging")
    document["config"]["platform:kro"]["services"][0]["mounts"] = [
        {"host_path": host_path, "container_path": "/x", "read_only": True}]
    problems = _problems(document)
    assert len(problems) == 1 and _has(problems, "platform:kro.services[0] (backend).mounts[0].host_path", text), \
        problems


SECRET = "Sup3rS3cretPassw0rd"


def _redis(document):
    return next(s for s in document["config"]["platform:vedfinance"]["services"] if s["name"] == "redis")


def _kro_backend(document):
    return document["config"]["platform:kro"]["services"][0]


PLAINTEXT_IN_COMMANDS = {
    "redis-server --requirepass": (
        lambda d: _redis(d).__setitem__("command", ["sh", "-c", f"exec redis-server --requirepass {SECRET} --appendonly yes"]),
        "platform:vedfinance.services[5] (redis).command", "--requirepass"),
    "curl -fsu user:password": (
        lambda d: _kro_backend(d)["healthcheck"].__setitem__(
            "command", ["sh", "-c", f"curl -fsu admin:{SECRET} http://127.0.0.1:3000/"]),
        "platform:kro.services[0] (backend).healthcheck.command", "-u/--user"),
    "env argument string": (
        lambda d: _kro_backend(d)["env"].__setitem__("REDIS_ARGS", f"--requirepass {SECRET}"),
        "platform:kro.services[0] (backend).env.REDIS_ARGS", "--requirepass"),
    "PGPASSWORD= assignment": (
        lambda d: _kro_backend(d)["healthcheck"].__setitem__(
            "command", ["sh", "-c", f"PGPASSWORD={SECRET} pg_isready -h 127.0.0.1"]),
        "platform:kro.services[0] (backend).healthcheck.command", "PGPASSWORD="),
}


@pytest.mark.parametrize("policy", [False, True])
@pytest.mark.parametrize("case", sorted(PLAINTEXT_IN_COMMANDS))
def test_a_literal_password_in_a_command_is_refused_before_anything_is_registered(
        stack_document, write_stack, case, policy):
    """A password typed into a command, a healthcheck's ``sh -c`` body or an env argument string
    is seen by ``ps`` and ``docker inspect``: exit 2 at its key path, with or without the policy
    pack (which judges it with the same parser, but only after registration), value not shown."""
    from tests.test_config_boundary import _cli

    mutate, path, spelling = PLAINTEXT_IN_COMMANDS[case]
    document = stack_document("staging")
    mutate(document)
    result = _cli(write_stack(document, "staging"), *(["--policy"] if policy else []))
    assert result.returncode == 2, result.stdout + result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert problems == [f"  - {path}: {spelling} passes a password in plain text (value not shown)"
                        + problems[0].partition("(value not shown)")[2]], result.stderr
    assert "secret_env" in problems[0] and "nothing was registered" in result.stderr
    assert SECRET not in result.stdout + result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("mutate", [
    lambda d: _redis(d).__setitem__("command", ["sh", "-c", 'exec redis-server --requirepass "$(cat /run/secrets/redis)"']),
    lambda d: _redis(d).__setitem__("command", ["redis-server", "--requirepass", "${REDIS_PASSWORD}"]),
    lambda d: _kro_backend(d)["healthcheck"].__setitem__("command", ["sh", "-c", 'curl -fsu "admin:$ADMIN_PASSWORD" http://127.0.0.1:3000/']),
    lambda d: _kro_backend(d)["healthcheck"].__setitem__("command", ["sh", "-c", "curl -fsSu admin http://127.0.0.1:3000/"]),
    lambda d: _kro_backend(d)["healthcheck"].__setitem__("command", ["sh", "-c", "PGPASSFILE=/run/secrets/pgpass pg_isready"]),
    lambda d: _kro_backend(d)["env"].__setitem__("REDIS_ARGS", "--requirepass-file /run/secrets/redis --appendonly yes"),
])
def test_a_reference_to_a_secret_in_a_command_is_accepted(stack_document, mutate):
    from stacks.config import validate_stack_config
    from tests.test_config_boundary import _raw

    document = stack_document("staging")
    mutate(document)
    validate_stack_config(_raw(document), stack="staging", check_secrets=False)
