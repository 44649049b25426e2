"""The policy pack's parsers against the real tools: sshd's own ``sshd -T`` for first-match
semantics, ``ufw --dry-run`` for every rule form, crossplane-read nginx, IAM normalisation."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from policy.parsers.heredoc import written_files
from policy.parsers.iam import statements
from policy.parsers.nginx import NginxParseError, parse_nginx
from policy.parsers.sshd import parse_sshd
from policy.parsers.ufw import UfwSyntaxError, parse_ufw_line, ufw_rules
from tests.conftest import require_tool

SSHD_KEYS = ("permitrootlogin", "passwordauthentication", "kbdinteractiveauthentication", "x11forwarding",
             "maxauthtries", "logingracetime", "clientaliveinterval", "permitemptypasswords",
             "allowtcpforwarding", "ciphers", "macs", "kexalgorithms")
SSHD_CONFIGS = [
    "PermitRootLogin yes\nPermitRootLogin no\n",
    "permitrootlogin prohibit-password\nPasswordAuthentication no\nPasswordAuthentication yes\n",
    "PermitRootLogin no\nMatch Address 10.0.0.0/8\n  PermitRootLogin yes\n  PasswordAuthentication yes\n",
    "LoginGraceTime 1m30s\nClientAliveInterval 5m\nMaxAuthTries 2\nX11Forwarding yes\n",
    "Ciphers +aes128-cbc\nMACs -umac-64*,hmac-sha1*\nKexAlgorithms ^curve25519-sha256\n",
    "MACs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com\nAllowTcpForwarding local\n",
]


def _sshd_t(tmp_path: Path, body: str, *args: str) -> dict[str, str]:
    sshd = require_tool("sshd", "Debian package openssh-server")
    unshare = require_tool("unshare", "util-linux; needs root for a mount namespace")
    key = tmp_path / "host_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = tmp_path / "sshd_config"
    # HostKey before the body: a Match block lasts to the end of the file.
    config.write_text(f"HostKey {key}\nPidFile {tmp_path}/sshd.pid\n" + body)
    inner = 'mount -t tmpfs tmpfs /run && mkdir -m 0755 /run/sshd && exec "$@"'
    result = subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c", inner, "sshd",
                             sshd, "-T", *args, "-f", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)


@pytest.mark.realtool
@pytest.mark.parametrize("body", SSHD_CONFIGS)
def test_sshd_parser_agrees_with_sshd_T(tmp_path, body):
    real = _sshd_t(tmp_path, body)
    parsed = parse_sshd(body)
    assert {k: parsed.get(k) for k in SSHD_KEYS} == {k: real[k] for k in SSHD_KEYS}


@pytest.mark.realtool
def test_sshd_match_blocks_do_not_change_global_values_but_are_reported(tmp_path):
    body = SSHD_CONFIGS[2]
    matched = _sshd_t(tmp_path, body, "-C", "addr=10.1.2.3,user=deploy,host=h,laddr=10.0.0.1,lport=22")
    assert matched["permitrootlogin"] == "yes"
    parsed = parse_sshd(body)
    assert parsed.get("permitrootlogin") == "no"
    assert parsed.overridden_in_match("PermitRootLogin") == [("Address 10.0.0.0/8", "yes")]


UFW_LINES = [
    "ufw allow 5432/tcp",
    "ufw allow 22",
    "ufw allow OpenSSH",
    "ufw allow 6000:6007/tcp",
    "ufw allow 80,443/tcp",
    "ufw deny in on eth0 to any port 25 proto tcp",
    "ufw allow proto tcp from 10.40.0.12/32 to any port 3128:3136 comment 'egress proxy'",
    "ufw allow from 10.0.0.0/8 to any port 6379 proto tcp",
    "ufw allow proto udp from ::/0 port 53 to any",
    "ufw allow out proto tcp to 1.1.1.1/32 port 53",
    "ufw route allow from 1.2.3.4 to any port 80,443 proto tcp",
    "ufw allow ssh/tcp",
    "ufw allow log-all 22/tcp",
    "ufw prepend reject from 203.0.113.7",
    "ufw allow in log from 192.0.2.0/24 to 10.0.0.5 port 8000:8010 proto tcp",
]


def _dry_run(line: str) -> list[str]:
    ufw = require_tool("ufw", "Debian package ufw")
    result = subprocess.run([ufw, "--dry-run", *__import__("shlex").split(line)[1:]], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    tuples = []
    for found in re.findall(r"^### tuple ### (.*)$", result.stdout, re.MULTILINE):
        words = [w for w in found.split() if not w.startswith("comment=")]
        # The app-profile form carries two extra fields (dapp sapp) before the direction.
        tuples.append(" ".join(words[:6] + words[-1:]))
    return tuples


@pytest.mark.realtool
@pytest.mark.parametrize("line", UFW_LINES)
def test_ufw_parser_gives_the_tuples_ufw_dry_run_prints(line):
    assert parse_ufw_line(line).tuples() == _dry_run(line)


@pytest.mark.realtool
@pytest.mark.parametrize("line", ["ufw allow 6000:6007", "ufw allow from nowhere to any port 22", "ufw allow to any port"])
def test_ufw_rules_that_ufw_rejects_are_syntax_errors(line):
    ufw = require_tool("ufw", "Debian package ufw")
    assert subprocess.run([ufw, "--dry-run", *line.split()[1:]], capture_output=True).returncode != 0
    with pytest.raises(UfwSyntaxError):
        parse_ufw_line(line)


@pytest.mark.fast
def test_ufw_ranges_are_checked_in_full_and_waivers_read_from_the_comment():
    rules, errors = ufw_rules("ufw allow proto tcp from any to any port 6000:6400\n"
                              "ufw allow proto tcp from 10.0.0.1/32 to any port 5432 comment 'x'  # waiver: gateway-reads\n"
                              "ufw default deny incoming\n")
    assert errors == [] and rules[0].port_ranges() == [(6000, 6400)] and rules[0].from_anyone
    assert rules[1].waiver == "gateway-reads" and not rules[1].from_anyone


@pytest.mark.fast
def test_nginx_listen_forms_and_parse_errors():
    config = parse_nginx("events {}\nhttp {\n server {\n  listen 8443 ssl http2;\n }\n"
                         "   server { listen [::]:443 ssl; }\n\tserver {\n\t\tlisten 127.0.0.1:8081;\n\t}\n}\n")
    assert [(s.ssl, s.loopback_only) for s in config.servers] == [(True, False), (True, False), (False, True)]
    with pytest.raises(NginxParseError):
        parse_nginx("http { server { listen 80 }")


@pytest.mark.fast
def test_iam_statements_are_normalised_in_every_syntax():
    document = {"Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"},
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["S3:*"], "Resource": "arn:aws:s3:::*"},
        {"Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::1:user/a", "*"]}, "NotAction": "s3:Delete*", "Resource": ["*"]},
        {"Sid": "DenyPlainHttp", "Effect": "Deny", "Principal": {"AWS": ["*"]}, "Action": "s3:*",
         "Resource": "arn:aws:s3:::b/*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}
    parsed = statements(json.dumps(document))
    assert [s.any_principal for s in parsed] == [True, True, True, True]
    assert [s.allows("s3:deletebucket") for s in parsed] == [False, True, False, True]
    assert [s.covers_all_buckets() for s in parsed] == [False, True, True, False]
    assert parsed[3].denies_plain_http() and not parsed[0].denies_plain_http()
    assert statements({"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}})[0].allows("s3:putobject")


@pytest.mark.fast
def test_heredoc_files_follow_bash_delimiters():
    script = ("if put_file /etc/a.conf 0644 root:root <<'EOF'; then\nx\n  EOF\nEOF\n  true\nfi\n"
              "cat > /etc/b.conf <<-END\n\tPermitRootLogin no\n\tEND\n")
    assert written_files(script) == (("/etc/a.conf", "x\n  EOF\n"), ("/etc/b.conf", "PermitRootLogin no\n"))


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

V4 = st.sampled_from(["any", "10.40.0.12", "10.0.0.0/8", "0.0.0.0/0", "198.51.100.0/24"])
V6 = st.sampled_from(["any", "::/0", "fd00::/8", "2001:db8::1"])
PORTS = st.sampled_from(["22", "5432", "6000:6007", "80,443", "3128:3136,9100"])


@st.composite
def ufw_commands(draw):
    action = draw(st.sampled_from(["allow", "deny", "reject"]))
    direction = draw(st.sampled_from(["", "in ", "out "]))
    if draw(st.booleans()):
        proto = draw(st.sampled_from(["tcp", "udp"]))
        port = draw(PORTS)
        return f"ufw {action} {direction}{port}/{proto}"
    family = draw(st.sampled_from([V4, V6]))
    src, dst = draw(family), draw(family)
    proto = draw(st.sampled_from(["", "tcp", "udp"]))
    port = draw(PORTS if proto else st.sampled_from(["22", "5432"]))
    words = [f"ufw {action}", direction.strip(), f"proto {proto}" if proto else "", f"from {src}",
             f"to {dst} port {port}", draw(st.sampled_from(["", "comment 'x'"]))]
    return " ".join(w for w in words if w)


@pytest.mark.realtool
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ufw_commands())
def test_ufw_parser_matches_ufw_dry_run_on_generated_rules(line):
    assert parse_ufw_line(line).tuples() == _dry_run(line)


SSHD_SETTINGS = st.sampled_from([
    "PermitRootLogin yes", "PermitRootLogin no", "PermitRootLogin prohibit-password", "permitrootlogin forced-commands-only",
    "PasswordAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
    "MaxAuthTries 3", "MaxAuthTries 10", "LoginGraceTime 2m", "LoginGraceTime 45", "ClientAliveInterval 300",
    "X11Forwarding yes", "X11Forwarding no", "PermitEmptyPasswords yes", "AllowTcpForwarding no",
    "MACs hmac-sha2-256,hmac-sha1", "MACs -hmac-sha1*", "Ciphers +aes256-cbc", "KexAlgorithms ^diffie-hellman-group14-sha256",
])


@pytest.mark.realtool
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(SSHD_SETTINGS, min_size=1, max_size=8))
def test_sshd_parser_matches_sshd_T_on_generated_configs(tmp_path, lines):
    body = "\n".join(lines) + "\n"
    real = _sshd_t(tmp_path, body)
    parsed = parse_sshd(body)
    assert {k: parsed.get(k) for k in SSHD_KEYS} == {k: real[k] for k in SSHD_KEYS}


NGINX_BASE = ("pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nevents {{ worker_connections 16; }}\n"
              "http {{\n access_log off;\n client_body_temp_path {tmp}/b;\n proxy_temp_path {tmp}/p;\n"
              " fastcgi_temp_path {tmp}/f;\n uwsgi_temp_path {tmp}/u;\n scgi_temp_path {tmp}/s;\n{body}}}\n")
NGINX_BODIES = [
    " server {\n  listen 18080;\n  location / { return 301 https://$host$request_uri; }\n }\n",
    " server {\n  listen 18080\n  location / { return 301 https://$host$request_uri; }\n }\n",
    " server {\n  listen 18080;\n  location / { return 301 https://$host$request_uri; }\n",
    " server {\n\tlisten 18080;\n\tserver_tokens off;\n\tlocation /api/\n\t{\n\t\treturn 200;\n\t}\n }\n",
]


@pytest.mark.realtool
@pytest.mark.parametrize("body", NGINX_BODIES)
def test_nginx_parser_accepts_exactly_what_nginx_t_accepts(tmp_path, body):
    """Structure (blocks, terminators, argument counts). crossplane 0.5.8's directive table
    predates http2 on and ssl_reject_handshake, so unknown directives are left to nginx -t,
    which the renderer's own tests run."""
    from tests.realtools import nginx_binary

    text = NGINX_BASE.format(tmp=tmp_path, body=body)
    (tmp_path / "nginx.conf").write_text(text)
    real = subprocess.run([nginx_binary(), "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                          capture_output=True, text=True)
    try:
        parse_nginx(text)
        parsed_ok = True
    except NginxParseError:
        parsed_ok = False
    assert parsed_ok == (real.returncode == 0), real.stderr


# --- literal passwords in commands: one parser for the config boundary and the policy pack -------

PLAINTEXT = "platform-resource-disallow-plaintext-secrets"


def _plaintext_messages(**inputs) -> list[str]:
    from policy.offline import evaluate
    from policy.rules import POLICIES
    from policy.rules.fixtures import container, doc

    policy = next(p for p in POLICIES if p.name == PLAINTEXT)
    return [v["message"] for v in evaluate(doc(container(**inputs)), {}, policies=[policy])]


@pytest.mark.fast
@pytest.mark.parametrize("command,spelling", [
    ("exec redis-server --requirepass Sup3rS3cretPassw0rd --appendonly yes", "--requirepass"),
    ("curl -fsu admin:Sup3rS3cretPassw0rd http://127.0.0.1:3000/", "-u/--user"),
    ("curl --user=admin:Sup3rS3cretPassw0rd http://127.0.0.1:3000/", "-u/--user"),
    ("curl -XPOST -uadmin:Sup3rS3cretPassw0rd http://127.0.0.1:3000/", "-u/--user"),
    ("PGPASSWORD=Sup3rS3cretPassw0rd pg_isready -h 127.0.0.1", "PGPASSWORD="),
    ("MYSQL_PWD=Sup3rS3cretPassw0rd mysqladmin ping", "MYSQL_PWD="),
    ("REDISCLI_AUTH=Sup3rS3cretPassw0rd redis-cli ping", "REDISCLI_AUTH="),
    ("redis-cli --pass Sup3rS3cretPassw0rd ping", "--pass"),
    ("wget --http-password=Sup3rS3cretPassw0rd http://x/", "--http-password="),
    ("pg_dump --password=Sup3rS3cretPassw0rd db", "--password="),
])
def test_a_literal_password_in_a_command_is_found_nested_in_sh_c(command, spelling):
    from validation.connections import command_credential

    assert command_credential(command) == spelling
    assert command_credential(["sh", "-c", command]) == spelling
    assert command_credential(["bash", "-c", f"sh -c '{command}'"]) == spelling


@pytest.mark.fast
@pytest.mark.parametrize("command", [
    'exec redis-server --requirepass "$REDIS_PASSWORD" --appendonly yes',
    'exec redis-server --requirepass "$(cat /run/secrets/redis)"',
    "redis-server --requirepass ${REDIS_PASSWORD}",
    'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli --no-auth-warning ping',
    'redis-cli -a "$(cat /run/secrets/redis)" ping',
    'curl -fsu "admin:$ADMIN_PASSWORD" http://127.0.0.1:3000/',
    "curl -fsSu admin http://127.0.0.1:3000/",
    "curl -XPUT -H 'X-User: a:b' http://127.0.0.1:3000/",
    "PGPASSFILE=/run/secrets/pgpass pg_isready", "psql --password -h db", "psql --no-password -h db",
    "redis-server --requirepass-file /run/secrets/redis",
])
def test_a_reference_to_a_secret_in_a_command_is_no_literal(command):
    from validation.connections import command_credential

    assert command_credential(command) is None
    assert command_credential(["sh", "-c", command]) is None


@pytest.mark.fast
def test_the_policy_pack_finds_the_literal_passwords_the_boundary_refuses():
    """The four spellings a new user found passing: the policy pack reads them with the same
    parser as the boundary (``validation.connections``), in every place a command can be."""
    secret = "Sup3rS3cretPassw0rd"
    messages = _plaintext_messages(
        command=["sh", "-c", f"exec redis-server --requirepass {secret} --appendonly yes"],
        entrypoint=["curl", "-fsu", f"admin:{secret}", "http://127.0.0.1:3000/"],
        healthcheck={"tests": ["CMD", "sh", "-c", f"PGPASSWORD={secret} pg_isready -h 127.0.0.1"]},
        envs=[f"REDIS_ARGS=--requirepass {secret}", "REDIS_EXTRA_ARGS=--appendonly yes --maxmemory 160mb"])
    assert any(m.startswith("command[2] passes a password on the command line (--requirepass)") for m in messages)
    assert any(m.startswith("entrypoint passes a password on the command line (-u/--user)") for m in messages)
    assert any(m.startswith("healthcheck.tests[3] sets PGPASSWORD in plain text") for m in messages)
    assert "envs[0] (REDIS_ARGS) passes a password as an argument (--requirepass) in plain text; pass it as a secret" in messages
    assert not any(m.startswith("envs[1]") for m in messages) and not any(secret in m for m in messages)


@pytest.mark.fast
def test_the_policy_pack_leaves_references_to_secrets_alone():
    assert _plaintext_messages(
        command=["sh", "-c", 'exec redis-server --requirepass "$(cat /run/secrets/redis)"'],
        entrypoint=["curl", "-fsu", "admin:${ADMIN_PASSWORD}", "http://127.0.0.1:3000/"],
        healthcheck={"tests": ["CMD-SHELL", 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli ping']},
        envs=["REDIS_ARGS=--requirepass-file /run/secrets/redis --appendonly yes"]) == []
