"""Pull-request previews: the plan diff, the tier diagram, the cost estimate and the workflows."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synth.cost import PriceTable, estimate, totals
from synth.flows import ADMINS, INTERNET, TIERS, Edge, flows, nodes
from synth.diff import EXIT_SAFE, EXIT_WARNING, diff_states, markdown
from synth.engine import PROJECT_ROOT
from synth.state import State
from tests.conftest import require_tool, synth_once
from tests.diff_catalog import CATALOG, GOLDEN, golden_text, product_document, render

URN = "urn:pulumi:prod::platform::{type}::{name}"


def res(type_, name, inputs, **extra):
    return {"urn": URN.format(type=type_, name=name), "type": type_, "name": name, "custom": True,
            "parent": None, "provider": None, "inputs": inputs, "secret_inputs": [],
            "dependencies": [], "protect": False, "retain_on_delete": False,
            "delete_before_replace": False, "ignore_changes": [], "import_id": None, **extra}


DROPLET = "digitalocean:index/droplet:Droplet"
CLUSTER = "digitalocean:index/databaseCluster:DatabaseCluster"


def base_state():
    return {"stack": "prod", "resources": [
        res(DROPLET, "web", {"size": "s-2vcpu-4gb", "userData": "#cloud-config\n", "region": "fra1",
                             "backups": True, "backupPolicy": {"plan": "weekly"}}, protect=True),
        res(CLUSTER, "db", {"engine": "pg", "size": "db-s-1vcpu-2gb", "nodeCount": 2, "region": "fra1"},
            protect=True),
        res("docker:index/container:Container", "api", {"memory": 512, "envs": "[secret]"},
            secret_inputs=["envs"], secret_digests={"envs": "aaaa"}),
    ]}


def _by_name(state, name):
    return next(r for r in state["resources"] if r["name"] == name)


# --- diff -------------------------------------------------------------------------------------

@pytest.mark.fast
def test_diff_of_identical_states_is_safe_and_empty():
    result = diff_states(base_state(), base_state())
    assert result.changes == [] and result.exit_code == EXIT_SAFE


@pytest.mark.fast
def test_diff_reports_added_removed_and_changed_with_old_and_new_values():
    head = base_state()
    head["resources"].append(res("digitalocean:index/vpc:Vpc", "net", {"ipRange": "10.0.0.0/20"}))
    head["resources"] = [r for r in head["resources"] if r["name"] != "api"]
    _by_name(head, "db")["inputs"]["size"] = "db-s-2vcpu-4gb"
    result = diff_states(base_state(), head)
    summary = {(c.kind, c.resource["name"], tuple(c.keys)) for c in result.changes}
    assert summary == {("added", "net", ()), ("removed", "api", ()), ("changed", "db", ("size",))}
    assert result.exit_code == EXIT_SAFE, "a resize replaces nothing and api was not protected"
    assert '`size`: `"db-s-1vcpu-2gb"` → `"db-s-2vcpu-4gb"`' in markdown(result, base_state(), head)


@pytest.mark.fast
def test_replacing_a_stateful_resource_warns_and_exits_3_unless_allowed_outside_prod():
    head = base_state()
    _by_name(head, "web")["inputs"]["userData"] = "#cloud-config\npackages: [htop]\n"
    result = diff_states(base_state(), head)
    assert result.exit_code == EXIT_WARNING
    assert result.warnings == ["replaces `web` (Droplet): userData changed, which forces a new resource"]
    text = markdown(result, base_state(), head)
    assert text.index("[!CAUTION]") < text.index("to add") and "Blocked" in text
    assert "**replaced**, forced by `userData`" in text
    assert "+packages: [htop]" in text and "<details>" in text
    # prod: no override
    assert diff_states(base_state(), head, allow_stateful_changes=True).exit_code == EXIT_WARNING
    staging_base, staging_head = dict(base_state(), stack="staging"), dict(head, stack="staging")
    assert diff_states(staging_base, staging_head).exit_code == EXIT_WARNING
    allowed = diff_states(staging_base, staging_head, allow_stateful_changes=True)
    assert allowed.exit_code == EXIT_SAFE and allowed.warnings
    assert "Allowed with `--allow-stateful-changes`" in markdown(allowed, staging_base, staging_head)


@pytest.mark.fast
def test_deleting_a_stateful_resource_warns_in_every_stack():
    for stack in ("prod", "staging"):
        base = dict(base_state(), stack=stack)
        for r in base["resources"]:
            r["protect"] = False
        head = dict(base, resources=[r for r in base["resources"] if r["name"] != "db"])
        result = diff_states(base, head)
        assert result.exit_code == EXIT_WARNING, stack
        assert result.warnings == ["deletes `db` (DatabaseCluster) and the data it holds"]


@pytest.mark.fast
def test_a_protected_vpc_user_or_address_is_never_said_to_hold_data():
    """A VPC, a database user and a reserved IP hold no data: the warning says what they serve."""
    from synth.replacements import DEPENDENCY_LOSS

    vpc = res("digitalocean:index/vpc:Vpc", "net", {"ipRange": "10.0.0.0/20", "region": "fra1"}, protect=True)
    user = res("digitalocean:index/databaseUser:DatabaseUser", "db-user-app", {"name": "app"}, protect=True)
    address = res("digitalocean:index/reservedIp:ReservedIp", "web-ip", {"region": "fra1"}, protect=True)
    base = dict(base_state(), stack="staging", resources=base_state()["resources"] + [vpc, user, address])
    head = dict(base, resources=[r for r in base["resources"] if r["name"] not in ("net", "db-user-app", "web-ip")])
    result = diff_states(base, head)
    assert result.exit_code == EXIT_WARNING
    assert sorted(result.warnings) == [
        "deletes protected `db-user-app` (DatabaseUser) and the login the services use: a user created "
        "again gets a new generated password, so every service holding the old one fails to connect "
        "until it is redeployed",
        "deletes protected `net` (Vpc) and the private network its droplets and database clusters are "
        "attached to (DigitalOcean refuses to delete a VPC that still has members, and moving a member "
        "to another VPC replaces it: `vpcUuid`, `privateNetworkUuid`)",
        "deletes protected `web-ip` (ReservedIp) and the public address DNS points at: a new reserved IP "
        "is a different address"]
    moved = json.loads(json.dumps(base))
    _by_name(moved, "net")["inputs"]["ipRange"] = "10.0.16.0/20"
    replaced = diff_states(base, moved)
    assert replaced.warnings == ["replaces `net` (Vpc): ipRange changed, which forces a new resource; "
                                 "it takes with it " + DEPENDENCY_LOSS["digitalocean:index/vpc:Vpc"]]
    assert not any("data it holds" in w for w in result.warnings + replaced.warnings)


@pytest.mark.fast
def test_production_comes_from_the_stack_output_not_the_name():
    head = base_state()
    _by_name(head, "web")["inputs"]["region"] = "ams3"
    base, head = dict(base_state(), stack="live"), dict(head, stack="live")
    assert diff_states(base, head, allow_stateful_changes=True).exit_code == EXIT_SAFE
    head["outputs"] = {"production": True}
    assert diff_states(base, head, allow_stateful_changes=True).exit_code == EXIT_WARNING


@pytest.mark.fast
def test_base_and_head_of_different_stacks_or_projects_are_refused():
    from synth.diff import DiffInputError

    with pytest.raises(DiffInputError, match="different stacks"):
        diff_states(dict(base_state(), stack="staging"), base_state())
    with pytest.raises(DiffInputError, match="different projects"):
        diff_states(dict(base_state(), project="a"), dict(base_state(), project="b"))


@pytest.mark.fast
def test_a_secret_leaf_masks_only_itself():
    """One secret env var in a spec: the other changes show plain, the secret as changed."""
    def app(size, flag, digest):
        return res("digitalocean:index/app:App", "app", {"spec": {"services": [{
            "name": "api", "instanceSizeSlug": size,
            "envs": [{"key": "FLAG", "value": flag}, {"key": "TOKEN", "value": "[secret]", "type": "SECRET"}]}]}},
            secret_inputs=["spec"], secret_digests={"spec": digest},
            secret_leaves={"spec.services[0].envs[1].value": {"digest": digest}})
    base = {"stack": "prod", "resources": [app("s", "off", "d1")]}
    head = {"stack": "prod", "resources": [app("m", "on", "d2")]}
    change, = diff_states(base, head).changes
    assert [(c.path, c.kind) for c in change.inputs] == [
        ("spec.services[api].envs[FLAG].value", "value"),
        ("spec.services[api].envs[TOKEN].value", "secret"),
        ("spec.services[api].instanceSizeSlug", "value")]
    text = markdown(diff_states(base, head), base, head)
    assert '`"off"` → `"on"`' in text and "(secret changed)" in text and "d1" not in text and "d2" not in text


@pytest.mark.fast
def test_a_secret_change_shows_as_changed_but_stays_masked():
    head = base_state()
    _by_name(head, "api")["secret_digests"] = {"envs": "bbbb"}
    result = diff_states(base_state(), head)
    assert [(c.resource["name"], c.keys) for c in result.changes] == [("api", ["envs"])]
    text = markdown(result, base_state(), head)
    assert "(secret changed)" in text and "aaaa" not in text and "bbbb" not in text


@pytest.mark.fast
def test_the_engine_records_secrecy_per_leaf(run_component):
    import pulumi
    import pulumi_docker as docker

    def build():
        docker.Container("c", image="busybox:1.36", envs=[
            "A=1", pulumi.Output.secret(pulumi.Output.concat("TOKEN=", "hunter2"))])

    container = run_component(build).named("c")
    assert container["inputs"]["envs"] == ["A=1", "[secret]"]
    assert set(container["secret_leaves"]) == {"envs[1]"}
    assert container["secret_leaves"]["envs[1]"]["env"] == "TOKEN"
    assert "hunter2" not in json.dumps(container)


GOLDEN_CASES = [c.name for c in CATALOG]


@pytest.fixture(scope="module")
def catalog_run(tmp_path_factory):
    return tmp_path_factory.mktemp("catalog"), {}


@pytest.mark.fast
@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_routine_changes_render_as_their_golden_file(name, catalog_run):
    """tests/golden/<case>.md is the reviewed rendering; regenerate with
    `python -m tests.diff_catalog --write` after an intended change."""
    case = next(c for c in CATALOG if c.name == name)
    workdir, bases = catalog_run
    text = golden_text(case, *render(case, workdir, bases))
    assert text == (GOLDEN / f"{name}.md").read_text()


@pytest.mark.fast
def test_golden_catalog_covers_the_routine_changes_and_their_verdicts():
    assert len(CATALOG) >= 10
    verdicts = {c.name: (GOLDEN / f"{c.name}.md").read_text().splitlines()[0] for c in CATALOG}
    stateful = ("bucket-rename", "drop-product", "drop-vedfinance", "datastore-image")
    assert all(v.endswith("exit 0 -->") for n, v in verdicts.items() if n not in stateful)
    assert all(verdicts[n].endswith("exit 3 -->") for n in stateful)
    dropped = (GOLDEN / "drop-vedfinance.md").read_text()
    assert ("deletes `vedfinance-staging-postgres` (Container) and the data it writes to "
            "`/var/lib/postgresql/data`") in dropped
    assert "replaces `vedfinance-staging-postgres` (Container): image changed" in (
        GOLDEN / "datastore-image.md").read_text()
    assert "JWT_SECRET=(secret changed)" in (GOLDEN / "secret-rotation.md").read_text()
    assert "**replaced**, forced by `name`" in (GOLDEN / "bucket-rename.md").read_text()
    assert "+ LOG_LEVEL=debug" in (GOLDEN / "env-var.md").read_text()
    acknowledged = (GOLDEN / "datastore-maintenance.md").read_text()
    assert "Planned maintenance, acknowledged in the stack config" in acknowledged
    assert "[!CAUTION]" not in acknowledged


@pytest.mark.fast
def test_diff_cli_exit_codes_and_secret_masking_on_real_synths(tmp_path, stack_document, write_stack):
    from synth.run import synth_stack

    base = tmp_path / "base.json"
    base.write_text(json.dumps(synth_once("prod")))
    document = stack_document("prod")
    document["config"]["platform:kro"]["services"][0]["secret_env"]["JWT_SECRET"] = "kro_jwt_secret_v2"
    document["config"]["platform:kro"]["droplet"]["image"] = "ubuntu-22-04-x64"
    head = tmp_path / "head.json"
    head.write_text(json.dumps(synth_stack("prod", stack_file=write_stack(document, "prod"))))
    cli = [sys.executable, "-m", "synth", "diff", str(base), str(head)]
    result = subprocess.run(cli, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_WARNING, result.stderr
    assert "replaces `kro-prod-droplet` (Droplet): image changed" in result.stdout
    assert "JWT_SECRET=(secret changed)" in result.stdout
    assert "synth-placeholder" not in result.stdout
    assert "**Monthly cost**" in result.stdout
    allowed = subprocess.run(cli + ["--allow-stateful-changes"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=120)
    assert allowed.returncode == EXIT_WARNING, "prod has no override"


def _product_synth(tmp_path, label, preview, change=None, product="kro", review=False):
    """The staging state of ``product`` alone, ``change`` applied to its stack file."""
    from synth.run import synth_stack

    doc = product_document(product)
    if change:
        change(doc)
    path = tmp_path / label / "Pulumi.staging.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return synth_stack("staging", stack_file=path, preview=preview, review=review)


@pytest.mark.fast
def test_a_container_that_writes_data_is_stateful_by_its_mounts_not_its_name():
    from synth.replacements import stateful_reason

    container = "docker:index/container:Container"
    writes = res(container, "cache", {"image": "example/anything:1", "volumes": [
        {"hostPath": "/srv/x/data", "containerPath": "/data"},
        {"hostPath": "/srv/x/conf", "containerPath": "/etc/x", "readOnly": True}]})
    named = res(container, "postgres", {"image": "postgres:17", "volumes": [
        {"hostPath": "/srv/x/conf", "containerPath": "/etc/x", "readOnly": True}],
        "mounts": [{"type": "tmpfs", "target": "/var/lib/postgresql/data"}]})
    volume = res(container, "queue", {"mounts": [{"type": "volume", "source": "q", "target": "/q"}]})
    assert stateful_reason(writes) == "the data it writes to `/data`"
    assert stateful_reason(named) is None
    assert stateful_reason(volume) == "the data it writes to `/q`"

    for stack, production in (("staging", False), ("prod", True)):
        base = {"stack": stack, "resources": [writes, named]}
        gone = diff_states(base, {"stack": stack, "resources": [named]})
        assert gone.warnings == ["deletes `cache` (Container) and the data it writes to `/data`"]
        assert gone.exit_code == EXIT_WARNING
        allowed = diff_states(base, {"stack": stack, "resources": [named]}, allow_stateful_changes=True)
        assert allowed.exit_code == (EXIT_WARNING if production else EXIT_SAFE)
        bumped = copy.deepcopy(writes)
        bumped["inputs"]["image"] = "example/anything:2"
        replaced = diff_states(base, {"stack": stack, "resources": [bumped, named]})
        assert replaced.warnings == ["replaces `cache` (Container): image changed, which forces a new resource"]
        assert diff_states(base, {"stack": stack, "resources": [writes]}).warnings == []


@pytest.mark.fast
def test_the_policy_pack_guards_the_containers_the_diff_calls_stateful():
    """One classification of state for both: the containers the diff warns about are the ones
    the policy pack wants deleted before their replacement, read through the analyzer's
    proxies as well as from plain JSON, in every stack."""
    from policy.offline import evaluate
    from synth.replacements import stateful_reason

    container = "docker:index/container:Container"
    rule = "docker-container-enable-delete-before-replace-with-data"
    pg = res(container, "pg", {"image": "postgres:17", "volumes": [
        {"hostPath": "/srv/pg/data", "containerPath": "/var/lib/postgresql/data"},
        {"hostPath": "/srv/pg/conf", "containerPath": "/etc/postgresql", "readOnly": True}]})
    web = res(container, "web", {"image": "nginx:1.27", "mounts": [
        {"type": "bind", "source": "/srv/www", "target": "/usr/share/nginx/html", "readOnly": True},
        {"type": "tmpfs", "target": "/var/cache/nginx"}]})
    assert stateful_reason(pg) == "the data it writes to `/var/lib/postgresql/data`"
    assert stateful_reason(web) is None
    for stack, proxies in (("staging", False), ("staging", True), ("prod", True)):
        state = {"project": "platform", "stack": stack, "resources": [pg, web]}
        found = [(v["urn"], v["message"]) for v in evaluate(state, {}, proxies=proxies) if v["policy"] == rule]
        assert found == [(pg["urn"], "the container writes data to /var/lib/postgresql/data but is not "
                                     "deleted before its replacement; a replacement would run two "
                                     "servers on the same data")]
        pg["delete_before_replace"] = True
        assert not [v for v in evaluate(state, {}, proxies=proxies) if v["policy"] == rule]
        pg["delete_before_replace"] = False


@pytest.mark.fast
def test_values_a_preview_does_not_know_are_not_changes(tmp_path):
    """A preview state against a normal one: "[unknown]" (the container image, a droplet's id in
    a firewall, secret scripts built from new resources) shows as (known after apply) and is
    neither a change nor a replacement; a real edit beside it still is one."""
    from tests.diff_catalog import env_var

    base = _product_synth(tmp_path, "base", False)
    preview = _product_synth(tmp_path, "preview", True)
    for old, new in ((base, preview), (preview, base)):
        same = diff_states(old, new)
        assert same.changes == [] and same.warnings == [] and same.exit_code == EXIT_SAFE
        assert same.known_after_apply > 10
        text = markdown(same, old, new)
        assert "0 to add, 0 to change, 0 to replace, 0 to remove." in text
        assert f"{same.known_after_apply} resources differ only in values known after apply" in text

    edited = _product_synth(tmp_path, "edited", True, env_var)
    expected = diff_states(base, _product_synth(tmp_path, "edited-up", False, env_var))
    result = diff_states(base, edited)
    assert [(c.resource["urn"], c.kind, c.forced_by) for c in result.changes] == [
        (c.resource["urn"], c.kind, c.forced_by) for c in expected.changes]
    assert result.changes, "the env var is still a change"
    text = markdown(result, base, edited)
    assert "+ LOG_LEVEL=debug" in text and "[unknown]" not in text
    assert "`image`: `\"registry.digitalocean.com/kro/kro-backend:2026.11.2\"` → (known after apply)" in text


@pytest.mark.fast
@pytest.mark.parametrize("review", [False, True], ids=["plain", "review"])
def test_a_preview_sees_a_datastore_replaced_through_its_unknown_image(tmp_path, monkeypatch, review):
    """Two ``--preview`` states of a self-hosted PostgreSQL image bump: the container's ``image``
    is the replaced RemoteImage's ``imageId``, unknown in both, and the engine replaces the
    container. The diff listed only the RemoteImage and exited 0, even for production. With
    ``--review`` digests the change is read from them; without, from the replaced dependency."""
    from tests.diff_catalog import CATALOG_TODAY, datastore_image, datastore_maintenance
    from validation import clock

    monkeypatch.setattr(clock, "today", lambda: CATALOG_TODAY)

    def synth(label, change=None):
        return _product_synth(tmp_path, label, True, change, product="vedfinance", review=review)

    base, bumped = synth("base"), synth("bumped", datastore_image)
    container = "vedfinance-staging-postgres"
    result = diff_states(base, bumped)
    replaced = {c.resource["name"]: c.forced_by for c in result.changes
                if c.kind == "replaced" and "command:" not in c.resource["type"]}
    assert replaced == {container: ["image"], f"{container}-image": ["name"]}, replaced
    assert result.exit_code == EXIT_WARNING
    assert [w for w in result.warnings if f"`{container}`" in w and "image (known after apply" in w], result.warnings
    assert not [line for line in result.may_change if f"`{container}`" in line], "shown once, as the replacement"
    text = markdown(result, base, bumped)
    assert f"`{container}` (Container): **replaced**, forced by `image` (known after apply" in text

    production = copy.deepcopy(bumped)
    production["outputs"]["production"] = True
    assert diff_states(base, production, allow_stateful_changes=True).blocked

    acknowledged = diff_states(base, synth("acknowledged", datastore_maintenance))
    assert acknowledged.exit_code == EXIT_SAFE and acknowledged.warnings == []
    assert [m for m in acknowledged.maintenance
            if "`pgvector/pgvector:0.8.0-pg17` → `pgvector/pgvector:0.8.1-pg17`" in m], acknowledged.maintenance

    unchanged = diff_states(base, synth("again"))
    assert unchanged.changes == [] and unchanged.exit_code == EXIT_SAFE

    # A preview base against a normal head: the old image is the unknown one.
    normal = _product_synth(tmp_path, "normal", False, datastore_image, product="vedfinance")
    mixed = diff_states(base, normal)
    assert mixed.exit_code == EXIT_WARNING and [w for w in mixed.warnings if f"`{container}`" in w]

    # A new database adds file deliveries (Commands) every container of the host depends on,
    # for ordering only: no container but the one it configures is replaced.
    def new_database(doc):
        doc["config"]["platform:vedfinance"]["databases"].append({"name": "vedfinance_reports", "service": "web-dev"})

    added = diff_states(base, synth("new-database", new_database))
    assert added.exit_code == EXIT_SAFE, added.warnings
    assert container not in {c.resource["name"] for c in added.changes if c.kind == "replaced"}


@pytest.mark.fast
def test_an_acknowledgement_without_its_backup_restore_test_and_window_covers_nothing():
    """The stack config refuses an incomplete ``maintenance:``; a hand-edited state carrying
    only the image labels must not pass the diff either."""
    image = {"name": "pgvector/pgvector:0.8.0-pg17"}
    volume = {"mounts": [{"target": "/var/lib/postgresql/data", "type": "volume", "source": "pg"}]}
    base = {"stack": "staging", "resources": [
        res("docker:index/container:Container", "pg", {"image": image["name"], **volume})]}
    head = copy.deepcopy(base)
    head["resources"][0]["inputs"]["image"] = "pgvector/pgvector:0.8.1-pg17"
    head["resources"][0]["inputs"]["labels"] = [
        {"label": "platform.maintenance.image", "value": "pgvector/pgvector:0.8.1-pg17"},
        {"label": "platform.maintenance.replaces", "value": "pgvector/pgvector:0.8.0-pg17"}]
    result = diff_states(base, head)
    assert result.exit_code == EXIT_WARNING and result.maintenance == []
    assert "does not name its backup, restore_test, window" in result.warnings[0]


@pytest.mark.fast
def test_an_unknown_list_item_stands_in_for_the_item_it_replaces():
    from synth.input_diff import input_changes

    base = res("docker:index/container:Container", "api", {"envs": ["A=1", "B=2"], "memory": 512})
    head = res("docker:index/container:Container", "api", {"envs": ["A=1", "[unknown]"], "memory": 512})
    [change] = input_changes(base, head)
    assert change.kind == "unknown" and change.lines == ["~ B=2 → (known after apply)"]
    head["inputs"]["envs"].append("C=3")
    [change] = input_changes(base, head)
    assert change.kind == "items" and change.lines == ["~ B=2 → (known after apply)", "+ C=3"]
    head["inputs"] = {"envs": "[unknown]", "memory": 1024}
    changes = {c.path: c.kind for c in input_changes(base, head)}
    assert changes == {"envs": "unknown", "memory": "value"}


@pytest.mark.fast
@pytest.mark.parametrize("content, message", [
    ("{not json", "is not JSON"),
    ('{"stack": "prod"}', "no resources list"),
    ('{"stack": "prod", "resources": [{"type": "x", "name": "y"}]}', "resources[0] has no urn"),
    ('{"stack": "staging", "resources": []}', "different stacks"),
])
def test_diff_cli_bad_input_is_one_line_and_exit_2(tmp_path, content, message):
    good = tmp_path / "good.json"
    good.write_text('{"stack": "prod", "resources": []}')
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = subprocess.run([sys.executable, "-m", "synth", "diff", str(good), str(bad)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


# --- diagram ----------------------------------------------------------------------------------

@pytest.mark.fast
def test_diagram_has_every_tier_and_only_allowed_flows():
    state = State(synth_once("prod"))
    tiers = nodes(state)
    assert set(tiers.values()) == set(TIERS)
    for edge in flows(state):
        if edge.source == INTERNET and edge.label == "51820":
            # A management endpoint's WireGuard port (UDP): on each product's entry host only.
            assert edge.target in ("kro-prod-droplet", "giv-prod-ops-droplet", "pencom-prod-edge"), edge
            continue
        if edge.source == INTERNET:
            assert tiers[edge.target] in ("edge", "app") and edge.label in ("80", "443"), edge
            assert tiers[edge.target] == "edge" or edge.target.endswith("-app-app"), edge
        if tiers.get(edge.target) == "data" and edge.label == "db":
            assert tiers[edge.source] in ("app", "mgmt") or "tier-app" in str(
                state.named(edge.source)["inputs"].get("tags")), edge
        if edge.source == ADMINS:
            assert edge.label == "22"


def _fixture():
    droplet = res(DROPLET, "web", {"tags": ["tier-edge"]})
    firewall = res("digitalocean:index/firewall:Firewall", "web-fw", {
        "name": "web-edge",
        "inboundRules": [{"protocol": "tcp", "portRange": "443", "sourceAddresses": ["0.0.0.0/0"]}]},
        dependencies=[droplet["urn"]])
    return {"stack": "prod", "resources": [droplet, firewall]}


@pytest.mark.fast
def test_adding_a_rule_adds_exactly_that_edge():
    before = flows(State(_fixture()))
    assert before == {Edge(INTERNET, "web", "443")}
    changed = _fixture()
    changed["resources"][1]["inputs"]["inboundRules"].append(
        {"protocol": "tcp", "portRange": "22", "sourceAddresses": ["198.51.100.10/32"]})
    assert flows(State(changed)) - before == {Edge(ADMINS, "web", "22")}
    assert before <= flows(State(changed))


@pytest.mark.realtool
def test_svg_is_rendered_with_graphviz_one_file_per_product(tmp_path):
    require_tool("dot", "Debian package graphviz")
    from synth.diagram import write_svg

    state = _fixture()
    product = res("platform:products:Shop", "shop", {}, custom=False)
    host = res("platform:components:DropletStack", "web-host", {}, custom=False, parent=product["urn"])
    state["resources"][0]["parent"] = host["urn"]
    state["resources"] += [product, host]
    written = write_svg(State(state), tmp_path / "d.svg")
    assert written == [tmp_path / "d-shop.svg"]
    svg = written[0].read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "web&#45;host" in svg


@pytest.fixture(scope="module")
def prod_state():
    return State(synth_once("prod"))


@pytest.mark.fast
def test_one_diagram_per_product_hosts_hold_their_containers(prod_state):
    from synth.diagram_graph import Link, product_graph, products

    assert products(prod_state) == ["giv", "kro", "pencom"]
    graph = product_graph(prod_state, "pencom")
    assert set(graph.groups) == {"pencom-prod-edge", "pencom-prod-app", "pencom-prod-data", "pencom-prod-storage"}
    assert graph.nodes["pencom-prod-data-postgres"][1] == "pencom-prod-data"
    assert graph.nodes["pencom-prod-edge-nginx"][1] == "pencom-prod-edge"
    assert all(l.source != l.target for l in graph.links), "no self-loops"
    assert all(l.source in graph.nodes and l.target in graph.nodes for l in graph.links), "no loose ends"
    assert Link("pencom-prod-edge::host", "pencom-prod-data-postgres", "5432",
                "external-gateway-reads-compliance") in graph.links
    assert Link("internet", "pencom-prod-edge-nginx", "443") in graph.links
    assert not [l for l in graph.links if l.source == "internet" and graph.nodes[l.target][1] != "pencom-prod-edge"]
    kro = product_graph(prod_state, "kro")
    assert Link("kro-prod-nginx", "kro-prod-backend", "3000") in kro.links
    assert not {n for n in kro.nodes if n.startswith("pencom")}, "a product's diagram holds only it"


@pytest.mark.realtool
def test_the_diagrams_render_to_png_and_stay_readable(prod_state, tmp_path):
    """Rendered with the real dot; reviewed by eye when the layout code changes."""
    require_tool("dot", "Debian package graphviz")
    import struct

    from synth.diagram import dot, render
    from synth.diagram_graph import drawn_edges, product_graph, products

    for product in products(prod_state):
        png = render(prod_state, product, "png")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])
        assert width <= 4000 and height <= 4000, (product, width, height)
        (tmp_path / f"{product}.png").write_bytes(png)
        source = dot(prod_state, product)
        assert source.count("subgraph") == len(product_graph(prod_state, product).groups)
        for edge in drawn_edges(product_graph(prod_state, product)):
            assert edge.label, edge
    assert "waiver: external-gateway-reads-compliance" in dot(prod_state, "pencom")
    assert 'style=dashed' in dot(prod_state, "pencom")


@pytest.mark.fast
def test_missing_graphviz_is_one_line_and_exit_2(tmp_path, write_stack):
    import os

    document = product_document("kro")
    stack_file = write_stack(document, "staging")
    env = dict(os.environ, PATH=str(tmp_path))  # no dot on this PATH
    result = subprocess.run([sys.executable, "-m", "synth", "staging", "--stack-file", str(stack_file),
                             "--diagram-svg", str(tmp_path / "d.svg")], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2, result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert errors == [errors[0]] and "Graphviz `dot` is not installed" in errors[0]
    assert "Traceback" not in result.stderr


# --- cost -------------------------------------------------------------------------------------

@pytest.mark.fast
def test_cost_matches_hand_computed_totals():
    prices = PriceTable({"currency": "USD", "rows": [
        {"kind": "droplet", "sku": "s-2vcpu-4gb", "monthly": 24},
        {"kind": "droplet-backups", "sku": "weekly", "monthly_fraction": 0.2},
        {"kind": "database-node", "sku": "db-s-1vcpu-2gb", "monthly": 30},
        {"kind": "database-standby-node", "sku": "db-s-1vcpu-2gb", "monthly": 25},
        {"kind": "app-instance", "sku": "apps-s-1vcpu-1gb", "monthly": 12},
        {"kind": "app-static-site", "sku": "beyond-free", "monthly": 3, "free_per_app": 3},
        {"kind": "r2-storage", "sku": "gb-month", "monthly": 0.015, "assumed_gb_per_bucket": 20},
    ]})
    product = res("platform:products:Shop", "shop", {}, custom=False)
    state = {"resources": [product] + [dict(r, parent=product["urn"]) for r in base_state()["resources"]] + [
        res("digitalocean:index/app:App", "app", {"spec": {
            "services": [{"name": "api", "instanceSizeSlug": "apps-s-1vcpu-1gb",
                          "autoscaling": {"minInstanceCount": 2, "maxInstanceCount": 4}}],
            "staticSites": [{"name": f"s{i}"} for i in range(5)]}}),
        res("cloudflare:index/r2Bucket:R2Bucket", "backups", {}),
    ]}
    lines, unpriced = estimate(state, prices)
    # droplet 24 + weekly backups 4.80 + primary 30 + standby 25 = 83.80 in "shop";
    # app 2 x 12 + (5 - 3) x 3 = 30 and R2 20 GB x 0.015 = 0.30 outside any product.
    assert totals(lines) == {"shop": 83.8, "(stack)": 30.3}
    assert unpriced == []
    standby, = [l for l in lines if l.item == "pg standby node"]
    assert (standby.size, standby.unit, standby.count, standby.monthly) == ("db-s-1vcpu-2gb", 25, 1, 25)


@pytest.mark.fast
def test_unknown_sizes_are_listed_not_priced_at_zero():
    prices = PriceTable({"rows": []})
    lines, unpriced = estimate(base_state(), prices)
    assert lines == [] and unpriced == ["web: no droplet price for s-2vcpu-4gb",
                                        "db: no database-node price for db-s-1vcpu-2gb",
                                        "db: no database-standby-node price for db-s-1vcpu-2gb"]


@pytest.mark.fast
def test_every_price_row_names_its_source_and_date():
    document = json.loads((PROJECT_ROOT / "pricing" / "prices.json").read_text())
    for row in document["rows"]:
        assert row["source"].startswith("https://") and len(row["as_of"]) == 10, row


@pytest.mark.fast
def test_on_prem_hosts_are_listed_as_owned_and_never_priced():
    host = res("platform:components:OnPremVps", "vps", {"tier": "edge", "address": "10.0.0.1"}, custom=False)
    lines, unpriced = estimate({"resources": [host]}, PriceTable({"rows": []}))
    assert [(l.resource, l.unit, l.monthly) for l in lines] == [("vps", None, 0.0)] and unpriced == []
    from synth.cost import cost_markdown
    text = "\n".join(cost_markdown({"resources": [host]}, PriceTable({"rows": []})))
    assert "| `vps` | on-prem host (owned) | `edge tier` | owned | 1 | owned | not priced |" in text


@pytest.mark.fast
def test_standby_rows_exist_for_every_size_that_allows_standby_nodes():
    table = PriceTable.load()
    for (kind, sku), row in table.rows.items():
        if kind == "database-node" and sku != "db-s-1vcpu-1gb":
            assert table.get("database-standby-node", sku), sku
    assert table.get("database-standby-node", "db-s-1vcpu-1gb") is None, "1 GB plans take no standby"


@pytest.mark.fast
def test_standby_rows_record_the_check_against_the_providers_docs():
    """Standby nodes: the rule (plans of 2 GB or more) is DigitalOcean's documentation's; the
    amount is not confirmed by it, and each row and the cost comment say so."""
    from synth.cost import cost_markdown

    document = json.loads((PROJECT_ROOT / "pricing" / "prices.json").read_text())
    standby = [r for r in document["rows"] if r["kind"] == "database-standby-node"]
    assert standby
    for row in standby:
        checked = row["checked"]
        assert len(checked["date"]) == 10 and checked["price_confirmed"] in (True, False)
        assert "https://docs.digitalocean.com/glossary/standby/" in checked["sources"]
        assert "2 GB" in checked["finding"]
    cluster = res(CLUSTER, "db", {"engine": "pg", "size": "db-s-1vcpu-2gb", "nodeCount": 2})
    text = "\n".join(cost_markdown({"resources": [cluster]}, PriceTable.load()))
    primary, = [l for l in text.splitlines() if "pg primary node" in l]
    second, = [l for l in text.splitlines() if "pg standby node" in l]
    assert "not confirmed" not in primary
    assert ("not confirmed" in second) is (not standby[0]["checked"]["price_confirmed"])


@pytest.mark.fast
def test_the_diff_cost_delta_says_what_the_docs_say_about_standby_prices():
    """The pull-request comment's cost table carries the standby caveat, not only the report."""
    from synth.cost import delta_markdown

    head = base_state()
    _by_name(head, "db")["inputs"]["nodeCount"] = 3
    text = "\n".join(delta_markdown(base_state(), head, PriceTable.load()))
    assert ("- pg standby node (`db-s-1vcpu-2gb`): priced at the plan's per-node list price; "
            "DigitalOcean's documentation says standby nodes \"can affect the monthly cost\" but gives "
            "no amount (checked 2026-11-30: https://docs.digitalocean.com/glossary/standby/)") in text
    assert "| **total** | **88.80** | **118.80** | **+30.00** |" in text
    single = {"resources": [res(CLUSTER, "db", {"engine": "pg", "size": "db-s-1vcpu-2gb", "nodeCount": 1})]}
    assert "standby" not in "\n".join(delta_markdown(single, single, PriceTable.load()))


@pytest.mark.fast
def test_committed_stacks_are_fully_priced():
    for stack in ("prod", "staging"):
        assert estimate(synth_once(stack), PriceTable.load())[1] == []


# --- workflows --------------------------------------------------------------------------------

WORKFLOWS = sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.yml"))


@pytest.mark.realtool
def test_workflows_pass_the_github_workflow_schema(tmp_path):
    tool = require_tool("check-jsonschema", "pip install check-jsonschema")
    result = subprocess.run([tool, "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    stepz: []\n")
    assert subprocess.run([tool, "--builtin-schema", "vendor.github-workflows", str(broken)],
                          capture_output=True).returncode != 0


def _load(name):
    return yaml.safe_load((PROJECT_ROOT / ".github" / "workflows" / name).read_text())


@pytest.mark.fast
def test_workflows_use_least_privilege():
    for path in WORKFLOWS:
        document = yaml.safe_load(path.read_text())
        assert document["permissions"] == {"contents": "read"}, path.name
        for job in document["jobs"].values():
            granted = job.get("permissions", {})
            assert granted != "write-all" and all(v in ("read", "write", "none") for v in granted.values())
            assert set(k for k, v in granted.items() if v == "write") <= {"pull-requests"}


@pytest.mark.fast
def test_deploy_runs_staging_then_prod_behind_approval_without_overlap():
    deploy = _load("deploy.yml")
    assert deploy[True]["push"]["branches"] == ["main"]  # PyYAML reads `on:` as True
    job = deploy["jobs"]["up"]
    assert [i["stack"] for i in job["strategy"]["matrix"]["include"]] == ["staging", "prod"]
    assert job["strategy"]["max-parallel"] == 1
    assert {i["stack"]: i["environment"] for i in job["strategy"]["matrix"]["include"]}["prod"] == "production"
    assert job["concurrency"] == {"group": "pulumi-up-${{ matrix.stack }}", "cancel-in-progress": False}


@pytest.mark.fast
def test_preview_runs_on_pull_requests_with_offline_and_real_jobs():
    preview = _load("preview.yml")
    assert "pull_request" in preview[True]
    assert set(preview["jobs"]) == {"offline-plan", "pulumi-preview"}
    real = preview["jobs"]["pulumi-preview"]
    step = next(s for s in real["steps"] if str(s.get("uses", "")).startswith("pulumi/actions"))
    assert step["with"]["command"] == "preview" and step["with"]["comment-on-pr"] is True
    assert step["with"]["policyPacks"] == "policy"
    assert "vars.PULUMI_BACKEND_URL" in real["if"]
    offline = "\n".join(s.get("run", "") for s in preview["jobs"]["offline-plan"]["steps"])
    assert "synth diff" in offline and "--policy" in offline


@pytest.mark.fast
def test_diagram_draws_on_prem_hosts_from_their_ufw_rules_with_the_waiver():
    state = State(synth_once("prod"))
    tiers = nodes(state)
    assert {tiers[f"pencom-prod-{n}"] for n in ("edge", "app", "data", "storage")} == {"edge", "app", "data"}
    edges = flows(state)
    assert Edge("pencom-prod-edge", "pencom-prod-data", "5432 waiver external-gateway-reads-compliance") in edges
    assert Edge("pencom-prod-app", "pencom-prod-data", "5432") in edges
    internal = {"pencom-prod-app", "pencom-prod-data", "pencom-prod-storage"}
    assert not [e for e in edges if e.source in (INTERNET, ADMINS) and e.target in internal]
    # The web, and the management network's WireGuard endpoint (UDP).
    assert {e.label for e in edges if e.source == INTERNET and e.target == "pencom-prod-edge"} == {"80", "443", "51820"}


# --- summary ----------------------------------------------------------------------------------

@pytest.mark.fast
def test_summary_shows_hosts_services_datastores_and_public_outputs():
    from synth.summary import datastores, hosts, markdown as summary_markdown, services

    state = synth_once("prod")
    droplet = next(h for h in hosts(state) if h["host"] == "kro-prod-droplet")
    assert droplet["size"].startswith("s-") and droplet["image"].startswith("ubuntu-")
    assert any(h["host"] == "pencom-prod-edge" and h["size"] == "owned" for h in hosts(state))
    backend = next(s for s in services(state) if s["service"] == "kro-prod-backend")
    assert backend["image"].startswith("registry.digitalocean.com/kro/kro-backend:")
    assert backend["hostnames"] == "api.krotrust.com"
    assert next(s for s in services(state) if s["service"] == "krogiving-backend")["hostnames"] == "api.krogiving.com"
    stores = {d["datastore"]: d for d in datastores(state)}
    assert stores["kro-prod-db-cluster"]["engine"] == "managed pg"
    assert stores["kro-prod-db-cluster"]["size"].endswith("x2")
    assert stores["kro-prod-db-cluster"]["rpo"].startswith("24 h 10 min")
    assert stores["giv-prod-cache-cluster"]["rpo"].startswith("no off-site backup")
    assert stores["pencom-prod-data-postgres"]["engine"] == "self-hosted postgres"
    text = summary_markdown(state)
    assert "## Outputs" in text and '"production": true' in text
    for secret in state["secret_outputs"]:
        assert f'"{secret}":' not in text
    assert "standby node" in text and "owned" in text


# --- replacements -----------------------------------------------------------------------------

SCHEMAS = Path("/work/shared/provider-schemas/sdk-derived")


@pytest.mark.fast
def test_replacing_inputs_are_real_inputs_of_their_resources():
    """Cross-check against the provider schemas when present (the program never needs them)."""
    import gzip

    from synth.replacements import REPLACING_INPUTS, STATEFUL_TYPES, sdk_documented_replacements

    if not SCHEMAS.is_dir():
        pytest.skip("provider schemas not available (a cross-check only)")
    schemas = {}
    for path in SCHEMAS.glob("*.schema.json.gz"):
        schemas.update(json.load(gzip.open(path, "rt"))["resources"])
    for type_, inputs in REPLACING_INPUTS.items():
        assert type_ in schemas, type_
        named = set(inputs) - {"*"}
        assert named <= set(schemas[type_]["inputProperties"]), (type_, named - set(schemas[type_]["inputProperties"]))
        assert sdk_documented_replacements(type_) <= set(schemas[type_]["inputProperties"]), type_
    assert STATEFUL_TYPES <= set(schemas)
    # The SDK's own docs name the droplet's userData as forcing a new resource.
    assert "userData" in sdk_documented_replacements("digitalocean:index/droplet:Droplet")


@pytest.mark.fast
def test_a_bucket_rename_is_a_replacement_and_a_resize_is_not():
    bucket = "digitalocean:index/spacesBucket:SpacesBucket"
    base = {"stack": "staging", "resources": [res(bucket, "media", {"name": "a", "region": "fra1"}),
                                               res(CLUSTER, "db", {"size": "db-s-1vcpu-2gb", "name": "db"})]}
    head = json.loads(json.dumps(base))
    head["resources"][0]["inputs"]["name"] = "b"
    head["resources"][1]["inputs"]["size"] = "db-s-2vcpu-4gb"
    kinds = {c.resource["name"]: (c.kind, c.forced_by) for c in diff_states(base, head).changes}
    assert kinds == {"media": ("replaced", ["name"]), "db": ("changed", [])}


def _run_plan_step(tmp_path, base_change=None, head_change=None):
    """The offline-plan step of preview.yml run for real (bash, git, the synth) in a clone of
    the project: a base commit (the sources as they are, with ``base_change`` applied to its
    staging stack file's text) and a head commit on it (``head_change`` applied to the same
    file). Returns (the step's exit code, the comment, the status output, stderr)."""
    import os

    from synth.engine import PROJECT_ROOT
    from tests.conftest import require_tool

    require_tool("git", "Debian package git")
    workflow = _load("preview.yml")
    step = next(s for s in workflow["jobs"]["offline-plan"]["steps"] if s.get("id") == "plan")
    clone = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(PROJECT_ROOT), str(clone)], check=True)
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for path in ("stacks", "synth", "validation", "components", "policy", "Pulumi.staging.yaml"):
        subprocess.run(["cp", "-r", str(PROJECT_ROOT / path), str(clone)], check=True)
    stack_file = clone / "Pulumi.staging.yaml"
    original = stack_file.read_text()
    for label, change in (("base", base_change), ("head", head_change)):
        stack_file.write_text(change(original) if change else original)
        subprocess.run(git + ["add", "-A"], check=True)
        subprocess.run(git + ["commit", "-qm", label, "--allow-empty"], check=True)
        if label == "base":
            base = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True,
                                  check=True).stdout.strip()
    (clone / ".venv").symlink_to(PROJECT_ROOT / ".venv")
    output = tmp_path / "github-output"
    env = {**os.environ, "BASE_SHA": base, "ALLOW_STATEFUL": "false", "GITHUB_OUTPUT": str(output)}
    run = subprocess.run(["bash", "-c", step["run"]], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    return run.returncode, (clone / "out" / "comment.md").read_text(), output.read_text(), run.stderr


def _misspelled_region(text: str) -> str:
    return text.replace("  platform:environment:\n", "  platform:environment:\n    regoin: fra1\n", 1)


@pytest.mark.realtool
def test_a_head_that_does_not_synthesize_is_the_plan_comment(tmp_path):
    """A pull request whose head breaks staging's stack file: the comment must carry the config
    error. It had no diff file to `cat`, so `set -e` ended the step and the pull request kept
    its previous, green comment."""
    code, comment, status, stderr = _run_plan_step(tmp_path, head_change=_misspelled_region)
    assert code == 0, stderr[-3000:]
    assert "### staging: the head does not synthesize" in comment
    assert "platform:environment.regoin: unknown key" in comment
    assert "status=1" in status
    assert "prod" in comment and "Traceback" not in comment


@pytest.mark.realtool
def test_a_base_that_does_not_synthesize_fails_the_check(tmp_path):
    """A base whose staging stack file does not synthesize: the step wrote an empty base, so
    every resource showed as added, no deletion or replacement could be seen, and the check
    passed (exit 0). It must fail, with the base's error in the comment."""
    code, comment, status, stderr = _run_plan_step(tmp_path, base_change=_misspelled_region)
    assert code == 0, stderr[-3000:]
    assert "### staging: the base does not synthesize, so this change cannot be diffed" in comment
    assert "platform:environment.regoin: unknown key" in comment
    assert "to add" not in comment.split("### staging: the base", 1)[1].split("## Plan diff for stack `prod`", 1)[0]
    assert "status=1" in status
    # prod's base synthesizes: its diff is there, and empty.
    assert "## Plan diff for stack `prod`" in comment and "Traceback" not in comment
