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


class _Renewing:
    """A lab whose certbot renewal always succeeds; the serial changes once it ran."""

    def __init__(self, calls):
        self.renewed = False
        self.calls = calls

    def exec(self, box, argv, timeout=None):
        import subprocess
        import time
        # The renewal lasts until the load has made the requests the test scripted.
        deadline = time.monotonic() + 20
        while len(self.calls) < self.scripted and time.monotonic() < deadline:
            time.sleep(0.01)
        self.renewed = True
        return subprocess.CompletedProcess(argv, 0, b"renewed", b"")


@pytest.mark.parametrize("codes, failed, retried", [
    # A GOAWAY during the reload, then the retry on a new connection works: not a failure.
    ([16, 0], 0, 1),
    # The retry fails too: a failed request.
    ([16, 16], 1, 1),
    # Any other error is a failure at once, never retried.
    ([7], 1, 0),
])
def test_the_renewal_probe_retries_only_a_goaway_refused_stream_and_counts_a_failed_retry(monkeypatch, codes, failed, retried):
    import subprocess

    calls: list[int] = []
    lab = _Renewing(calls)
    lab.scripted = len(codes)
    results = iter(codes)

    def curl(site, argv, timeout=30):
        code = next(results, 0)
        calls.append(code)
        return subprocess.CompletedProcess(argv, code, "", "curl: (16) Error in the HTTP2 framing layer" if code == 16 else
                                           ("" if code == 0 else "curl: (7) Failed to connect"))

    monkeypatch.setattr(tlsprobes, "_curl", curl)
    monkeypatch.setattr(tlsprobes, "serial", lambda site, domain, address: "02" if lab.renewed else "01")
    checks = tlsprobes.renewal_checks(lab, None, "box", "api.x.test", "10.200.0.10", PROJECT_ROOT, interval_s=0.05)
    load = checks[-1]
    assert (load.status == "pass") == (failed == 0), load.detail
    assert f"{failed} failed" in load.detail and f"{retried} retried after an HTTP/2 GOAWAY" in load.detail
