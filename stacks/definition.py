"""What a product module declares so the program can validate and build it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

from pydantic import BaseModel


class SecretKey(BaseModel):
    """A secret config key a stack needs: set with ``pulumi config set --secret``."""

    key: str
    description: str
    format: Optional[Literal["openssh_private_key", "ssh_ca_private_key"]] = None
    """What the value must be, checked at the boundary when it is set (a deploy user's key, the
    SSH certificate authority's key: ``validation.formats.openssh_key_problem``)."""


@dataclass(frozen=True)
class ProductDefinition:
    name: str
    config_model: type[BaseModel]
    plan: Callable[[Any, Any], Any]
    """``plan(config, environment) -> stacks.plan.ProductPlan``, which ``stacks.provision`` creates."""
    secrets: Callable[[Any], list] = field(default=lambda _cfg: [])
    claims: Callable[[Any], dict] | None = None
    """Values that must be unique across the products of a stack: ``{"hostnames": [(loc,
    host)], "buckets": [(loc, (account, name))], "ingress_addresses": [(loc, address)]}``."""

    @property
    def secret_prefix(self) -> str:
        """Every secret key of a product starts with its name, e.g. ``kro_ssh_private_key``."""
        return f"{self.name}_"

    def required_secrets(self, product_config: Any) -> list:
        return self.secrets(product_config)
