"""What the live probes are pointed at (rehearsal/liveprobes.py) and the allowed side of the TLS
probes (rehearsal/checks/tlsprobes.py), without a lab."""

from __future__ import annotations

import pytest
import yaml

from components.nginx import MOZILLA_INTERMEDIATE_CIPHERS
from rehearsal.checks import tlsprobes
from rehearsal.liveprobes import websocket_hosts
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.fast


def test_the_websocket_probe_goes_to_the_routes_that_ask_for_the_upgrade():
    staging = yaml.safe_load((PROJECT_ROOT / "Pulumi.staging.yaml").read_text())["config"]
    assert websocket_hosts(staging) == {"api.stage.krotrust.com"}
    assert websocket_hosts({"platform:x": {"routes": [{"host": "API.x.test", "websocket": True},
                                                      {"host": "app.x.test", "websocket": False},
                                                      {"host": "www.x.test"}]}}) == {"api.x.test"}


def test_the_probes_mozilla_list_and_the_renderers_agree():
    # Two copies of Mozilla's 5.7 list: the renderer's (components/nginx.py) and the probes' own.
    assert set(MOZILLA_INTERMEDIATE_CIPHERS.split(":")) == tlsprobes.MOZILLA_INTERMEDIATE_TLS12


def test_no_refused_suite_is_on_mozillas_intermediate_list():
    refused = {suite for _, suites in tlsprobes.REFUSED_TLS12 for suite in suites}
    assert refused and not refused & tlsprobes.MOZILLA_INTERMEDIATE_TLS12
    assert set(tlsprobes.GNUTLS_PRIORITY) <= refused
