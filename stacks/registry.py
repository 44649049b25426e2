"""The products a stack can hold, each with its config model and the function that builds it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel


@dataclass(frozen=True)
class Product:
    name: str
    config_model: type[BaseModel]
    build: Callable[..., dict[str, Any]]
    secrets: Callable[[Any], list] = field(default=lambda _cfg: [])
    all_secret_names: tuple[str, ...] = ()

    def required_secrets(self, product_config: Any) -> list:
        return self.secrets(product_config)

    def secret_key_names(self) -> tuple[str, ...]:
        return self.all_secret_names


def _load() -> dict[str, Product]:
    products: dict[str, Product] = {}
    return products


PRODUCTS: dict[str, Product] = _load()
