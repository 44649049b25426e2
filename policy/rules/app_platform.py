"""App Platform policies: secret env types, health checks and alerts, read from the spec's
non-secret parts (a spec with some secret values is still checked everywhere else)."""

from __future__ import annotations

import re

from policy.rules.base import (ADVISORY, HIGH, MANDATORY, MEDIUM, T_APP, Case, items, mapping,
                               resource_policy)
from policy.rules.fixtures import doc, res

SECRET_NAME = re.compile(r"(password|passwd|secret|token|api_?key|private_?key|access_?key|dsn|_uri$|_url$)",
                         re.IGNORECASE)
PUBLIC_NAME = re.compile(r"^(REACT_APP_|NEXT_PUBLIC_|VITE_|PUBLIC_)|(_CLOUD_NAME|_HOST|_PORT|_REGION|_BUCKET|_ENDPOINT)$")
COMPONENTS = ("services", "workers", "jobs", "staticSites", "functions")


def components(spec):
    for kind in COMPONENTS:
        for component in items(spec.get(kind)):
            yield kind, mapping(component)


def _check_secret_env(props, args):
    spec = mapping(props.get("spec"))
    holders = [("app", spec)] + [(c.get("name"), c) for _, c in components(spec)]
    for owner, holder in holders:
        for env in items(holder.get("envs")):
            env = mapping(env)
            key = str(env.get("key", ""))
            if SECRET_NAME.search(key) and not PUBLIC_NAME.search(key) and env.get("type") != "SECRET":
                value = str(env.get("value") or "")
                if key.endswith(("_URL", "_URI")) and "@" not in value:
                    continue
                yield f"App env var {key} of {owner} looks secret but is not type SECRET"


resource_policy(
    "digitalocean-app-configure-secret-env", "App Platform environment variables that carry secrets are of type SECRET.",
    level=MANDATORY, severity=HIGH, category="app_platform",
    sources=["DigitalOcean docs: App Platform environment variables (encrypted SECRET type)", "CWE-312"],
    fix="Set type SECRET and pass the value as a Pulumi secret.",
    types=[T_APP], check=_check_secret_env,
    cases=Case(doc(res(T_APP, "app", {"spec": {"services": [{"name": "api", "envs": [
        {"key": "JWT_SECRET", "type": "SECRET", "value": "x"}, {"key": "REACT_APP_API_URL", "value": "https://api"},
        {"key": "NODE_ENV", "value": "production"}]}]}})),
               [(doc(res(T_APP, "app", {"spec": {"services": [{"name": "api", "envs": [
                   {"key": "JWT_SECRET", "type": "GENERAL", "value": "x"},
                   {"key": "DATABASE_URL", "value": "postgresql://u:p@db/x"}]}]}})),
                 ["App env var JWT_SECRET of api looks secret but is not type SECRET",
                  "App env var DATABASE_URL of api looks secret but is not type SECRET"])]))


def _check_health(props, args):
    spec = mapping(props.get("spec"))
    for kind, component in components(spec):
        if kind == "services" and not mapping(component.get("healthCheck")).get("httpPath") \
                and not mapping(component.get("healthCheck")).get("port"):
            yield f"App service {component.get('name')} has no health check; a broken deploy would go live"


resource_policy(
    "digitalocean-app-enable-health-check", "Every App Platform service declares a health check.",
    level=MANDATORY, severity=MEDIUM, category="app_platform",
    sources=["DigitalOcean docs: App Platform health checks", "CIS Docker 4.6 (healthcheck), by analogy"],
    fix="Give the service health_check.http_path.",
    types=[T_APP], check=_check_health,
    cases=Case(doc(res(T_APP, "app", {"spec": {"services": [{"name": "api", "healthCheck": {"httpPath": "/health"}}], "staticSites": [{"name": "web"}]}})),
               [(doc(res(T_APP, "app", {"spec": {"services": [{"name": "api"}]}})),
                 ["App service api has no health check; a broken deploy would go live"])]))


REQUIRED_ALERTS = ("DEPLOYMENT_FAILED", "DOMAIN_FAILED")


def _check_alerts(props, args):
    spec = mapping(props.get("spec"))
    rules = {str(mapping(a).get("rule")) for a in items(spec.get("alerts"))}
    missing = [r for r in REQUIRED_ALERTS if r not in rules]
    if missing:
        yield f"the app has no {', '.join(missing)} alert"


resource_policy(
    "digitalocean-app-enable-failure-alerts", "Every App Platform app alerts on failed deployments and failed domains.",
    level=ADVISORY, severity=MEDIUM, category="app_platform",
    sources=["DigitalOcean docs: App Platform alerts"],
    fix="Add DEPLOYMENT_FAILED and DOMAIN_FAILED to spec.alerts.",
    types=[T_APP], check=_check_alerts,
    cases=Case(doc(res(T_APP, "app", {"spec": {"alerts": [{"rule": "DEPLOYMENT_FAILED"}, {"rule": "DOMAIN_FAILED"}]}})),
               [(doc(res(T_APP, "app", {"spec": {"alerts": [{"rule": "DEPLOYMENT_FAILED"}]}})), ["the app has no DOMAIN_FAILED alert"])]))
