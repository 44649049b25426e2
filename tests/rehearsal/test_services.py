"""The lab services' plan (rehearsal/services.py), from the real staging capture after the overlay:
who answers which name, on which address."""

from __future__ import annotations

import ipaddress

import pytest
import yaml

from rehearsal import overlay
from rehearsal.capture import Host, StackCapture, Step, capture
from rehearsal.lab import BoxSpec, Lab
from rehearsal.services import ACME_HOST, ADDRESSES, ServicesError, plan_services
from synth.engine import PROJECT_ROOT

pytestmark = pytest.mark.fast

KRO = ("api.stage.krotrust.com", "app.stage.krotrust.com", "app2.stage.krotrust.com",
       "admin.stage.krotrust.com")
PENCOM = ("staging-api.ehub.pencom.example", "staging-partners.ehub.pencom.example")
VEDFINANCE = ("api-dev.v-edfinance.com", "api-staging.v-edfinance.com", "dev.v-edfinance.com",
              "staging.v-edfinance.com")


@pytest.fixture(scope="module")
def lab_staging() -> StackCapture:
    doc = yaml.safe_load((PROJECT_ROOT / "Pulumi.staging.yaml").read_text())
    cap = capture("staging")
    return overlay.apply(cap, overlay.plan(cap, doc["config"]["platform:environment"]["admin_cidrs"]))


@pytest.fixture(scope="module")
def plan(lab_staging):
    return plan_services(lab_staging, extra_names={"deb.debian.org": "100.64.0.1"})


def test_every_public_domain_resolves_to_the_box_that_serves_it(plan, lab_staging):
    hosts = lab_staging.hosts
    for names, host in ((KRO, "kro-staging"), (PENCOM, "pencom-staging-edge"),
                        (VEDFINANCE, "vedfinance-staging")):
        for name in names:
            assert plan.domains[name] == host
            assert plan.zone[name] == hosts[host].address
            assert ipaddress.ip_address(plan.zone[name]) in ipaddress.ip_network(overlay.PUBLIC)
    # Nothing else is served by the stack's nginx: GIV's hostnames are probed, not served here.
    assert set(plan.domains) == {*KRO, *PENCOM, *VEDFINANCE}


def test_outside_services_get_their_stand_ins(plan):
    assert plan.s3_hosts == ("4f3e2d1c0b9a88776655443322110fed.r2.cloudflarestorage.com",
                             "9a8b7c6d5e4f30211203f4e5d6c7b8a9.r2.cloudflarestorage.com")
    assert all(plan.zone[h] == ADDRESSES["s3"] for h in plan.s3_hosts)
    assert plan.zone[ACME_HOST] == ADDRESSES["acme"]
    assert plan.smtp == (("smtp.sendgrid.net", 587),)
    assert plan.zone["smtp.sendgrid.net"] == ADDRESSES["smtp"]
    assert plan.zone["hooks.slack.com"] == ADDRESSES["webhook"]
    # The apt mirror is on squid's allow-list too: the lab's name for it wins over the
    # unanswered address; a served domain or a stand-in is never replaced.
    assert plan.zone["deb.debian.org"] == "100.64.0.1"
    later = plan.with_names({"api.stage.krotrust.com": "100.64.0.1", ACME_HOST: "100.64.0.1",
                             "ghcr.io": "100.64.0.1"})
    assert later.zone["api.stage.krotrust.com"] == plan.zone["api.stage.krotrust.com"]
    assert later.zone[ACME_HOST] == ADDRESSES["acme"] and later.zone["ghcr.io"] == "100.64.0.1"


def test_the_proxy_allow_list_names_resolve_and_nothing_else(plan):
    # Pencom's squid allows these; each resolves (to a lab address where nothing listens unless
    # a stand-in or probe is there), and a name on no list is not in the zone (NXDOMAIN).
    for name in ("api.sendgrid.com", "login.remita.net", "us.i.posthog.com", "ghcr.io"):
        assert ipaddress.ip_address(plan.zone[name]) in ipaddress.ip_network(overlay.INTERNET)
    assert "r2.cloudflarestorage.com" not in plan.zone  # ".r2..." allows subdomains, not a host
    assert "example.com" not in plan.zone and "google.com" not in plan.zone
    assert len(set(plan.zone[n] for n in ("api.sendgrid.com", "login.remita.net"))) == 2


def test_dns_listens_where_the_stack_lets_dns_go(plan, lab_staging):
    # Pencom's internal nodes may send DNS only to the declared resolvers 1.1.1.1 and 1.0.0.1,
    # which the overlay placed on the lab's internet: the lab's DNS answers there.
    import ipaddress
    assert len(set(plan.resolvers)) == 2
    assert all(ipaddress.ip_address(r) in overlay.INTERNET for r in plan.resolvers), plan.resolvers
    used = set()
    for step in lab_staging.steps:
        used |= overlay.addresses_in(step.inputs)
    assert set(plan.resolvers) <= used  # the UFW rules name them
    assert not (set(ADDRESSES.values()) - {ADDRESSES["resolver"]}) & used


def _tiny(inputs: dict, address: str = "10.200.0.10") -> StackCapture:
    host = Host(name="web", product="kro", kind="onprem", address=address, user="deploy")
    other = Host(name="web2", product="kro", kind="onprem", address="10.200.0.11", user="deploy")
    return StackCapture(stack="t", hosts={"web": host, "web2": other}, products=["kro"],
                        steps=[Step(urn="u1", name="a", kind="command", host="web", inputs=inputs)])


def test_a_domain_served_by_two_hosts_is_refused():
    cap = _tiny({"stdin": "certbot certonly --webroot -d a.example.com \\\n  --x\n"})
    cap.steps.append(Step(urn="u2", name="b", kind="command", host="web2",
                          inputs={"stdin": "server_name a.example.com;"}))
    with pytest.raises(ServicesError, match="a.example.com is served by two hosts"):
        plan_services(cap)


def test_a_service_address_taken_by_the_overlay_is_refused():
    cap = _tiny({"stdin": f"ping {ADDRESSES['s3']}\n"})
    with pytest.raises(ServicesError, match="already used"):
        plan_services(cap)


def test_without_declared_resolvers_the_default_one_is_used():
    plan = plan_services(_tiny({"stdin": "certbot certonly --webroot -d a.example.com -d b.example.com\n"}))
    assert plan.resolvers == (ADDRESSES["resolver"],)
    assert plan.zone["a.example.com"] == plan.zone["b.example.com"] == "10.200.0.10"


def test_boxes_get_the_plans_resolvers_as_their_own(tmp_path, monkeypatch):
    from rehearsal import lab as lab_mod

    lab = Lab({"public": "10.200.0.0/24"}, [BoxSpec("b", {"public": "10.200.0.10"},
                                                     dns=("10.203.0.2", "10.203.0.3"))],
              workdir=tmp_path)
    calls = []
    monkeypatch.setattr(lab_mod, "run", lambda argv, **kw: calls.append(list(argv)))
    monkeypatch.setattr(lab, "_docker", lambda *args: ["docker", *args])
    monkeypatch.setattr(lab_mod, "seed_tar", lambda spec, lab_id: b"")
    lab._create_box(lab.boxes["b"], "image")
    create = next(c for c in calls if c[1] == "create")
    mount = create[create.index(next(a for a in create if a.endswith(":/etc/resolv.conf"))) - 1:][:2]
    assert mount[0] == "-v"
    resolv = mount[1].rsplit(":", 1)[0]
    assert open(resolv).read() == "nameserver 10.203.0.2\nnameserver 10.203.0.3\n"
