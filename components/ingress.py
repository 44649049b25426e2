"""TLS ingress on a Docker host: nginx (non-root) plus Let's Encrypt certificates that renew.

The nginx config is rendered by ``components.nginx`` and written to the host by an idempotent
script that reloads nginx only when the file changed, so a route change never restarts a
container. Certificates come from certbot on the host (webroot challenge, served by nginx from
the ACME path); certbot's systemd timer renews them and its deploy hook installs the new files
and reloads nginx.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import pulumi

from components import hostsetup
from components.containers import ContainerSpec, HealthCheck, Mount, PublishedPort
from components.nginx import Certificate, IngressConfig, Route, render_nginx_conf
from components.tiers import Tier

NGINX_UID = "101"  # the nginx user of nginxinc/nginx-unprivileged
IN_CONTAINER_TLS = "/etc/nginx/tls"
IN_CONTAINER_ACME = "/var/www/acme"
# The config directory is mounted, not the file: the host script replaces the file (a new
# inode), which a single-file bind mount would never show to the running nginx.
IN_CONTAINER_CONF = "/etc/nginx/platform/nginx.conf"
NGINX_IMAGE = "nginxinc/nginx-unprivileged:1.27.3-alpine"


@dataclass(frozen=True)
class IngressRoute:
    host: str
    service: str
    port: int
    websocket: bool = False


@dataclass
class Ingress:
    routes: Sequence[IngressRoute]
    acme_email: str
    nginx_image: str = NGINX_IMAGE
    acme_staging: bool = False
    """Use Let's Encrypt's staging CA (untrusted certificates, generous rate limits)."""
    memory_mb: int = 128
    cpus: float = 0.5
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """Resources that must exist before certificates are requested (the DNS records)."""


def nginx_config(ingress: Ingress) -> str:
    return render_nginx_conf(IngressConfig(
        routes=[Route(host=r.host, upstream=f"{r.service}:{r.port}", websocket=r.websocket)
                for r in ingress.routes],
        certificate=Certificate(fullchain=f"{IN_CONTAINER_TLS}/fullchain.pem",
                                private_key=f"{IN_CONTAINER_TLS}/privkey.pem"),
        acme_webroot=IN_CONTAINER_ACME,
    ))


def _reload_function(stack: str) -> str:
    # No nginx container yet (the first deploy creates it after this script): nothing to test
    # or reload, the container starts on the file.
    return f"""nginx_container() {{
  docker ps -q --filter label=platform.stack={stack} --filter label=platform.service=nginx
}}

test_nginx() {{
  local id
  id="$(nginx_container)"
  if [ -n "$id" ]; then
    docker exec "$id" nginx -c {IN_CONTAINER_CONF} -t -q
  fi
}}

reload_nginx() {{
  local id
  id="$(nginx_container)"
  if [ -n "$id" ]; then
    docker exec "$id" nginx -c {IN_CONTAINER_CONF} -t -q
    docker exec "$id" nginx -c {IN_CONTAINER_CONF} -s reload
  fi
}}"""


def ingress_scripts(stack: str, data_dir: str, ingress: Ingress) -> tuple[str, str]:
    """(config script, certificate script) for the host."""
    tls_dir, acme_dir, nginx_dir = f"{data_dir}/tls", f"{data_dir}/acme", f"{data_dir}/nginx"
    hosts = [r.host for r in ingress.routes]
    config = hostsetup.script(
        _reload_function(stack),
        hostsetup.directories_section([
            (nginx_dir, "0755", "root:root"),
            (tls_dir, "0750", f"root:{NGINX_UID}"),
            (acme_dir, "0755", "root:root"),
        ]),
        # nginx needs a certificate to start; a short-lived self-signed one stands in until
        # certbot's deploy hook installs the real one.
        f'if [ ! -s {tls_dir}/fullchain.pem ]; then\n'
        f'  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN={hosts[0]}" \\\n'
        f'    -keyout {tls_dir}/privkey.pem -out {tls_dir}/fullchain.pem 2>/dev/null\n'
        f'  chown root:{NGINX_UID} {tls_dir}/privkey.pem {tls_dir}/fullchain.pem\n'
        f'  chmod 0640 {tls_dir}/privkey.pem {tls_dir}/fullchain.pem\n'
        f'  note_change "bootstrap certificate"\n'
        f'fi',
        hostsetup.deliver_file(f"{nginx_dir}/nginx.conf", "0644", "root:root",
                               nginx_config(ingress), validate="test_nginx", on_change="reload_nginx"),
    )
    hook_path = f"/usr/local/sbin/{stack}-certificate-deployed"
    hook = "\n".join([
        "#!/usr/bin/env bash",
        "# certbot deploy hook: install the renewed certificate for nginx, then reload it.",
        "set -euo pipefail",
        f'install -m 0640 -o root -g {NGINX_UID} "$RENEWED_LINEAGE/fullchain.pem" {tls_dir}/fullchain.pem',
        f'install -m 0640 -o root -g {NGINX_UID} "$RENEWED_LINEAGE/privkey.pem" {tls_dir}/privkey.pem',
        _reload_function(stack),
        "reload_nginx",
    ])
    domains = " ".join(f"-d {h}" for h in hosts)
    staging = " --test-cert" if ingress.acme_staging else ""
    certs = hostsetup.script(
        "ensure_packages certbot",
        hostsetup.deliver_file(hook_path, "0755", "root:root", hook),
        "ensure_service_enabled certbot.timer",
        # --keep-until-expiring makes a re-run a no-op; --expand adds new hostnames in place.
        f"certbot certonly --webroot -w {acme_dir} --cert-name {stack} {domains} \\\n"
        f"  --email {ingress.acme_email} --agree-tos --no-eff-email --non-interactive \\\n"
        f"  --keep-until-expiring --expand --deploy-hook {hook_path}{staging}",
    )
    return config, certs


def nginx_spec(stack: str, data_dir: str, ingress: Ingress) -> ContainerSpec:
    return ContainerSpec(
        name="nginx",
        image=ingress.nginx_image,
        tier=Tier.EDGE,
        port=8443,
        publish=[PublishedPort(host_port=80, container_port=8080),
                 PublishedPort(host_port=443, container_port=8443)],
        memory_mb=ingress.memory_mb,
        cpus=ingress.cpus,
        healthcheck=HealthCheck(command=["wget", "-q", "-O", "/dev/null",
                                         "http://127.0.0.1:8081/healthz"]),
        user=f"{NGINX_UID}:{NGINX_UID}",
        read_only_root=True,
        command=["nginx", "-c", IN_CONTAINER_CONF, "-g", "daemon off;"],
        mounts=[
            Mount(host_path=f"{data_dir}/nginx", container_path="/etc/nginx/platform"),
            Mount(host_path=f"{data_dir}/tls", container_path=IN_CONTAINER_TLS),
            Mount(host_path=f"{data_dir}/acme", container_path=IN_CONTAINER_ACME),
        ],
    )
