"""Container policies (docker provider ``Container`` and ``RemoteImage`` inputs), anchored on the
CIS Docker Benchmark v1.6.0 section 5 (numbers below are that edition's) and KICS's Docker
Compose queries (query ids): privilege, replacement and maintenance, limits, healthcheck and
image pinning. Isolation from the host is in ``container_isolation``, runtime settings in
``container_runtime``."""

from __future__ import annotations

import re

from policy.rules.base import (ADVISORY, CRITICAL, HIGH, MANDATORY, MEDIUM, T_CONTAINER, T_IMAGE,
                               Case, integer, items, mapping, resource_policy)
from policy.rules.fixtures import container, doc, res
from synth.replacements import maintenance_of, writable_data_mounts

# The bound of components.containers.health_wait_timeout_s (the pack does not import the program).
WAIT_TIMEOUT_MAX_S = 600

C = [T_CONTAINER]


def kics(uuid: str, name: str) -> str:
    """The anchor text of a KICS query: its id and title."""
    return f"KICS {uuid} ({name})"


def _check_privileged(props, args):
    if props.get("privileged"):
        yield "the container is privileged; it would own the host"


resource_policy(
    "docker-container-disallow-privileged", "Containers never run privileged.",
    level=MANDATORY, severity=CRITICAL, category="containers",
    sources=["CIS Docker 5.4 (privileged containers)", kics("ae5b6871-7f45-42e0-bb4c-ab300c4d2026", "Privileged Containers Enabled")],
    fix="Drop privileged; add the one capability the service needs instead.",
    types=C, check=_check_privileged,
    cases=Case(doc(container()), [(doc(container(privileged=True)), ["the container is privileged; it would own the host"])]))


def _check_data_replaced_first(props, args):
    # The one classification of state (synth.replacements), which `synth diff` uses too: a
    # container with a writable data mount keeps its data on the host or in a named volume,
    # so a replacement keeps the data, but created before the old one is gone it would be a
    # second server writing the same files (PostgreSQL's data directory, MongoDB's, Prometheus'
    # TSDB), which corrupts them. Such containers are replaced, not protected: protection would
    # refuse every image update at `pulumi up`; `synth diff` is what stops a production
    # replacement in review.
    paths = writable_data_mounts({"type": T_CONTAINER, "inputs": props})
    if paths and not args.opts.delete_before_replace:
        yield (f"the container writes data to {', '.join(paths)} but is not deleted before its "
               "replacement; a replacement would run two servers on the same data")


_DATA = [{"hostPath": "/srv/pg", "containerPath": "/var/lib/postgresql/data"}]
resource_policy(
    "docker-container-enable-delete-before-replace-with-data",
    "Containers that write data to the host or a named volume are deleted before their replacement starts.",
    level=MANDATORY, severity=HIGH, category="data",
    sources=["Pulumi docs: deleteBeforeReplace resource option",
             "PostgreSQL docs: one server per data directory (postmaster.pid interlock)"],
    fix="Set delete_before_replace on the container (components.containers.replaced_delete_first).",
    types=C, check=_check_data_replaced_first,
    cases=Case(doc({**container(volumes=_DATA), "delete_before_replace": True}, container("web")),
               [(doc(container(volumes=_DATA)),
                 ["the container writes data to /var/lib/postgresql/data but is not deleted before "
                  "its replacement; a replacement would run two servers on the same data"]),
                (doc(container(mounts=[{"type": "volume", "source": "pgdata", "target": "/data"}])),
                 ["the container writes data to /data but is not deleted before its replacement; "
                  "a replacement would run two servers on the same data"])]))


def fixed_addresses(props) -> list[str]:
    """The fixed addresses (``networksAdvanced[].ipv4Address``/``ipv6Address``) a container
    asks for; Docker gives one address to one container at a time."""
    return [str(a) for n in items(props.get("networksAdvanced")) for key in ("ipv4Address", "ipv6Address")
            if (a := mapping(n).get(key))]


_PINNED = [{"name": "net", "aliases": ["api"], "ipv4Address": "172.31.251.12"}]


def _check_stateless_replaced_first(props, args):
    # The other half of the classification above: a container with neither writable data, nor
    # a published host port, nor a fixed address can run next to its replacement, so replacing
    # it delete-first only takes the service down for the whole pull-and-start of the new one,
    # on every deploy. create-before-delete is only as good as its gate: without `wait` the old
    # container is removed as soon as the new one runs, healthy or not.
    fixed = fixed_addresses(props)
    if fixed and not args.opts.delete_before_replace:
        # Docker refuses the new container the address the old one holds ("Address already in
        # use"), so a create-first replacement fails every deploy (found by
        # tests/test_converge_replacement_real.py on the staging capture).
        yield (f"the container has a fixed address ({', '.join(fixed)}) but is replaced create-before-delete; "
               "the new container cannot take the address while the old one holds it, so every deploy fails")
    if writable_data_mounts({"type": T_CONTAINER, "inputs": props}) or items(props.get("ports")) or fixed:
        return
    if args.opts.delete_before_replace:
        yield ("the container holds no data, publishes no host port and has no fixed address but is "
               "deleted before its replacement; every deploy would take the service down")
    if props.get("wait") is not True:
        yield ("the container is replaced create-before-delete without `wait`; the old one would be "
               "removed before the new one is healthy")
    else:
        timeout = integer(props.get("waitTimeout"))
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 < timeout <= WAIT_TIMEOUT_MAX_S:
            yield (f"the container's `waitTimeout` ({timeout}) is not between 1 and {WAIT_TIMEOUT_MAX_S} "
                   "seconds; a deploy waits for it without a bound")


resource_policy(
    "docker-container-enable-health-gated-replacement",
    "Stateless containers are replaced create-before-delete, gated on their healthcheck with a bounded "
    "wait; a container at a fixed address is replaced delete-first.",
    level=MANDATORY, severity=MEDIUM, category="containers",
    sources=["Pulumi docs: deleteBeforeReplace resource option (false overrides a provider's default)",
             "pulumi-docker Container: wait, waitTimeout",
             "Kamal docs: kamal-proxy switches traffic once the new container passes its healthcheck",
             "Docker docs: docker network connect --ip (one container per address: \"Address already in use\")"],
    fix="Leave delete_before_replace False (components.containers.replaced_delete_first) and keep "
        "wait / wait_timeout from components.containers.container_plan; a container with a fixed "
        "address is deleted first (replaced_delete_first(fixed_address=True)).",
    types=C, check=_check_stateless_replaced_first,
    cases=Case(doc(container(wait=True, waitTimeout=170),
                   {**container("pg", volumes=_DATA), "delete_before_replace": True},
                   {**container("api", wait=True, waitTimeout=170, networksAdvanced=_PINNED),
                    "delete_before_replace": True}),
               [(doc({**container(wait=True, waitTimeout=170), "delete_before_replace": True}),
                 ["the container holds no data, publishes no host port and has no fixed address but is "
                  "deleted before its replacement; every deploy would take the service down"]),
                (doc(container(wait=True, waitTimeout=170, networksAdvanced=_PINNED)),
                 ["the container has a fixed address (172.31.251.12) but is replaced create-before-delete; "
                  "the new container cannot take the address while the old one holds it, so every deploy fails"]),
                (doc(container()),
                 ["the container is replaced create-before-delete without `wait`; the old one would be "
                  "removed before the new one is healthy"]),
                (doc(container(wait=True, waitTimeout=3600)),
                 [f"the container's `waitTimeout` (3600) is not between 1 and {WAIT_TIMEOUT_MAX_S} "
                  "seconds; a deploy waits for it without a bound"])]))


MAINTENANCE_KEYS = ("image", "replaces", "backup", "restore_test", "window")
_WINDOW = re.compile(r"^(\d{4}-\d{2}-\d{2})T\d{2}:\d{2}:\d{2}Z/PT(\d+)M$")


def _check_maintenance(props, args):
    # The acknowledgement `synth diff` accepts for a datastore's image patch (a service's
    # `maintenance`, components.containers.Maintenance), checked again where the engine sees it:
    # complete, on a container that writes data and is deleted before its replacement, with the
    # restore test green no later than the window. The stack config checks the same before any
    # resource is registered; this catches a hand-made or stale state.
    plan = maintenance_of({"type": T_CONTAINER, "inputs": props})
    if not plan:
        return
    missing = [k for k in MAINTENANCE_KEYS if not plan.get(k)]
    if missing:
        yield f"the maintenance acknowledgement lacks {', '.join(missing)}; state all of {', '.join(MAINTENANCE_KEYS)}"
        return
    if not writable_data_mounts({"type": T_CONTAINER, "inputs": props}):
        yield "the container writes no data, so a maintenance acknowledgement does not apply; remove it"
    elif not args.opts.delete_before_replace:
        yield "the acknowledged replacement is not deleted first; set delete_before_replace"
    window = _WINDOW.match(str(plan["window"]))
    if not window or not 15 <= int(window.group(2)) <= 480:
        yield f"the maintenance window {plan['window']!r} is not START/PTnM in UTC, 15 to 480 minutes"
    elif not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(plan["restore_test"])) or str(plan["restore_test"]) > window.group(1):
        yield (f"the restore test ({plan['restore_test']}) is not a day on or before the window "
               f"({window.group(1)}); the restore of the backup goes green first")
    if plan["image"] == plan["replaces"]:
        yield "the maintenance acknowledgement replaces an image by itself; remove it"


def _maintained(**labels):
    keys = {"image": "postgres:17.3", "replaces": "postgres:17.2", "backup": "restic 4f1a2b3c",
            "restore_test": "2026-12-05", "window": "2026-12-06T02:00:00Z/PT60M", **labels}
    return {**container("pg", volumes=_DATA, labels=[{"label": "platform.maintenance." + k, "value": v}
                                                    for k, v in keys.items() if v is not None]),
            "delete_before_replace": True}


resource_policy(
    "docker-container-configure-complete-maintenance-acknowledgement",
    "A datastore image patch acknowledged for maintenance names its backup, a restore test green before the window, and the window.",
    level=MANDATORY, severity=HIGH, category="data",
    sources=["README: Patching a datastore's image in production",
             "PostgreSQL docs: versioning policy (minor releases keep the storage format)"],
    fix="Complete the service's maintenance in the stack config (components.containers.Maintenance).",
    types=C, check=_check_maintenance,
    cases=Case(doc(_maintained(), container("web")),
               [(doc(_maintained(backup=None)),
                 ["the maintenance acknowledgement lacks backup; state all of image, replaces, backup, "
                  "restore_test, window"]),
                (doc(_maintained(restore_test="2026-12-07")),
                 ["the restore test (2026-12-07) is not a day on or before the window (2026-12-06); "
                  "the restore of the backup goes green first"]),
                (doc({**_maintained(), "delete_before_replace": False}),
                 ["the acknowledged replacement is not deleted first; set delete_before_replace"]),
                (doc({**container("web", labels=_maintained()["inputs"]["labels"])}),
                 ["the container writes no data, so a maintenance acknowledgement does not apply; remove it"])]))


def _check_memory(props, args):
    if not props.get("memory"):
        yield "the container has no memory limit"


resource_policy(
    "docker-container-configure-memory-limit", "Containers have a memory limit.",
    level=ADVISORY, severity=MEDIUM, category="containers",
    sources=["CIS Docker 5.10", kics("bb9ac4f7-e13b-423d-a010-c74a1bfbe492", "Memory Not Limited")],
    fix="Set memory (MiB) from the service's budget.",
    types=C, check=_check_memory,
    cases=Case(doc(container()), [(doc(container(memory=None)), ["the container has no memory limit"])]))


def _check_cpu(props, args):
    if not props.get("cpus") and not props.get("cpuShares") and not props.get("cpuQuota"):
        yield "the container has no CPU limit"


resource_policy(
    "docker-container-configure-cpu-limit", "Containers have a CPU limit.",
    level=ADVISORY, severity=MEDIUM, category="containers",
    sources=["CIS Docker 5.11", "KICS cpus_not_limited (Cpus Not Limited)"],
    fix="Set cpus from the service's budget.",
    types=C, check=_check_cpu,
    cases=Case(doc(container()), [(doc(container(cpus=None)), ["the container has no CPU limit"])]))


def _check_healthcheck(props, args):
    tests = items(mapping(props.get("healthcheck")).get("tests"))
    if not tests or tests[0] == "NONE":
        yield "the container has no healthcheck"


resource_policy(
    "docker-container-enable-healthcheck", "Containers declare a healthcheck.",
    level=ADVISORY, severity=MEDIUM, category="containers",
    sources=["CIS Docker 4.6", kics("698ed579-b239-4f8f-a388-baa4bcb13ef8", "Healthcheck Not Set")],
    fix="Give the container a healthcheck command.",
    types=C, check=_check_healthcheck,
    cases=Case(doc(container()), [(doc(container(healthcheck={"tests": ["NONE"]})), ["the container has no healthcheck"])]))


def image_is_pinned(image: str) -> bool:
    if re.search(r"@sha256:[a-f0-9]{64}$", image):
        return True
    # A version tag holds a digit; latest, stable, edge or alpine name channels that move
    # (the config boundary's rule: validation/formats.py, ImageReference.pinned).
    last = image.rsplit("/", 1)[-1]
    return ":" in last and any(c.isdigit() for c in last.rsplit(":", 1)[1])


def _check_image_pinned(props, args):
    image = props.get("name") if args.resource_type == T_IMAGE else props.get("image")
    if isinstance(image, str) and not image.startswith("sha256:") and not image_is_pinned(image):
        yield f"image {image} is not pinned; use a version tag (one with a digit, not latest or stable) or an @sha256 digest"


resource_policy(
    "docker-image-disallow-unpinned-tag", "Images are pinned by a version tag or digest, never latest or untagged.",
    level=ADVISORY, severity=MEDIUM, category="containers",
    sources=["Hadolint DL3007", "KICS Image Version Using 'latest'", "CIS Docker 5.27"],
    fix="Pin the image to a version tag or an @sha256 digest.",
    types=[T_IMAGE, T_CONTAINER], check=_check_image_pinned,
    cases=Case(doc(res(T_IMAGE, "i", {"name": "nginx:1.27.3-alpine"})),
               [(doc(res(T_IMAGE, "i", {"name": "nginx:latest"}), res(T_IMAGE, "j", {"name": "redis"}),
                     res(T_IMAGE, "k", {"name": "nginx:STABLE"})),
                 ["image nginx:latest is not pinned; use a version tag (one with a digit, not latest or stable) or an @sha256 digest",
                  "image redis is not pinned; use a version tag (one with a digit, not latest or stable) or an @sha256 digest",
                  "image nginx:STABLE is not pinned; use a version tag (one with a digit, not latest or stable) or an @sha256 digest"])]))

