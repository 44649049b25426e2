"""Ordinary spellings that switched TLS off or put a secret in plain config and passed the
config boundary (review, December 2026): a Postgres URL to another host with sslmode=require,
curl -k in a healthcheck, NODE_TLS_REJECT_UNAUTHORIZED=0 in an App Platform run_command, a
password as a URL query parameter. Each is refused at its key path, never echoing a secret."""

from __future__ import annotations

import pytest

from tests.test_config_boundary import _has, _problems

pytestmark = pytest.mark.fast

from validation.connections import TLS_OFF_FIX as TLS_FIX
KRO_ENV = "platform:kro.services[0] (backend).env"


@pytest.mark.parametrize("value,shown", [
    ("postgresql://reporter@10.0.0.3:5432/db?sslmode=require", "sslmode=require"),
    ("postgresql:///db?host=10.0.0.3&sslmode=verify-ca", "sslmode=verify-ca"),
    ("postgresql://u@127.0.0.1:1,10.0.0.3:5432/db?sslmode=require", "sslmode=require"),
    ("postgresql://u@localhost.db.example.com/db", "sslmode=prefer (libpq default)"),
    ("host=10.0.0.3 dbname=x sslmode = require", "sslmode=require"),
])
def test_a_postgres_connection_to_another_host_below_verify_full_is_refused(stack_document, value, shown):
    document = stack_document("staging")
    document["config"]["platform:kro"]["services"][0]["env"]["REPORT_DB"] = value
    problems = _problems(document)
    assert problems == [f"{KRO_ENV}.REPORT_DB: {shown} {TLS_FIX}"], problems


@pytest.mark.parametrize("value", ["postgresql://u@127.0.0.1:5432/db", "postgresql:///db?host=/run/postgresql",
                                   "postgresql://u@10.0.0.3/db?sslmode=verify-full&sslrootcert=/ca.crt",
                                   "host=localhost dbname=x"])
def test_a_local_or_verified_postgres_connection_passes(value):
    from components.container_env import tls_switched_off

    assert tls_switched_off("REPORT_DB", value) is None


@pytest.mark.parametrize("command", [
    ["curl", "-fsk", "https://10.0.0.3/health"],
    ["/usr/bin/curl", "--insecure", "https://10.0.0.3/health"],
    ["sh", "-c", "\"$(which curl)\" -fsSk https://10.0.0.3/health"],
    ["wget", "--no-check-certificate", "-qO-", "https://10.0.0.3/health"],
])
def test_curl_k_in_a_healthcheck_is_refused(stack_document, command):
    document = stack_document("staging")
    document["config"]["platform:kro"]["services"][0]["healthcheck"]["command"] = command
    problems = _problems(document)
    assert _has(problems, "platform:kro.services[0] (backend).healthcheck.command",
                "curl -k (--insecure) or --no-check-certificate " + TLS_FIX), problems


@pytest.mark.parametrize("run_command,shown", [
    ("NODE_TLS_REJECT_UNAUTHORIZED=0 node dist/main.js", "NODE_TLS_REJECT_UNAUTHORIZED=0"),
    ("NODE_TLS_REJECT_UNAUTHORIZED='0' node dist/main.js", "NODE_TLS_REJECT_UNAUTHORIZED=0"),
    ("sh -c 'PGSSLMODE=\"disable\" node dist/main.js'", "PGSSLMODE=disable"),
])
def test_tls_switched_off_in_a_run_command_is_refused(stack_document, run_command, shown):
    document = stack_document("staging")
    document["config"]["platform:giv"]["components"][0]["run_command"] = run_command
    problems = _problems(document)
    assert _has(problems, "platform:giv.components[0] (krogiving-backend).run_command", f"{shown} {TLS_FIX}"), problems


def test_a_password_as_a_url_query_parameter_is_refused_unshown(stack_document):
    document = stack_document("staging")
    document["config"]["platform:kro"]["services"][0]["env"]["REPORT_URL"] = \
        "postgresql://reporter@10.0.0.3/db?password=CorrectHorse9&sslmode=verify-full"
    problems = _problems(document)
    assert _has(problems, f"{KRO_ENV}.REPORT_URL", "holds a URL with a password in plain text (value not shown)"), problems
    assert not any("CorrectHorse9" in p for p in problems), problems


def test_the_cli_exits_2_at_the_key_path(stack_document, write_stack):
    from tests.test_config_boundary import _cli

    document = stack_document("staging")
    document["config"]["platform:kro"]["services"][0]["env"]["REPORT_DB"] = \
        "postgresql://reporter@10.0.0.3:5432/db?sslmode=require"
    result = _cli(write_stack(document))
    assert result.returncode == 2, result.stderr
    assert f"{KRO_ENV}.REPORT_DB: sslmode=require {TLS_FIX}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name,value,shown", [
    ("PGSSLMODE", "no-verify", "PGSSLMODE=no-verify"),  # node-postgres: skip verification
    ("PGSSLMODE", "", "PGSSLMODE="),
    ("DATABASE_SSL", "fa\u200blse", "DATABASE_SSL='fa\\u200blse'"),  # an invisible character inside
    ("DATABASE_SSL", "\uff46alse", "DATABASE_SSL='\uff46alse'"),  # a full-width letter
    ("DATABASE_SSL", "n", "DATABASE_SSL=n"),
    ("DATABASE_SSL", "", "DATABASE_SSL="),
    ("MINIO_INSECURE", "y", "MINIO_INSECURE=y"),
    ("NODE_OPTIONS", "--max-old-space-size=512 --tls-min-v1.0", "--tls-min-v1.0"),
])
def test_a_tls_switch_is_judged_by_what_keeps_tls_on(stack_document, name, value, shown):
    """Only the spellings that keep TLS on pass: a list of ways to turn it off missed these."""
    document = stack_document("staging")
    document["config"]["platform:kro"]["services"][0]["env"][name] = value
    problems = _problems(document)
    assert problems == [f"{KRO_ENV}.{name}: {shown} {TLS_FIX}"], problems


@pytest.mark.parametrize("name,value", [("PGSSLMODE", "verify-full"), ("DATABASE_SSL", "true"), ("DATABASE_SSL", "1"),
                                        ("MINIO_INSECURE", "false"), ("NODE_OPTIONS", "--tls-min-v1.2")])
def test_the_settings_that_keep_tls_on_pass(name, value):
    from components.container_env import tls_switched_off
    from validation.connections import tls_switch_off as _switch_off

    assert tls_switched_off(name, value) is None
    assert not _switch_off(name, value)


@pytest.mark.parametrize("name,value", [("TLS_VERIFY_CA", "/etc/ssl/internal-ca.pem"), ("SSL_VERIFY_DEPTH", "3"),
                                        ("SMTP_TLS_VERIFY_MODE", "peer")])
def test_a_setting_beside_a_switch_that_is_not_a_switch_passes(name, value):
    """Only the names that are yes/no switches are judged by the true words: a CA path or a depth
    named after the switch would otherwise be refused as 'TLS off'."""
    from components.container_env import tls_switched_off
    from validation.connections import tls_switch_off as _switch_off

    assert tls_switched_off(name, value) is None
    assert not _switch_off(name, value)


@pytest.mark.parametrize("name", ["TLS_VERIFY_PEER", "SSL_VERIFY_HOSTNAME", "SMTP_TLS_VERIFY"])
def test_a_verify_switch_set_to_no_is_refused(name):
    from components.container_env import tls_switched_off
    from validation.connections import tls_switch_off as _switch_off

    assert tls_switched_off(name, "no") == f"{name}=no"
    assert _switch_off(name, "no")


@pytest.mark.parametrize("command", [["sh", "-c", "PGSSLMODE=verify-full exec node dist/main.js"],
                                     ["sh", "-ec", "DATABASE_SSL=true exec node dist/main.js --db-password=hunter2xyz"],
                                     "sh -c 'NODE_TLS_REJECT_UNAUTHORIZED=1 node -e 1'"])
def test_an_assignment_inside_a_shell_script_is_read_as_one_word(command):
    """The script of ``sh -c`` was read as one assignment whose value ran to the end of the
    script ("verify-full exec node dist/main.js"), refused as TLS off and echoed whole, with a
    password in it."""
    from components.container_env import command_tls_off
    from validation.connections import assignments, simple_commands

    assert command_tls_off(command) is None
    pairs = [pair for words in simple_commands(command) for pair in assignments(words)]
    assert pairs and all(" " not in value for _, value in pairs), pairs


def test_a_weak_assignment_inside_a_shell_script_is_still_refused_alone():
    from components.container_env import command_tls_off

    assert command_tls_off(["sh", "-c", "PGSSLMODE=require exec node m.js --db-password=hunter2xyz"]) \
        == "PGSSLMODE=require"


@pytest.mark.parametrize("name,value", [("NO_SSL_VERIFY", "true"), ("DISABLE_TLS_VERIFY", "1"), ("INSECURE_TLS", "true"),
                                        ("SKIP_TLS", "true"), ("NO_TLS", "1"), ("DISABLE_TLS", "true"),
                                        ("LDAP_TLS_REQCERT", "never"), ("PGSSLMODE", "VERIFY-FULL")])
def test_a_switch_named_for_turning_tls_off_is_off_when_set(name, value):
    """A keep-on pattern whose prefix swallowed NO_ read NO_SSL_VERIFY=true as TLS on; libpq
    refuses an sslmode in capitals."""
    from components.container_env import tls_switched_off

    assert tls_switched_off(name, value) == f"{name}={value}"


@pytest.mark.parametrize("name,value", [("NO_SSL_VERIFY", "false"), ("DISABLE_TLS", "false"),
                                        ("VERIFY_SSL", "/run/platform/ca/ca.pem"), ("DB_SSL_MODE", "VERIFY_IDENTITY"),
                                        ("GF_DATABASE_SSL_MODE", "true"), ("SMTP_TLS", "starttls"),
                                        ("REDIS_TLS_ENABLED", "enabled"), ("LDAPTLS_REQCERT", "demand")])
def test_settings_that_keep_tls_on_and_verified_pass(name, value):
    from components.container_env import tls_switched_off

    assert tls_switched_off(name, value) is None


@pytest.mark.parametrize("value,found", [
    ("jdbc:mysql://10.0.0.3:3306/app?useSSL=false", "useSSL=false"),
    ("rediss://10.0.0.3:6380/0?ssl_cert_reqs=none", "ssl_cert_reqs=none"),
    ("mongodb://10.0.0.3/x?tls=true&sslValidate=false", "sslValidate=false"),
    ("--tls-cipher-list=DEFAULT@SECLEVEL=0", "@SECLEVEL=0"),
    ("host=10.0.0.3 sslMode=DISABLED", "sslMode=DISABLED"),
    ("Server=10.0.0.3;TrustServerCertificate=True", "TrustServerCertificate=True"),
    ("jdbc:postgresql://10.0.0.3/x?sslfactory=org.postgresql.ssl.NonValidatingFactory",
     "sslfactory=org.postgresql.ssl.NonValidatingFactory")])
def test_a_value_that_turns_tls_off_inside_is_refused_by_both(value, found):
    from components.container_env import tls_switched_off
    from policy.rules.tls_connections import TLS_OFF

    assert tls_switched_off("APP_URL", value) == found
    assert any(pattern.search(value) for pattern, _ in TLS_OFF)


def test_a_long_value_refused_as_tls_off_is_never_shown():
    from components.container_env import tls_switched_off

    assert tls_switched_off("REDIS_TLS", "s3cr3t-token-value") == "REDIS_TLS=<18 characters, not shown>"
