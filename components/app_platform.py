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
from typing import Annotated, Literal, Mapping, Optional, Sequence

import pulumi
import pulumi_digitalocean as do
from pydantic import AfterValidator, Field, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic import ValidationError

from components.containers import check_env, check_env_names, image_is_pinned
from validation.fields import Hostname, ResourceName, StrictModel
from validation.provider_lists import validator as provider_slug

DEDICATED_PREFIX = "apps-d-"
"""CPU-based autoscaling needs a dedicated-CPU instance size
(https://docs.digitalocean.com/products/app-platform/how-to/scale-app/)."""


def located(model: str, *errors: tuple[tuple, str, object]) -> ValidationError:
    """A ValidationError at fields of ``model``: pydantic adds the model's own location."""
    return ValidationError.from_exception_data(model, [
        InitErrorDetails(type=PydanticCustomError("rule", message), loc=loc, input=value)
        for loc, message, value in errors])


class GithubSource(StrictModel):
    repo: str = Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", description="owner/name")
    branch: str = Field(min_length=1, description="branch to build")
    deploy_on_push: bool = Field(
        description="deploy every push to the branch; false when deploys are triggered by CI "
        "(the GIV backend deploys on git tags)")


class ImageSource(StrictModel):
    registry_type: Literal["DOCR", "DOCKER_HUB", "GHCR"] = Field(description="registry kind")
    registry: str | None = Field(default=None, description="registry namespace (Docker Hub, GHCR)")
    repository: str = Field(pattern=r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$",
                            description="image repository (lower case, OCI grammar)")
    # The OCI distribution spec's tag grammar, ASCII only (a Unicode \w would accept tags no
    # registry does, and its 128-fold expansion cost 0.1 s of every synth to compile).
    tag: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
                            description="image tag, not latest")
    digest: str | None = Field(default=None, pattern=r"^sha256:[a-f0-9]{64}$",
                               description="image digest; wins over tag")

    @model_validator(mode="after")
    def _pinned(self) -> "ImageSource":
        if self.digest is None and (self.tag is None or not image_is_pinned(f"x:{self.tag}")):
            raise located("ImageSource", (("tag",), "an image source needs a tag other than latest, "
                                                    "or a digest", self.tag))
        return self


class Autoscaling(StrictModel):
    min_instances: int = Field(ge=1, le=250, description="fewest instances")
    max_instances: int = Field(ge=1, le=250, description="most instances")
    cpu_percent: int = Field(default=70, ge=1, le=100, description="target CPU utilisation")

    @model_validator(mode="after")
    def _order(self) -> "Autoscaling":
        if self.max_instances < self.min_instances:
            raise located("Autoscaling", (("max_instances",), f"is below min_instances ({self.min_instances})",
                                          self.max_instances))
        return self


class AppComponent(StrictModel):
    """One component of an app: a service, a static site, a worker or a job."""

    name: ResourceName = Field(description="component name")
    kind: Literal["service", "static_site", "worker", "job"] = Field(description="component kind")
    github: GithubSource | None = Field(default=None, description="build from a GitHub branch")
    image: ImageSource | None = Field(default=None, description="or run a pinned image")
    domain: Hostname | None = Field(default=None, description="public hostname routed to it")
    path: str = Field(default="/", pattern=r"^/", description="path prefix routed to it")
    build_command: str | None = Field(default=None, description="build command")
    run_command: str | None = Field(default=None, description="run command (services, workers)")
    output_dir: str | None = Field(default=None, description="build output (static sites)")
    http_port: int | None = Field(default=None, gt=0, lt=65536, description="service port")
    health_check_path: str | None = Field(default=None, pattern=r"^/", description="HTTP health path")
    instance_size_slug: Annotated[str | None, AfterValidator(provider_slug("app_instance_sizes", "App Platform instance size"))] = Field(
        default=None, description="instance size, e.g. apps-s-1vcpu-1gb; autoscaling needs a dedicated (apps-d-*) size")
    instance_count: int | None = Field(default=None, ge=1, le=250, description="fixed instance count")
    autoscaling: Autoscaling | None = Field(default=None, description="or scale on CPU")
    env: Annotated[dict[str, str], AfterValidator(check_env)] = Field(
        default_factory=dict, description="plain environment variables (no secrets)")
    secret_env: Annotated[dict[str, str], AfterValidator(check_env_names)] = Field(
        default_factory=dict, description="variable -> secret config key")

    @model_validator(mode="after")
    def _consistent(self) -> "AppComponent":
        errors = []
        if (self.github is None) == (self.image is None):
            errors.append((("image",) if self.image else ("github",), "set exactly one of github or image",
                           None))
        if self.kind == "static_site" and self.image is not None:
            errors.append((("image",), "static sites build from git, not from an image", None))
        if self.kind == "service":
            errors += [((key,), "a service needs it", None) for key in ("http_port", "health_check_path")
                       if getattr(self, key) is None]
        if self.autoscaling is not None and self.instance_count is not None:
            errors.append((("instance_count",), "set instance_count or autoscaling, not both", None))
        if self.autoscaling is not None and not (self.instance_size_slug or "").startswith(DEDICATED_PREFIX):
            errors.append((("instance_size_slug",), "CPU-based autoscaling runs only on dedicated-CPU "
                           f"instance sizes ({DEDICATED_PREFIX}*; "
                           "https://docs.digitalocean.com/products/app-platform/how-to/scale-app/); choose "
                           "one or replace autoscaling by instance_count", self.instance_size_slug))
        if errors:
            raise located("AppComponent", *errors)
        return self


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
