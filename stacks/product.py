"""What every product's build creates or wires the same way: the product's root component (the
synth and the plan group resources by it), its DigitalOcean project and VPC, the monitoring
stack of a host wired to the environment's alert destinations, generated passwords, and the
per-service env maps (secret ``secret_env`` values, maps merged per service)."""

from __future__ import annotations

from typing import Mapping, Sequence

import pulumi
import pulumi_digitalocean as do
import pulumi_random as random

from components import monitoring
from components.containers import ContainerSpec
from components.database import ManagedDatabaseCluster
from stacks import wiring


class Product(pulumi.ComponentResource):
    """The root of one product's resources, so the plan and the synth group by product."""

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"platform:products:{name.capitalize()}", name, None, opts)


def product_foundation(product: Product, *, name: str, label: str, production: bool,
                       region: str, ip_range: str) -> tuple[do.Project, do.Vpc]:
    """The DigitalOcean project that lists a product's resources and the product's own VPC."""
    project = do.Project(f"{name}-project", name=f"{label} {name.split('-', 1)[1]}",
                         environment="Production" if production else "Staging",
                         purpose="Web Application", opts=pulumi.ResourceOptions(parent=product))
    vpc = do.Vpc(f"{name}-vpc", name=name, region=region, ip_range=ip_range,
                 opts=pulumi.ResourceOptions(parent=product, protect=production))
    return project, vpc


def service_secret_env(secret, services: Sequence[ContainerSpec]
                       ) -> dict[str, dict[str, pulumi.Output[str]]]:
    """Each service's ``secret_env`` resolved to secret config values."""
    return {s.name: {env: secret(key) for env, key in s.secret_env.items()}
            for s in services if s.secret_env}


def merge_env(*maps: Mapping[str, Mapping[str, pulumi.Input[str]]]
              ) -> dict[str, dict[str, pulumi.Input[str]]]:
    merged: dict[str, dict[str, pulumi.Input[str]]] = {}
    for env_map in maps:
        for service, values in env_map.items():
            merged.setdefault(service, {}).update(values)
    return merged


def host_monitoring(ctx, cfg: monitoring.MonitoringConfig, **where) -> monitoring.HostMonitoring:
    """The monitoring stack on one host, alerting to the environment's destinations."""
    alerts = ctx.environment.alerts
    return monitoring.single_host(
        cfg, emails=alerts.emails, slack_channel=alerts.slack_channel,
        smtp_password=ctx.secret(cfg.smtp_password_secret) if cfg.smtp_password_secret else None,
        slack_url=ctx.secret("alerts_slack_webhook_url") if alerts.slack_channel else None, **where)


def generated_password(name: str, parent: pulumi.Resource, length: int = 32) -> pulumi.Output[str]:
    """A generated secret (letters and digits, so it is safe in URLs and shell)."""
    return random.RandomPassword(name, length=length, special=False,
                                 opts=pulumi.ResourceOptions(parent=parent)).result


class SecretResolver:
    """Turns a plan's secret references (``stacks.wiring``) into outputs: each ``Generated``
    name becomes one ``random.RandomPassword`` under ``parent`` the first time it is read;
    ``ConfigSecret`` reads the stack config through ``secret`` (``BuildContext.secret``);
    ``BucketKey`` reads ``bucket_keys`` (service -> (access, secret)), set once the bucket
    exists; ``ClusterUri`` reads ``clusters`` (component name -> ``ManagedDatabaseCluster``),
    set once the clusters exist."""

    def __init__(self, parent: pulumi.Resource, secret):
        self._parent = parent
        self._secret = secret
        self._generated: dict[str, pulumi.Output[str]] = {}
        self.bucket_keys: Mapping[str, tuple[pulumi.Output[str], pulumi.Output[str]]] = {}
        self.clusters: Mapping[str, ManagedDatabaseCluster] = {}

    def password(self, ref: wiring.Generated) -> pulumi.Output[str]:
        if ref.name not in self._generated:
            self._generated[ref.name] = generated_password(ref.name, self._parent, ref.length)
        return self._generated[ref.name]

    def resolve(self, value: wiring.SecretValue | str) -> pulumi.Input[str]:
        if isinstance(value, str):
            return value
        if isinstance(value, wiring.Generated):
            return self.password(value)
        if isinstance(value, wiring.ConfigSecret):
            return self._secret(value.key)
        if isinstance(value, wiring.SecretUrl):
            return pulumi.Output.secret(self.password(value.password).apply(
                lambda pw, template=value.template: template.format(pw=pw)))
        if isinstance(value, wiring.BucketKey):
            return self.bucket_keys[value.service][0 if value.part == "access" else 1]
        if isinstance(value, wiring.ClusterUri):
            return self.clusters[value.cluster].uri(ca_path=value.ca_path, user=value.user,
                                                    database=value.database, pool=value.pool)
        raise TypeError(f"not a secret reference: {value!r}")

    def env(self, values: Mapping[str, wiring.SecretValue | str] | Sequence[tuple[str, wiring.SecretValue | str]]
            ) -> dict[str, pulumi.Input[str]]:
        items = values.items() if isinstance(values, Mapping) else values
        return {key: self.resolve(value) for key, value in items}
