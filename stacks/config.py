"""The stack config: which products a stack holds, the environment they share, their settings.

Read once from Pulumi config and validated before any resource is registered. Every problem
in the file is reported together, each with its key path, so one run shows everything to fix.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Mapping

from pydantic import BaseModel, Field, ValidationError, model_validator

from stacks.errors import CONFIG_NAMESPACE, ConfigError, describe_validation_error, key_path
from stacks.model import AdminCidr, StrictModel

DO_REGIONS = (
    "ams3", "blr1", "fra1", "lon1", "nyc1", "nyc2", "nyc3",
    "sfo2", "sfo3", "sgp1", "syd1", "tor1", "atl1",
)


class AlertDestinations(StrictModel):
    """Where alerts go. Secrets (a Slack webhook) live in their own secret config key."""

    emails: list[str] = Field(
        default_factory=list,
        description="email addresses that receive alerts; none means alerts only reach Slack",
    )
    slack_channel: str | None = Field(
        default=None,
        pattern=r"^#[a-z0-9_-]+$",
        description="Slack channel such as #ops-alerts; needs the secret key "
        "platform:alerts_slack_webhook_url",
    )

    @model_validator(mode="after")
    def _emails_look_like_emails(self) -> "AlertDestinations":
        bad = [e for e in self.emails if "@" not in e or e.startswith("@") or e.endswith("@")]
        if bad:
            raise ValueError(f"not email addresses: {', '.join(bad)}")
        if not self.emails and not self.slack_channel:
            raise ValueError("alerts need at least one destination: emails or slack_channel")
        return self


class Environment(StrictModel):
    """Settings every product in the stack shares."""

    name: str = Field(
        pattern=r"^[a-z][a-z0-9-]{1,20}$",
        description="environment name used in resource names and tags, such as prod or staging",
    )
    production: bool | None = Field(
        default=None,
        description="whether stateful resources are protected and retained on delete; "
        "defaults to true when name is prod",
    )
    region: Literal[DO_REGIONS] = Field(  # type: ignore[valid-type]
        default="fra1", description="default DigitalOcean region slug for the products"
    )
    admin_cidrs: list[AdminCidr] = Field(
        min_length=1,
        description="office or VPN egress CIDRs allowed to reach SSH and metrics (mgmt tier)",
    )
    alerts: AlertDestinations = Field(description="where alerts are sent (at least one destination)")

    @property
    def is_production(self) -> bool:
        return self.production if self.production is not None else self.name == "prod"


class SecretKey(BaseModel):
    """A secret config key a stack needs: set with ``pulumi config set --secret``."""

    key: str
    description: str


def _product_registry() -> Mapping[str, Any]:
    from stacks.registry import PRODUCTS

    return PRODUCTS


class StackConfig(BaseModel):
    """The validated config of one stack."""

    environment: Environment
    products: list[str]
    product_configs: dict[str, Any]

    def product(self, name: str):
        return self.product_configs[name]

    def required_secrets(self) -> list[SecretKey]:
        needed: list[SecretKey] = []
        if self.environment.alerts.slack_channel:
            needed.append(
                SecretKey(
                    key="alerts_slack_webhook_url",
                    description="Slack incoming-webhook URL for alerts",
                )
            )
        registry = _product_registry()
        for name in self.products:
            needed.extend(registry[name].required_secrets(self.product_configs[name]))
        # One entry per key: a secret several services use (Pencom's Oracle password) or that
        # monitoring reuses (the SendGrid key) is still one key to set.
        merged: dict[str, SecretKey] = {}
        for secret in needed:
            if secret.key in merged:
                if secret.description not in merged[secret.key].description:
                    merged[secret.key].description += f"; {secret.description}"
            else:
                merged[secret.key] = secret.model_copy()
        return list(merged.values())


def _parse_json_value(key: str, raw: Any, problems: list[str]) -> Any:
    """Pulumi hands structured config to the program as JSON text."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if not text or text[0] not in "[{":
        return raw
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(f"{key_path(key, [])}: not valid JSON ({exc.msg} at char {exc.pos})")
        return None


def validate_stack_config(
    raw: Mapping[str, Any], secret_keys: set[str] | None = None, *, check_secrets: bool = True
) -> StackConfig:
    """Validate every ``platform:*`` key of a stack. Raises ConfigError listing all problems.

    ``raw`` maps keys without the namespace (``kro``, ``environment``) to their values as Pulumi
    delivers them: strings, with objects and lists as JSON text.
    """
    registry = _product_registry()
    problems: list[str] = []
    secret_keys = set(secret_keys or ())

    secret_prefixes = tuple(p.secret_prefix for p in registry.values()) + ("alerts_",)
    known_top = {"environment", "products", *registry}
    for key in sorted(raw, key=str):
        if key not in known_top and not str(key).startswith(secret_prefixes):
            problems.append(
                f"{key_path(key, [])}: unknown key (known keys: {', '.join(sorted(known_top))}; "
                f"secret keys start with {', '.join(secret_prefixes)})"
            )
    values = {k: _parse_json_value(k, v, problems) for k, v in raw.items() if k in known_top}

    environment = None
    if "environment" not in values:
        problems.append(f"{key_path('environment', [])}: required key is missing "
                        "(an object with name, admin_cidrs, and optionally region and alerts)")
    else:
        try:
            environment = Environment.model_validate(values["environment"])
        except ValidationError as exc:
            problems.extend(describe_validation_error("environment", Environment, exc))

    products: list[str] = []
    raw_products = values.get("products")
    if raw_products is None:
        problems.append(f"{key_path('products', [])}: required key is missing (a list drawn "
                        f"from {', '.join(sorted(registry))}; it may be empty)")
    elif not isinstance(raw_products, list):
        problems.append(f"{key_path('products', [])}: must be a list of product names, "
                        f"got {json.dumps(raw_products, default=str)}")
    else:
        for index, name in enumerate(raw_products):
            if not isinstance(name, str) or name not in registry:
                problems.append(f"{key_path('products', [index])}: unknown product "
                                f"{json.dumps(name, default=str)}; known products: "
                                f"{', '.join(sorted(registry))}")
            elif name in products:
                problems.append(f"{key_path('products', [index])}: {name} is listed twice")
            else:
                products.append(name)

    product_configs: dict[str, Any] = {}
    for name, product in registry.items():
        listed = name in products
        present = name in values
        if listed and not present:
            problems.append(f"{key_path(name, [])}: required key is missing ({name} is listed "
                            f"in platform:products, so its settings object must be set)")
        elif present and not listed and raw_products is not None:
            problems.append(f"{key_path(name, [])}: settings for a product this stack does not "
                            f"hold; add {name} to platform:products or remove this key")
        elif listed:
            try:
                product_configs[name] = product.config_model.model_validate(
                    values[name], context={"environment": environment}
                )
            except ValidationError as exc:
                problems.extend(describe_validation_error(name, product.config_model, exc))

    if problems:
        raise ConfigError(problems)

    config = StackConfig(
        environment=environment,
        products=products,
        product_configs=product_configs,
    )
    if not check_secrets:
        return config
    missing = [s for s in config.required_secrets() if s.key not in raw]
    problems.extend(
        f"{key_path(s.key, [])}: required secret is not set ({s.description}); run "
        f"`pulumi config set --secret {CONFIG_NAMESPACE}:{s.key} <value>`"
        for s in missing
    )
    plaintext = [s for s in config.required_secrets() if s.key in raw and s.key not in secret_keys]
    problems.extend(
        f"{key_path(s.key, [])}: is stored in plain text in the stack file; set it with "
        f"`pulumi config set --secret {CONFIG_NAMESPACE}:{s.key} <value>` so it is encrypted"
        for s in plaintext
    )
    if problems:
        raise ConfigError(problems)
    return config


def read_pulumi_config() -> StackConfig:
    """Collect every ``platform:*`` key the engine knows about and validate them together."""
    from pulumi.runtime import config as runtime_config

    prefix = f"{CONFIG_NAMESPACE}:"
    merged: dict[str, Any] = {}
    merged.update(runtime_config.get_config_env())
    merged.update(runtime_config.CONFIG.get())
    raw = {k[len(prefix):]: v for k, v in merged.items() if k.startswith(prefix)}
    secret_keys = set(runtime_config.get_config_secret_keys_env())
    secret_keys |= set(runtime_config._SECRET_KEYS.get())
    secret_names = {k[len(prefix):] for k in secret_keys if k.startswith(prefix)}
    return validate_stack_config(raw, secret_names)
