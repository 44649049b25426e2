"""``AppPlatformApp``: a DigitalOcean App Platform app from a typed spec built by a pure function.

Known perpetual diffs, and what this module does about them:
- env var order: App Platform returns envs sorted by key; ``app_spec`` sorts them too.
- the deprecated ``domains`` list: never set; ``domain_names`` with their zone instead.
- ingress: when unset, App Platform generates rules that then show as a diff; ``app_spec``
  always writes explicit rules.
Remaining: App Platform fills defaults it does not echo back on read for some fields (for
example ``instance_size_slug`` of static sites, ``features``); they are left unset here, and a
``pulumi preview`` right after an ``up`` shows no change for this program's specs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Optional, Sequence

import pulumi
import pulumi_digitalocean as do

from components.app_components import AppComponent

@dataclass(frozen=True)
class DatabaseAttachment:
    """An existing managed cluster attached to the app by name.

    ``production`` stays true: App Platform's ``production: false`` is a dev database it
    provisions itself (PostgreSQL only); an existing cluster of any engine is attached as a
    production database with ``cluster_name`` (the provider: "cluster_name ... is required for
    production databases. For dev databases, if cluster_name is not set, a new cluster will be
    provisioned", pulumi-digitalocean AppSpecDatabaseArgs; App Platform's app spec reference,
    https://docs.digitalocean.com/products/app-platform/reference/app-spec/)."""

    name: str
    cluster_name: str
    engine: Literal["PG", "MONGODB", "VALKEY"]
    production: bool = True

    def __post_init__(self):
        if not self.production:
            raise ValueError(f"{self.name}: an existing cluster is attached with production true; "
                             "production false asks App Platform for a new dev database")


@dataclass(frozen=True)
class AppPlatformAppArgs:
    name: str
    """App name (unique in the account)."""
    region: str
    """App Platform region slug, e.g. fra."""
    components: Sequence[AppComponent]
    """Services, static sites, workers and jobs."""
    zone: str
    """DNS zone of the components' domains, managed by DigitalOcean."""
    vpc_id: Optional[pulumi.Input[str]] = None
    """VPC the app's egress uses, so databases see it on their private network."""
    databases: Sequence[DatabaseAttachment] = ()
    """Managed clusters attached by name; App Platform injects their bindable variables."""
    secret_env: Mapping[str, Mapping[str, pulumi.Input[str]]] = field(default_factory=dict)
    """Per component, secret values (type SECRET)."""
    extra_env: Mapping[str, Mapping[str, pulumi.Input[str]]] = field(default_factory=dict)
    """Per component, plain values the program computes (bucket names, endpoints)."""
    alert_emails: Sequence[str] = ()
    """Where App Platform alerts go."""
    project_id: Optional[pulumi.Input[str]] = None
    adopt_app_id: Optional[str] = None
    """ID of an existing app to adopt."""


def _source(component: AppComponent) -> dict:
    if component.github is not None:
        return {"github": {"repo": component.github.repo, "branch": component.github.branch,
                           "deploy_on_push": component.github.deploy_on_push}}
    image = component.image
    spec = {"registry_type": image.registry_type, "repository": image.repository}
    if image.registry:
        spec["registry"] = image.registry
    spec["digest" if image.digest else "tag"] = image.digest or image.tag
    return {"image": spec}


COMPONENT_ALERTS = (("CPU_UTILIZATION", 85), ("MEM_UTILIZATION", 85), ("RESTART_COUNT", 3))
APP_ALERTS = ("DEPLOYMENT_FAILED", "DOMAIN_FAILED")


def app_spec(args: AppPlatformAppArgs,
             secret_values: Mapping[str, Mapping[str, pulumi.Input[str]]]) -> dict:
    """The ``AppSpecArgs`` of an app as plain dicts (snake_case keys, the SDK's input names).

    ``secret_values`` are placed as given (secret outputs in a deployment, strings in tests)."""
    def destinations() -> dict:
        return {"destinations": {"emails": list(args.alert_emails)}} if args.alert_emails else {}

    spec: dict = {"name": args.name, "region": args.region,
                  "alerts": [{"rule": rule, **destinations()} for rule in APP_ALERTS]}
    by_kind: dict[str, list] = {}
    rules = []
    domains = sorted({c.domain for c in args.components if c.domain})
    for component in args.components:
        envs = [{"key": k, "value": v, "scope": "RUN_AND_BUILD_TIME", "type": "GENERAL"}
                for k, v in {**component.env, **args.extra_env.get(component.name, {})}.items()]
        envs += [{"key": k, "value": v, "scope": "RUN_TIME", "type": "SECRET"}
                 for k, v in secret_values.get(component.name, {}).items()]
        entry: dict = {"name": component.name, **_source(component)}
        if envs:
            entry["envs"] = sorted(envs, key=lambda e: e["key"])
        for key in ("build_command", "run_command", "output_dir", "http_port", "instance_size_slug",
                    "instance_count"):
            value = getattr(component, key)
            if value is not None:
                entry[key] = value
        if component.kind == "static_site":
            entry["catchall_document"] = "index.html"
        if component.health_check_path:
            entry["health_check"] = {"http_path": component.health_check_path,
                                     "initial_delay_seconds": 20, "period_seconds": 10,
                                     "timeout_seconds": 5, "failure_threshold": 3}
        if component.autoscaling:
            entry["autoscaling"] = {"min_instance_count": component.autoscaling.min_instances,
                                    "max_instance_count": component.autoscaling.max_instances,
                                    "metrics": {"cpu": {"percent": component.autoscaling.cpu_percent}}}
        if component.kind in ("service", "worker"):
            entry["alerts"] = [{"rule": rule, "operator": "GREATER_THAN", "value": value,
                                "window": "FIVE_MINUTES", **destinations()}
                               for rule, value in COMPONENT_ALERTS]
        kind_key = {"service": "services", "static_site": "static_sites", "worker": "workers",
                    "job": "jobs"}[component.kind]
        by_kind.setdefault(kind_key, []).append(entry)
        if component.kind in ("service", "static_site") and component.domain:
            rules.append({"match": {"authority": {"exact": component.domain},
                                    "path": {"prefix": component.path}},
                          "component": {"name": component.name}})
    spec.update(by_kind)
    if domains:
        spec["domain_names"] = [{"name": d, "type": "PRIMARY" if i == 0 else "ALIAS", "zone": args.zone}
                                for i, d in enumerate(domains)]
    if rules:
        spec["ingress"] = {"rules": rules}
    if args.databases:
        spec["databases"] = [{"name": d.name, "cluster_name": d.cluster_name, "engine": d.engine,
                              "production": d.production} for d in args.databases]
    return spec


class AppPlatformApp(pulumi.ComponentResource):
    """Children: ``{name}-app``. Outputs: ``app_id``, ``live_url``, ``default_ingress``."""

    def __init__(self, name: str, args: AppPlatformAppArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("platform:components:AppPlatformApp", name, None, opts)
        unknown = set(args.secret_env) - {c.name for c in args.components}
        if unknown:
            raise ValueError(f"secret env for components that do not exist: {sorted(unknown)}")
        # Secret values sit in the spec as secret outputs at their own place, so only they are
        # masked in previews and state, not the whole spec.
        spec = app_spec(args, args.secret_env)
        if args.vpc_id is not None:
            spec["vpcs"] = [{"id": args.vpc_id}]
        self.app = do.App(f"{name}-app", spec=spec, project_id=args.project_id,
                          opts=pulumi.ResourceOptions(parent=self, import_=args.adopt_app_id))
        self.app_id = self.app.id
        self.live_url = self.app.live_url
        self.default_ingress = self.app.default_ingress
        self.register_outputs({"app_id": self.app_id, "live_url": self.live_url,
                               "default_ingress": self.default_ingress})
