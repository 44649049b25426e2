"""What a container listens on, read from its captured inputs alone
(``rehearsal.checks.listeners``): each source on its own, and what is not a target."""

from __future__ import annotations

import pytest

from rehearsal.checks.listeners import container_ports, repository, unpublished

pytestmark = pytest.mark.fast

NGINX_CONF = "server {\n  listen 127.0.0.1:8081;\n  listen 4000;\n  listen 14000 ssl;\n}\n"


def _container(image, **inputs):
    return {"image": image, **inputs}


@pytest.mark.parametrize("image,repo", [
    ("nginxinc/nginx-unprivileged:1.27.3-alpine", "nginxinc/nginx-unprivileged"),
    ("postgres:17.2-bookworm", "postgres"), ("docker.io/library/redis:7", "redis"),
    ("gcr.io/cadvisor/cadvisor:v0.49.1", "cadvisor/cadvisor"),
    ("localhost:5000/a/b@sha256:00", "a/b"), ("registry.digitalocean.com/kro/kro-backend:1", "kro/kro-backend"),
])
def test_the_repository_of_a_reference(image, repo):
    assert repository(image) == repo


def test_nginx_listens_where_its_mounted_config_says_and_loopback_is_no_target():
    inputs = _container("nginxinc/nginx-unprivileged:1.27", command=["nginx", "-c", "/etc/nginx/mtls/nginx.conf"],
                        volumes=[{"containerPath": "/etc/nginx/mtls", "hostPath": "/srv/h/files/gw/etc/nginx/mtls"}],
                        ports=[{"internal": 14000, "external": 14000}],
                        healthcheck={"tests": ["CMD", "wget", "-q", "http://127.0.0.1:8081/healthz"]})
    files = {"/srv/h/files/gw/etc/nginx/mtls/nginx.conf": NGINX_CONF, "/srv/h/files/other/nginx.conf": "listen 7777;"}
    assert container_ports(inputs, files) == {4000: "all", 8081: "loopback", 14000: "all"}
    # The image's own 8080 is not added: nginx listens only where its config says.
    assert unpublished(inputs, files) == [4000]
    # Without its config only the health check's port is known, taken as every address.
    assert unpublished(inputs, {}) == [8081]


def test_the_service_port_and_the_health_check_port_of_an_application():
    inputs = _container("ghcr.io/x/api:1", envs=["NODE_ENV=production", "PORT=3000", "[secret]"],
                        healthcheck={"tests": ["CMD", "node", "-e", "get('http://127.0.0.1:3001/health')"]})
    assert unpublished(inputs, {}) == [3000, 3001]


@pytest.mark.parametrize("image,command,expected", [
    ("prom/prometheus:v2", ["--config.file=/etc/p.yml"], [9090]),
    ("prom/node-exporter:v1", [], [9100]),
    ("prom/alertmanager:v0.27.0", ["--config.file=/etc/a.yml"], [9093, 9094]),
    ("prom/alertmanager:v0.27.0", ["--cluster.listen-address=", "--web.listen-address=:9095"], [9095]),
    ("prom/node-exporter:v1", ["--web.listen-address=:9200"], [9200]),
    ("prom/node-exporter:v1", ["--web.listen-address=127.0.0.1:9100"], []),
    ("redis:7", ["sh", "-c", "exec redis-server --port 0 --tls-port 6380 --requirepass x"], [6380]),
    ("redis:7", ["sh", "-c", "exec redis-server --requirepass x"], [6379]),
    ("postgres:17", ["postgres", "-c", "ssl=on", "-c", "port=25060"], [25060]),
    ("minio/minio:R", ["server", "/data", "--address", ":9000", "--console-address", "127.0.0.1:9001"], [9000]),
    ("mongo:7", ["mongod", "--bind_ip_all"], [27017]),
    ("ubuntu/squid:6", None, [3128]),
    ("grafana/grafana-oss:11", None, [3000]),
    ("gcr.io/cadvisor/cadvisor:v0.49.1", None, [8080]),
    ("ghcr.io/x/worker:1", None, []),
])
def test_flags_move_an_image_port_and_the_image_port_stands_otherwise(image, command, expected):
    assert unpublished(_container(image, command=command), {}) == expected


def test_a_published_port_is_not_unpublished_and_a_loopback_publish_keeps_its_container_port():
    inputs = _container("postgres:17", ports=[{"internal": 5432, "external": 5432, "ip": "127.0.0.1"}])
    assert container_ports(inputs, {}) == {5432: "all"} and unpublished(inputs, {}) == []
