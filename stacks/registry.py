"""The products a stack can hold. Adding a product: write stacks/<name>/ (config, rules, a plan
returning a ``stacks.plan.ProductPlan``, and its PRODUCT, as stacks/kro/ does), list it here;
``stacks.provision`` creates any product's plan."""

from __future__ import annotations

from stacks import giv, kro, pencom, vedfinance
from stacks.definition import ProductDefinition

PRODUCTS: dict[str, ProductDefinition] = {p.name: p for p in [kro.PRODUCT, giv.PRODUCT, pencom.PRODUCT, vedfinance.PRODUCT]}
