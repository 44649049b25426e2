"""The products a stack can hold. Adding a product: write stacks/<name>/ (config, rules, plan,
provision and its PRODUCT, as stacks/pencom/ does), list it here."""

from __future__ import annotations

from stacks import giv, kro, pencom, vedfinance
from stacks.definition import ProductDefinition

PRODUCTS: dict[str, ProductDefinition] = {p.name: p for p in [kro.PRODUCT, giv.PRODUCT, pencom.PRODUCT, vedfinance.PRODUCT]}
