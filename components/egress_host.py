"""The host-script sections of the egress lock (``components.egress``): the unit and file that
load the ``DOCKER-USER`` rules, and an egress-locked node's proxy settings for apt and Docker."""

from __future__ import annotations

from components.hostsetup import deliver_file, unit_apply


DOCKER_USER_UNIT = """\
# Managed by the platform program: re-applies the DOCKER-USER rules whenever Docker starts.
[Unit]
Description=Platform filter for Docker-published ports and container egress
After=docker.service
PartOf=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/iptables-restore --noflush /etc/platform/docker-user.rules

[Install]
WantedBy=docker.service
"""


def docker_user_section(rules_text: str) -> str:
    """Installs the rules file and a unit that applies it after every Docker start.

    A changed file is first checked by ``iptables-restore --test``: a file the kernel refuses is
    replaced by the previous one (so the next run retries it) and the script fails with the
    chains in force unchanged. Only forwarded traffic is filtered, so a bad rule cannot cut SSH
    to the host."""
    path = "/etc/platform/docker-user.rules"
    return "\n".join([
        deliver_file(path, "0600", "root:root", rules_text,
                     validate=f"iptables-restore --test --noflush {path}",
                     on_change=f"iptables-restore --noflush {path}"),
        deliver_file("/etc/systemd/system/platform-docker-user.service", "0644", "root:root",
                     DOCKER_USER_UNIT, on_change="systemctl daemon-reload"),
        "ensure_service_enabled platform-docker-user",
    ])


def host_proxy_section(proxy_url: str) -> str:
    """Points apt and the Docker daemon (image pulls) of an egress-locked node at the proxy.
    Runs before anything installs packages; Docker is restarted only if it already runs."""
    return "\n".join([
        deliver_file("/etc/apt/apt.conf.d/90platform-proxy", "0644", "root:root",
                     f'Acquire::http::Proxy "{proxy_url}";\nAcquire::https::Proxy "{proxy_url}";\n'),
        deliver_file("/etc/systemd/system/docker.service.d/platform-proxy.conf", "0644", "root:root",
                     f'[Service]\nEnvironment="HTTP_PROXY={proxy_url}" "HTTPS_PROXY={proxy_url}" '
                     '"NO_PROXY=localhost,127.0.0.1"\n',
                     on_change="systemctl daemon-reload && "
                               + unit_apply("try-restart", "docker", "docker", "info", seconds=60)),
    ])
