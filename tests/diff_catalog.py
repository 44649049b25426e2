"""A catalog of routine changes and their expected pull-request diff, for the golden tests.

Each case edits one product's part of the staging stack file (the stack reduced to that product,
so a synth takes a second), synthesizes base and head, and renders the diff exactly as
``python -m synth diff`` does. The expected renderings live in ``tests/golden/<case>.md``;
regenerate them after an intended change of the rendering with

    .venv/bin/python -m tests.diff_catalog --write

and review the diff of ``tests/golden/`` like any other change.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from synth.engine import PROJECT_ROOT

GOLDEN = Path(__file__).resolve().parent / "golden"
PRODUCTS = ("kro", "giv", "vedfinance", "pencom")


def _service(doc: dict, product: str, name: str) -> dict:
    return next(s for s in doc["config"][f"platform:{product}"]["services"] if s["name"] == name)


def _component(doc: dict, name: str) -> dict:
    return next(c for c in doc["config"]["platform:giv"]["components"] if c["name"] == name)


def image_tag(doc):
    _service(doc, "kro", "backend")["image"] = "registry.digitalocean.com/kro/kro-backend:2026.11.3"


def env_var(doc):
    _service(doc, "kro", "backend")["env"]["LOG_LEVEL"] = "debug"


def route(doc):
    doc["config"]["platform:kro"]["routes"].append({"host": "beta.stage.krotrust.com", "service": "frontend"})


def hostname(doc):
    component = _component(doc, "krogiving-frontend")
    component["domain"] = "www.staging.krogiving.com"


def size(doc):
    component = _component(doc, "krogiving-backend")
    component["instance_size_slug"] = "apps-s-1vcpu-2gb"
    component["env"]["FEATURE_DONATIONS_V2"] = "true"


def alert_email(doc):
    doc["config"]["platform:environment"]["alerts"]["emails"].append("oncall@krotrust.com")


def backup_retention(doc):
    doc["config"]["platform:vedfinance"]["backup"]["retention_days"] = 21


def backup_schedule(doc):
    doc["config"]["platform:vedfinance"]["backup"]["schedule"] = "*-*-* 01:15:00 UTC"


def new_service(doc):
    services = doc["config"]["platform:kro"]["services"]
    worker = copy.deepcopy(_service(doc, "kro", "frontend"))
    # 128 MiB: the droplet's 2 GiB holds the committed services, the ingress and monitoring
    # with 224 MiB to spare (the boundary sums them against the droplet size).
    worker.update(name="status", image="registry.digitalocean.com/kro/kro-status:2026.11.1", memory_mb=128)
    services.append(worker)
    doc["config"]["platform:kro"]["routes"].append({"host": "status.stage.krotrust.com", "service": "status"})


def removed_service(doc):
    kro = doc["config"]["platform:kro"]
    kro["services"] = [s for s in kro["services"] if s["name"] != "admin-frontend"]
    kro["routes"] = [r for r in kro["routes"] if r["service"] != "admin-frontend"]


def secret_rotation(doc):
    doc["config"]["platform:kro_jwt_secret"] = {"secure": "v1:rotated-ciphertext"}


def droplet_size(doc):
    doc["config"]["platform:kro"]["droplet"]["size"] = "s-2vcpu-4gb"


def bucket_rename(doc):
    doc["config"]["platform:giv"]["media_bucket"]["name"] = "krogiving-media-staging-2"


def drop_product(doc):
    """Switching KRO off in staging, as the README once suggested: deletes its data."""
    doc["config"]["platform:products"] = []
    del doc["config"]["platform:kro"]
    for key in [k for k in doc["config"] if k.startswith("platform:kro_")]:
        del doc["config"][key]  # its secrets go too: the boundary refuses leftovers


def drop_vedfinance(doc):
    """Remove V-EdFinance from staging's products: its self-hosted PostgreSQL and Redis
    containers go, with the data they write on the VPS."""
    doc["config"]["platform:products"] = []
    del doc["config"]["platform:vedfinance"]
    for key in [k for k in doc["config"] if k.startswith("platform:vedfinance_")]:
        del doc["config"][key]


def datastore_image(doc):
    _service(doc, "vedfinance", "postgres")["image"] = "pgvector/pgvector:0.8.1-pg17"


def datastore_maintenance(doc):
    """The same bump, acknowledged (README "Patching a datastore's image in production")."""
    datastore_image(doc)
    _service(doc, "vedfinance", "postgres")["maintenance"] = {
        "image": "pgvector/pgvector:0.8.1-pg17", "replaces": "pgvector/pgvector:0.8.0-pg17",
        "backup": "restic snapshot 4f1a2b3c (vedfinance-staging)", "restore_test": "2026-12-05",
        "window_start": "2026-12-06T02:00:00Z", "window_minutes": 45}


@dataclass(frozen=True)
class Case:
    name: str
    product: str
    change: Callable[[dict], None]
    what: str


CATALOG = [
    Case("image-tag", "kro", image_tag, "bump the backend's image tag"),
    Case("env-var", "kro", env_var, "add a plain env var to a service that has secret ones"),
    Case("route", "kro", route, "add a hostname routed to an existing service"),
    Case("hostname", "giv", hostname, "move a static site to another hostname"),
    Case("size", "giv", size, "resize the App Platform backend and add a plain env var"),
    Case("alert-email", "kro", alert_email, "add an alert recipient"),
    Case("backup-retention", "vedfinance", backup_retention, "keep backups longer"),
    Case("backup-schedule", "vedfinance", backup_schedule, "move the daily backups to 01:15 UTC"),
    Case("new-service", "kro", new_service, "add a service with its route"),
    Case("removed-service", "kro", removed_service, "remove a service and its route"),
    Case("secret-rotation", "kro", secret_rotation, "rotate an external secret"),
    Case("droplet-size", "kro", droplet_size, "resize the droplet (in place)"),
    Case("bucket-rename", "giv", bucket_rename, "rename a bucket: a replacement of stateful data"),
    Case("drop-product", "kro", drop_product, "remove KRO from staging: deletes its database"),
    Case("drop-vedfinance", "vedfinance", drop_vedfinance,
         "remove V-EdFinance from staging: deletes its self-hosted datastore containers"),
    Case("datastore-image", "vedfinance", datastore_image,
         "bump a self-hosted PostgreSQL image: replaces a container that holds data"),
    Case("datastore-maintenance", "vedfinance", datastore_maintenance,
         "the same bump, acknowledged as maintenance in the stack config: listed, not blocking"),
]


def product_document(product: str) -> dict[str, Any]:
    """The staging stack file reduced to one product, with its secret set (as `secure:`)."""
    doc = yaml.safe_load((PROJECT_ROOT / "Pulumi.staging.yaml").read_text())
    config = doc["config"]
    for other in PRODUCTS:
        if other != product:
            config.pop(f"platform:{other}", None)
    config["platform:products"] = [product]
    if product == "kro":
        config["platform:kro_jwt_secret"] = {"secure": "v1:original-ciphertext"}
    return doc


def synth_document(doc: dict[str, Any], workdir: Path, label: str) -> dict[str, Any]:
    from synth.run import synth_stack

    path = workdir / f"{label}" / "Pulumi.staging.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return synth_stack("staging", stack_file=path)


CATALOG_TODAY = datetime.date(2026, 12, 2)
"""The day the catalog is rendered on (``validation.clock``): the boundary refuses a maintenance
window far from today, and the goldens must not change with the date."""


def render(case: Case, workdir: Path, bases: dict[str, dict]) -> tuple[str, int]:
    """The diff Markdown and exit code of ``case``, exactly as ``python -m synth diff`` gives,
    on ``CATALOG_TODAY``."""
    from validation import clock

    saved, clock.today = clock.today, lambda: CATALOG_TODAY
    try:
        return _render(case, workdir, bases)
    finally:
        clock.today = saved


def _render(case: Case, workdir: Path, bases: dict[str, dict]) -> tuple[str, int]:
    from synth.cost import PriceTable, delta_markdown
    from synth.diff import diff_states, markdown

    if case.product not in bases:
        bases[case.product] = synth_document(product_document(case.product), workdir, f"base-{case.product}")
    base = bases[case.product]
    doc = product_document(case.product)
    case.change(doc)
    head = synth_document(doc, workdir, case.name)
    result = diff_states(base, head)
    return markdown(result, base, head, delta_markdown(base, head, PriceTable.load())), result.exit_code


def golden_text(case: Case, text: str, exit_code: int) -> str:
    return f"<!-- case {case.name}: {case.what}; exit {exit_code} -->\n{text}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite tests/golden/*.md")
    args = parser.parse_args(argv)
    GOLDEN.mkdir(exist_ok=True)
    bases: dict[str, dict] = {}
    stale = 0
    with tempfile.TemporaryDirectory() as tmp:
        for case in CATALOG:
            text = golden_text(case, *render(case, Path(tmp), bases))
            path = GOLDEN / f"{case.name}.md"
            if args.write:
                path.write_text(text)
            elif not path.exists() or path.read_text() != text:
                stale += 1
                print(f"stale: {path}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
