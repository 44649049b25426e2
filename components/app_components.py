"""The config models of an App Platform app's components (services, static sites, workers,
jobs): what a stack file declares, checked at the config boundary. Pure: no resources, so a
product's plan can hold them."""

from __future__ import annotations

from typing import Annotated, Iterator, Literal

from pydantic import AfterValidator, Field, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic import ValidationError

from components.containers import check_env, check_env_names, image_is_pinned
from validation.fields import Hostname, ResourceName, StrictModel
from validation.provider_lists import validator as provider_slug
from validation.rules import Finding, RuleContext, rule

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
                            description="image version tag (with a digit; not latest or stable)")
    digest: str | None = Field(default=None, pattern=r"^sha256:[a-f0-9]{64}$",
                               description="image digest; wins over tag")

    @model_validator(mode="after")
    def _pinned(self) -> "ImageSource":
        if self.digest is None and (self.tag is None or not image_is_pinned(f"x:{self.tag}")):
            raise located("ImageSource", (("tag",), "an image source needs a version tag (one with a "
                                                    "digit, not latest or stable), or a digest", self.tag))
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
        default_factory=dict, description="plain environment variables (no secrets); each NAME=value under "
        "128 KiB and all of them at most 1 MiB (execve's limits)")
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


@rule(AppComponent)
def _not_plain_and_secret(component: AppComponent, ctx: RuleContext) -> Iterator[Finding]:
    """A variable is plain or secret, not both: App Platform would get it twice (found by the
    GIV plan's property test, where the plan's env map refuses the second source)."""
    for key in sorted(set(component.env) & set(component.secret_env)):
        yield Finding(("secret_env", key), f"is also set in {ctx.where('env', key)}; keep one")
