"""Findings of the new-user review (December 2026), each refused at the config boundary with its
exact key path and its fix, before any resource is registered."""

from __future__ import annotations

import pytest

from tests.test_config_boundary import _has, _problems

pytestmark = pytest.mark.fast


def _mount(host_path, read_only=True):
    def mutate(c):
        c["platform:pencom"]["app_services"][0]["mounts"] = [
            {"host_path": host_path, "container_path": "/t", "read_only": read_only}]
    return mutate


MOUNT = "platform:pencom.app_services[0] (core).mounts[0].host_path"


@pytest.mark.parametrize("mutate,path,text", [
    # 1: the Docker socket reached through ``..`` or a doubled slash.
    (_mount("/var/run/../run/docker.sock"), MOUNT, "container runtime's socket"),
    (_mount("//run//docker.sock"), MOUNT, "container runtime's socket"),
    # 2: / read-only is the host all the same.
    (_mount("/"), MOUNT, "mounting the host's / gives the container the host, even read-only"),
    (_mount("/srv/.."), MOUNT, "mounting the host's /"),
    # 3: sensitive host directories and everything under them, however spelled.
    (_mount("/etc", read_only=False), MOUNT, "under the sensitive host directory /etc (CIS Docker 5.5)"),
    (_mount("/srv/../etc", read_only=False), MOUNT, "sensitive host directory /etc"),
    (_mount("/root/.ssh", read_only=False), MOUNT, "sensitive host directory /root"),
    (_mount("/proc/1/root"), MOUNT, "sensitive host directory /proc"),
])
def test_mounts_of_the_host_are_refused(stack_document, mutate, path, text):
    document = stack_document("staging")
    mutate(document["config"])
    problems = _problems(document)
    assert _has(problems, path, text), problems


def test_a_service_directory_under_srv_is_still_mounted(stack_document):
    from stacks.config import validate_stack_config
    from tests.test_config_boundary import _raw

    document = stack_document("staging")
    _mount("/srv/pencom-staging-app/core/../core/cache", read_only=False)(document["config"])
    validate_stack_config(_raw(document), stack="staging", check_secrets=False)


def test_the_programs_exporters_keep_their_named_exemption():
    from components.containers import ExporterMount, Mount
    from pydantic import ValidationError

    assert ExporterMount(host_path="/", container_path="/host").host_path == "/"
    with pytest.raises(ValidationError, match="read_only"):
        ExporterMount(host_path="/sys", container_path="/sys", read_only=False)
    with pytest.raises(ValidationError, match="socket"):
        ExporterMount(host_path="/run/docker.sock", container_path="/s")
    with pytest.raises(ValidationError, match="host's /"):
        Mount(host_path="/", container_path="/host")


@pytest.mark.parametrize("key", ["kro_ssh_private_key", "ssh_ca_private_key", "kro_registry_auth",
                                 "giv_ssh_private_key"])
def test_deploy_keys_and_registry_logins_never_reach_a_container(stack_document, key):
    document = stack_document("staging")
    document["config"]["platform:kro"]["services"][0]["secret_env"]["JWT_SECRET"] = key
    problems = _problems(document)
    assert _has(problems, "platform:kro.services[0] (backend).secret_env.JWT_SECRET",
                "must never reach a container"), problems


def test_a_password_pasted_as_a_secret_key_name_is_never_echoed(stack_document, write_stack):
    from tests.test_config_boundary import _cli

    password = "Xk9#mQ2vLp7RtZ4wYb8N"
    document = stack_document("staging")
    document["config"]["platform:kro"]["services"][0]["secret_env"]["JWT_SECRET"] = password
    result = _cli(write_stack(document))
    assert result.returncode == 2, result.stderr
    assert "platform:kro.services[0] (backend).secret_env.JWT_SECRET: the value is not a secret key name" \
        in result.stderr
    assert password not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("node,port", [("edge", 80), ("edge", 443), ("data", 5432), ("storage", 9000),
                                       ("edge", 9100)])
def test_every_nodes_ssh_port_is_free_on_that_node(stack_document, node, port):
    document = stack_document("staging")
    document["config"]["platform:pencom"]["nodes"][node]["ssh_port"] = port
    problems = _problems(document)
    assert _has(problems, f"platform:pencom.nodes.{node}.ssh_port", f"port {port} is used on the {node} node"), problems


def test_an_empty_ssh_principals_list_is_refused_in_production(stack_document):
    document = stack_document("prod")
    document["config"]["platform:environment"]["ssh_principals"] = []
    problems = _problems(document, stack="prod")
    assert _has(problems, "platform:environment.ssh_principals", "is empty in a production stack"), problems


@pytest.mark.parametrize("name,production", [("pencom-prod", True), ("prod-eu", True), ("giv-production", True),
                                             ("staging", False), ("producer", False), ("preprod", False)])
def test_a_product_stack_named_prod_is_production(name, production):
    from stacks.environment import is_production_name

    assert is_production_name(name) is production


def test_a_prod_named_stack_that_says_it_is_not_production_is_refused(stack_document):
    document = stack_document("prod")
    document["config"]["platform:environment"].update(name="pencom-prod", production=False)
    problems = _problems(document, stack="pencom-prod")
    assert _has(problems, "platform:environment.production", "is a production environment"), problems


def test_an_oracle_connect_string_with_a_password_is_refused_unshown(stack_document, write_stack):
    from tests.test_config_boundary import _cli

    document = stack_document("staging")
    document["config"]["platform:pencom"]["app_services"][0]["env"]["ORACLE_CONNECT_STRING"] = \
        "EHUB_READONLY/Hunter2Hunter2@10.50.8.20:1521/ECRS"
    result = _cli(write_stack(document))
    assert result.returncode == 2, result.stderr
    assert "platform:pencom.app_services[0] (core).env.ORACLE_CONNECT_STRING" in result.stderr
    assert "Oracle connect string" in result.stderr and "Hunter2" not in result.stderr + result.stdout


@pytest.mark.parametrize("value", ["ghcr.io/library/nginx@sha256:" + "a" * 64, "team/ops", "a/b@c:x"])
def test_slashes_and_at_signs_that_are_no_connect_string_pass(value):
    from validation.formats import secret_value_kind

    assert secret_value_kind(value) is None


def test_a_huge_env_value_is_refused_quickly_with_the_linux_limit(stack_document, write_stack):
    import time

    from tests.test_config_boundary import _cli

    document = stack_document("prod")
    document["config"]["platform:kro"]["services"][0]["env"]["BIG"] = "a" * 200_000
    started = time.monotonic()
    result = _cli(write_stack(document), stack="prod")
    assert result.returncode == 2, result.stderr
    assert "platform:kro.services[0] (backend).env.BIG: NAME=value is longer than 131071 bytes" in result.stderr
    assert "MAX_ARG_STRLEN" in result.stderr
    assert time.monotonic() - started < 60


FIVE_MB = 5 * 1024 * 1024


def _service(config):
    return config["platform:kro"]["services"][0]


@pytest.mark.parametrize("mutate,where,message", [
    (lambda c: _service(c)["env"].__setitem__("SOME_VAR", "a" * FIVE_MB),
     "platform:kro.services[0] (backend).env.SOME_VAR", "NAME=value is longer than 131071 bytes, more than Linux "
     "lets one environment string be (MAX_ARG_STRLEN, execve fails with E2BIG); put the data in a file"),
    # Words with spaces and a password option: what the shlex parser reads word by word.
    (lambda c: _service(c)["env"].__setitem__("REDIS_ARGS", "--requirepass x " * (FIVE_MB // 16)),
     "platform:kro.services[0] (backend).env.REDIS_ARGS", "NAME=value is longer than 131071 bytes"),
    (lambda c: _service(c)["healthcheck"]["command"].append("a" * FIVE_MB),
     "platform:kro.services[0] (backend).healthcheck.command[3]", f"is {FIVE_MB:,} bytes, more than the 131,071 a "
     "config string may be (Linux's MAX_ARG_STRLEN"),
    (lambda c: _service(c).__setitem__("command", ["sh", "-c", "echo " * (FIVE_MB // 5)]),
     "platform:kro.services[0] (backend).command[2]", f"is {FIVE_MB:,} bytes, more than the 131,071"),
    (lambda c: c["platform:giv"]["components"][0].__setitem__("run_command", "a" * FIVE_MB),
     "platform:giv.components[0] (krogiving-backend).run_command", f"is {FIVE_MB:,} bytes"),
    (lambda c: _service(c)["env"].update({f"PART_{i}": "a" * 120_000 for i in range(9)}),
     "platform:kro.services[0] (backend).env", "the variables total 1,080,"),
], ids=["env value", "env argument string", "healthcheck item", "command item", "run_command", "env total"])
def test_a_string_too_big_for_execve_is_refused_by_its_size_before_any_parser(stack_document, monkeypatch,
                                                                               mutate, where, message):
    """The sizes are checked first (``stacks.value_checks.size_problems``): a 5 MB env value went
    through the shlex parser that looks for passwords in commands before its length was, and was
    still not refused after 15 minutes (shlex is quadratic in a word's length). The parser sees no
    string over the limit, and the section's one problem is the size."""
    from stacks.value_checks import STRING_MAX_BYTES
    from validation import connections

    parsed = []
    tokens = connections._tokens
    monkeypatch.setattr(connections, "_tokens", lambda text: parsed.append(len(text)) or tokens(text))
    document = stack_document("staging")
    mutate(document["config"])
    problems = _problems(document)
    assert len(problems) == 1 and problems[0].startswith(f"{where}: {message}"), problems
    assert parsed and max(parsed) <= STRING_MAX_BYTES


def test_a_containers_environment_may_total_a_mebibyte():
    """``ENV_TOTAL_MAX_BYTES`` counts each NAME=value and its NUL, as execve does; half of
    ARG_MAX (2 MiB under an 8 MiB stack limit) is left for the command, the image's variables
    and the secrets."""
    from components.container_env import ENV_TOTAL_MAX_BYTES, env_size_problems

    assert ENV_TOTAL_MAX_BYTES == 1024 * 1024
    ten = {f"V{i}": "a" * (100_000 - 4) for i in range(10)}  # "Vi=" + value + NUL: 100,000 bytes each
    last = ENV_TOTAL_MAX_BYTES - 1_000_000 - len("LAST=") - 1
    assert env_size_problems({**ten, "LAST": "a" * last}) == []
    [(loc, message)] = env_size_problems({**ten, "LAST": "a" * (last + 1)})
    assert loc == () and message.startswith("the variables total 1,048,577 bytes (each NAME=value and its NUL), "
                                            "more than the 1,048,576")


def test_a_key_too_big_is_named_by_its_size():
    from stacks.errors import key_path

    assert key_path("kro", ("services", 0, "env", "K" * 200_000)) == \
        "platform:kro.services[0].env.<a key of 200,000 characters>"


def test_secret_detection_is_linear_in_the_value_length():
    import time

    from validation.formats import secret_value_kind

    started = time.monotonic()
    assert secret_value_kind("a" * 131_000) is None
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("store,port", [("redis", 5432), ("postgres", 6379), ("mongodb", 27018), ("minio", 9001)])
def test_a_datastore_port_the_program_sets_is_refused(stack_document, store, port):
    document = stack_document("staging")
    document["config"]["platform:pencom"][store]["port"] = port
    problems = _problems(document)
    assert _has(problems, f"platform:pencom.{store}.port", "but the program sets the"), problems


@pytest.mark.parametrize("name,value,shown", [
    ("AUDIT_DB", "postgresql://a@10.40.0.13/x?sslmode=disable", "sslmode=disable"),
    ("NODE_TLS_REJECT_UNAUTHORIZED", "0", "NODE_TLS_REJECT_UNAUTHORIZED=0"),
    ("PGSSLMODE", "prefer", "PGSSLMODE=prefer"),
    ("MONGO", "mongodb://h/x?tls=false", "tls=false"),
])
def test_tls_switched_off_in_plain_env_is_refused(stack_document, name, value, shown):
    document = stack_document("staging")
    document["config"]["platform:pencom"]["app_services"][0]["env"][name] = value
    problems = _problems(document)
    assert _has(problems, f"platform:pencom.app_services[0] (core).env.{name}",
                f"{shown} switches TLS or certificate verification off"), problems


@pytest.mark.parametrize("user", ["root", "0:0", "0", "root:root"])
def test_root_is_refused_as_a_services_user(stack_document, user):
    document = stack_document("staging")
    document["config"]["platform:pencom"]["app_services"][0]["user"] = user
    problems = _problems(document)
    assert _has(problems, "platform:pencom.app_services[0] (core).user", "runs the service as root"), problems
    assert any("docker-container-configure-non-root-user" in p for p in problems)


@pytest.mark.parametrize("content,problem", [
    (b"config:\n  platform:environment: !!binary aGVsbG8=\n", ":2:25: not valid YAML: a !!binary value is not a config value"),
    (b"config:\n  platform:products: !!set {kro}\n", ":2:22: not valid YAML: a !!set value is not a config value"),
    (b"config:\n  platform:environment: \xff\xfe\n", ": not UTF-8 text (byte 32 is 0xff); save the file as UTF-8"),
])
def test_a_stack_file_python_cannot_pass_on_is_one_line(tmp_path, content, problem):
    from tests.test_config_boundary import _cli

    path = tmp_path / "Pulumi.broken.yaml"
    path.write_bytes(content)
    result = _cli(path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {path}{problem}" + lines[0].split(problem, 1)[1]], lines
    assert "Traceback" not in result.stderr


def test_an_unquoted_date_reaches_the_program_as_written():
    from synth.stackfile import _as_config_string, load_yaml

    assert _as_config_string(load_yaml("a: {restore_test: 2026-12-01}")["a"]) == '{"restore_test": "2026-12-01"}'


@pytest.mark.parametrize("secure", [[1, 2], 7, "", {"a": "b"}])
def test_a_secure_value_that_is_no_ciphertext_is_refused(stack_document, write_stack, secure):
    from tests.test_config_boundary import _cli

    document = stack_document("prod")
    document["config"]["platform:kro_jwt_secret"] = {"secure": secure}
    path = write_stack(document)
    result = _cli(path, stack="prod")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (f"error: {path}: platform:kro_jwt_secret.secure: must be a ciphertext "
                                     "string; set the secret with `pulumi config set --secret platform:kro_jwt_secret`")


def test_an_admin_cidr_or_resolver_listed_twice_is_refused(stack_document):
    document = stack_document("staging")
    env = document["config"]["platform:environment"]
    env["admin_cidrs"].append(env["admin_cidrs"][0])
    egress = document["config"]["platform:pencom"]["egress"]
    egress["resolvers"].append(egress["resolvers"][0])
    problems = _problems(document)
    index = len(env["admin_cidrs"]) - 1
    assert _has(problems, f"platform:environment.admin_cidrs[{index}]", "repeats admin_cidrs[0]; keep one"), problems
    assert _has(problems, "platform:pencom.egress.resolvers", "is listed twice"), problems


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\u202a", "\u2069"])
def test_bidi_controls_are_refused_like_control_characters(stack_document, char):
    document = stack_document("staging")
    document["config"]["platform:kro"]["services"][0]["env"]["APP_URL"] = f"https://app{char}.example.com"
    problems = _problems(document)
    assert _has(problems, "platform:kro.services[0] (backend).env.APP_URL",
                f"contains control characters (U+{ord(char):04X})"), problems


@pytest.mark.parametrize("schedule,ok", [("minutely", False), ("*-*-* *:0/5", False), ("*:00,30", False),
                                         ("*-*-* *:*:0/10", False), ("hourly", True), ("*-*-* *:15", True),
                                         ("*-*-* 02,14:30", True), ("daily", True)])
def test_a_backup_schedule_runs_at_most_hourly(stack_document, schedule, ok):
    from stacks.config import validate_stack_config
    from tests.test_config_boundary import _raw

    document = stack_document("staging")
    document["config"]["platform:kro"]["backup"]["schedule"] = schedule
    if ok:
        validate_stack_config(_raw(document), stack="staging", check_secrets=False)
    else:
        problems = _problems(document)
        assert _has(problems, "platform:kro.backup.schedule", "runs more often than hourly"), problems


def test_a_memory_limit_beyond_any_host_is_refused(stack_document):
    document = stack_document("staging")
    document["config"]["platform:kro"]["services"][0]["memory_mb"] = 1_000_000_000
    problems = _problems(document)
    assert _has(problems, "platform:kro.services[0] (backend).memory_mb", "262144"), problems
