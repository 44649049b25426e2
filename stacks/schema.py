"""JSON Schema of a stack file (``Pulumi.<stack>.yaml``), for editors and reviewers.

Regenerate with ``python -m stacks.schema > docs/stack-config.schema.json``; a test fails when
the committed file is stale.
"""

from __future__ import annotations

import json
import sys

from pydantic.json_schema import models_json_schema

from stacks.environment import Environment
from stacks.errors import CONFIG_NAMESPACE
from stacks.registry import PRODUCTS


def stack_file_schema() -> dict:
    models = [Environment, *(p.config_model for _, p in sorted(PRODUCTS.items()))]
    refs, definitions = models_json_schema([(m, "validation") for m in models],
                                           ref_template="#/$defs/{model}")
    ref_of = {model: refs[(model, "validation")] for model in models}
    properties: dict = {
        f"{CONFIG_NAMESPACE}:environment": ref_of[Environment],
        f"{CONFIG_NAMESPACE}:products": {
            "type": "array",
            "items": {"enum": sorted(PRODUCTS)},
            "uniqueItems": True,
            "description": "the products this stack holds; each needs its own settings key",
        },
    }
    for name, product in sorted(PRODUCTS.items()):
        properties[f"{CONFIG_NAMESPACE}:{name}"] = ref_of[product.config_model]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Pulumi stack file of the platform project",
        "type": "object",
        "$defs": definitions.get("$defs", {}),
        "properties": {
            "config": {
                "type": "object",
                "properties": properties,
                "required": [f"{CONFIG_NAMESPACE}:environment", f"{CONFIG_NAMESPACE}:products"],
                "description": "Secrets are separate keys set with `pulumi config set --secret`; "
                "provider keys (digitalocean:token, cloudflare:apiToken) are allowed too.",
            },
            "secretsprovider": {"type": "string"},
            "encryptionsalt": {"type": "string"},
        },
    }


def main() -> int:
    json.dump(stack_file_schema(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
