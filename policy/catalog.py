"""The policy catalog as a Markdown table, generated from the policy objects.

``python -m policy.catalog --write`` refreshes the table in README.md between its markers; a
test fails when the committed table differs from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pulumi_policy import StackValidationPolicy

from policy.rules import CATALOG, POLICIES

START, END = "<!-- policy-catalog:start -->", "<!-- policy-catalog:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"


def catalog_markdown() -> str:
    rows = ["| policy | category | level | severity | scope | what it checks | sources | fix |",
            "|---|---|---|---|---|---|---|---|"]
    for policy in POLICIES:
        info = CATALOG[policy.name]
        scope = "stack" if isinstance(policy, StackValidationPolicy) else "resource"
        rows.append(f"| `{policy.name}` | {info.category} | {policy.enforcement_level.value} | "
                    f"{policy.severity.value} | {scope} | {policy.description} | {info.anchor} | "
                    f"{info.fix.replace('|', '/')} |")
    return "\n".join(rows)


def readme_with_catalog(text: str) -> str:
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{catalog_markdown()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    if "--write" in argv:
        README.write_text(readme_with_catalog(README.read_text()))
    else:
        print(catalog_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
