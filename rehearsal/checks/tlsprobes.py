"""Live probes of nginx's TLS on a public hostname (issue #16, DESIGN.md "TLS invariants"), with
real clients (OpenSSL's ``s_client``, curl) from a probe position: each function takes ``site``,
an argv prefix that puts the client there (``nsenter --net=...``; ``()`` for this machine), and
returns ``rehearsal.report.Check`` items named ``live tls <hostname>: ...``. A probe the client
cannot try (this machine's OpenSSL will not offer a protocol or cipher) is "not proven", never
a pass.

The allowed side is Mozilla's, not the project's: :data:`MOZILLA_INTERMEDIATE_TLS12`,
:data:`MOZILLA_INTERMEDIATE_TLS13`, :data:`MOZILLA_HSTS_MIN_AGE_S` and the refused kinds in
:data:`REFUSED_TLS12` are copied from Mozilla's Server Side TLS guidelines version 5.7
(https://ssl-config.mozilla.org/guidelines/5.7.json, ``configurations.intermediate``:
``ciphers.openssl``, ``ciphersuites``, ``hsts_min_age``, ``tls_versions``; the refused kinds
are what ``configurations.old.ciphers.openssl`` adds to it; 5.8 did not change them;
https://wiki.mozilla.org/Security/Server_Side_TLS). ``components/nginx.py`` renders the same
list from its own constant, so a typo there shows here as a failure.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Optional, Sequence

from rehearsal.report import FAIL, NOT_PROVEN, PASS, Check

Site = Sequence[str]

MOZILLA_INTERMEDIATE_TLS12 = frozenset({
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
})
"""TLS 1.2 cipher suites (OpenSSL names) of Mozilla's intermediate configuration, 5.7."""
MOZILLA_INTERMEDIATE_TLS13 = frozenset({"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                        "TLS_CHACHA20_POLY1305_SHA256"})
"""TLS 1.3 cipher suites of Mozilla's intermediate configuration, 5.7."""
TLS13_OFFERED = (*sorted(MOZILLA_INTERMEDIATE_TLS13), "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256")
"""Every TLS 1.3 suite OpenSSL implements (RFC 8446 B.4): the CCM ones are outside Mozilla's list."""
MOZILLA_HSTS_MIN_AGE_S = 63072000
"""``hsts_min_age`` of Mozilla's intermediate configuration (two years, in seconds)."""
REFUSED_TLS12: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("CBC with SHA-1 (ECDHE)", ("ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA",
                                "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA")),
    ("CBC with SHA-2 (ECDHE, DHE)", ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA256",
                                     "ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384",
                                     "DHE-RSA-AES128-SHA256", "DHE-RSA-AES256-SHA256")),
    ("RSA key exchange", ("AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA256", "AES256-SHA256",
                          "AES128-SHA", "AES256-SHA")),
    ("3DES", ("DES-CBC3-SHA",)),
)
"""(kind, OpenSSL names) a server on Mozilla's intermediate list must refuse: what the "old"
configuration allows beyond it."""
GNUTLS_PRIORITY = {
    "DES-CBC3-SHA": "NONE:+VERS-TLS1.2:+RSA:+ECDHE-RSA:+ECDHE-ECDSA:+3DES-CBC:+SHA1:+COMP-NULL:+SIGN-ALL:+GROUP-ALL",
}
"""GnuTLS priority strings (``gnutls-cli --priority``) for refused suites that Debian's OpenSSL
cannot offer (it is built without 3DES in TLS): GnuTLS still implements them."""
UNKNOWN_NAME = "unknown.lab-probe.invalid"
"""A name no server is configured for (``.invalid``: RFC 2606, never a real host)."""

NEGOTIATED = re.compile(r"(?:New, \S+, Cipher is|Cipher\s*:)\s*(\S+)")
NO_OFFER = ("no protocols available", "no cipher match", "no ciphers available", "Call to SSL_CONF_cmd")


def _check(name: str, ok: Optional[bool], detail: str = "") -> Check:
    return Check(name, NOT_PROVEN if ok is None else PASS if ok else FAIL, detail.strip()[-400:])


def _run(site: Site, argv: Sequence[str], timeout: float = 30, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([*site, *argv], capture_output=True, text=True, input="", timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"timed out after {timeout:.0f} s")


def handshake(site: Site, domain: str, address: str, *options: str, port: int = 443,
              roots: Optional[Path] = None) -> tuple[Optional[str], str]:
    """One ``openssl s_client`` handshake with SNI ``domain`` to ``address:port``; ``options``:
    s_client's (``-tls1_2``, ``-cipher ...``); ``roots``: verify against this CA file (a failed
    verification fails the handshake). Returns (the negotiated cipher, or None when no handshake
    completed, or ``"unoffered"`` when this machine's OpenSSL refused to offer what was asked;
    s_client's output)."""
    argv = ["openssl", "s_client", "-connect", f"{address}:{port}", "-servername", domain,
            *(["-CAfile", str(roots), "-verify_return_error"] if roots else []), *options]
    shake = _run(site, argv)
    text = shake.stdout + shake.stderr
    if any(s in text for s in NO_OFFER) and "BEGIN CERTIFICATE" not in text:
        return "unoffered", text
    found = NEGOTIATED.search(shake.stdout)
    if shake.returncode != 0 or not found or found.group(1) in ("(NONE)", "0000"):
        return None, text
    return found.group(1), text


def gnutls_handshake(site: Site, domain: str, address: str, priority: str, *,
                     port: int = 443) -> tuple[Optional[str], str]:
    """One handshake with GnuTLS's ``gnutls-cli`` (Debian gnutls-bin; no verification: only
    whether the server agrees) offering only what ``priority`` allows. Returns (the session's
    description, e.g. ``(TLS1.2)-(RSA)-(3DES-CBC)-(SHA1)``, or None when none completed, or
    ``"unoffered"`` when gnutls-cli is not installed; its output)."""
    import shutil

    if shutil.which("gnutls-cli") is None:
        return "unoffered", "gnutls-cli is not installed (Debian package gnutls-bin)"
    shake = _run(site, ["gnutls-cli", "--insecure", "--priority", priority, "--sni-hostname", domain,
                        "-p", str(port), address])
    text = shake.stdout + shake.stderr
    found = re.search(r"- Description: (\S+)", text)
    return (found.group(1) if shake.returncode == 0 and found else None), text


def protocol_checks(site: Site, domain: str, address: str, *, port: int = 443,
                    roots: Optional[Path] = None) -> list[Check]:
    """TLS 1.0 and 1.1 refused, TLS 1.2 and 1.3 complete (verified against ``roots`` when
    given). The old versions are offered at OpenSSL's security level 0, so the client offers them
    and only the server can refuse; a refusal counts only where TLS 1.2 or 1.3 completed (a
    closed port refuses everything), else it is not proven."""
    results = {}
    for version, allowed in (("tls1", False), ("tls1_1", False), ("tls1_2", True), ("tls1_3", True)):
        results[version] = (allowed, *handshake(site, domain, address, f"-{version}", "-cipher", "DEFAULT:@SECLEVEL=0",
                                                port=port, roots=roots if allowed else None))
    answers = any(cipher not in (None, "unoffered") for allowed, cipher, _ in results.values() if allowed)
    checks = []
    for version, (allowed, cipher, text) in results.items():
        name = f"live tls {domain}: {version.replace('_', '.').replace('tls', 'TLS ')} {'works' if allowed else 'refused'}"
        if cipher == "unoffered":
            checks.append(_check(name, None, "this machine's OpenSSL will not offer it: " + text[-200:]))
        elif allowed:
            checks.append(_check(name, cipher is not None, f"negotiated {cipher}: {text[-300:]}"))
        else:
            checks.append(_check(name, (cipher is None) if answers or cipher is not None else None,
                                 f"negotiated {cipher}: {text[-300:]}"))
    return checks


def accepted_tls12(site: Site, domain: str, address: str, offered: Sequence[str], *,
                   port: int = 443) -> tuple[list[str], str]:
    """The TLS 1.2 suites of ``offered`` the server accepts: offer all, take the one it picks out
    of the offer, again until the handshake fails (as nmap's ssl-enum-ciphers). Returns (accepted
    in the order found, the last s_client output)."""
    rest, accepted, text = list(offered), [], ""
    while rest:
        cipher, text = handshake(site, domain, address, "-tls1_2", "-cipher", ":".join(rest) + ":@SECLEVEL=0",
                                 port=port)
        if cipher in (None, "unoffered") or cipher not in rest:
            break
        accepted.append(cipher)
        rest.remove(cipher)
    return accepted, text


def accepted_tls13(site: Site, domain: str, address: str, *, port: int = 443) -> list[str]:
    """The suites of :data:`TLS13_OFFERED` the server accepts in TLS 1.3, found as
    :func:`accepted_tls12` does."""
    rest, accepted = list(TLS13_OFFERED), []
    while rest:
        cipher, _ = handshake(site, domain, address, "-tls1_3", "-ciphersuites", ":".join(rest), port=port)
        if cipher in (None, "unoffered") or cipher not in rest:
            break
        accepted.append(cipher)
        rest.remove(cipher)
    return accepted


def client_tls12_ciphers(site: Site = ()) -> list[str]:
    """Every TLS 1.2 cipher suite the client's OpenSSL implements (``openssl ciphers``, security
    level 0: NULL, anonymous, export-grade and 3DES suites included where it has them)."""
    listed = _run(site, ["openssl", "ciphers", "-s", "-tls1_2", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"])
    return [c for c in listed.stdout.strip().split(":") if c and not c.startswith("TLS_")]


def cipher_checks(site: Site, domain: str, address: str, *, port: int = 443) -> list[Check]:
    """Every TLS 1.2 suite the client has offered, and the accepted ones a non-empty subset of
    :data:`MOZILLA_INTERMEDIATE_TLS12`; likewise for TLS 1.3 (:data:`TLS13_OFFERED`); then each
    kind of :data:`REFUSED_TLS12` refused, every suite of it tried on its own with OpenSSL, or
    GnuTLS where OpenSSL lacks it (:data:`GNUTLS_PRIORITY`). A kind fails when one of its suites
    completes; it passes when none does and TLS 1.2 completed with some suite (a closed port
    refuses everything); suites no client here offers are named, and a kind with none tried is
    not proven."""
    checks = []
    offered = client_tls12_ciphers(site)
    accepted, text = accepted_tls12(site, domain, address, offered, port=port)
    outside = sorted(set(accepted) - MOZILLA_INTERMEDIATE_TLS12)
    checks.append(_check(f"live tls {domain}: TLS 1.2 accepts only Mozilla intermediate suites",
                         bool(accepted) and not outside if offered else None,
                         f"{len(offered)} suites offered; accepted {accepted}; outside Mozilla's list {outside}"
                         + ("" if accepted else f": {text[-200:]}")))
    accepted13 = accepted_tls13(site, domain, address, port=port)
    outside13 = sorted(set(accepted13) - MOZILLA_INTERMEDIATE_TLS13)
    checks.append(_check(f"live tls {domain}: TLS 1.3 accepts only Mozilla intermediate suites",
                         bool(accepted13) and not outside13,
                         f"offered {list(TLS13_OFFERED)}; accepted {accepted13}; outside Mozilla's list {outside13}"))
    for kind, suites in REFUSED_TLS12:
        taken, missing = [], []
        for suite in suites:
            cipher, _ = handshake(site, domain, address, "-tls1_2", "-cipher", f"{suite}:@SECLEVEL=0", port=port)
            if cipher == "unoffered" and suite in GNUTLS_PRIORITY:
                cipher, _ = gnutls_handshake(site, domain, address, GNUTLS_PRIORITY[suite], port=port)
            if cipher == "unoffered":
                missing.append(suite)
            elif cipher is not None:
                taken.append(cipher)
        tried = len(suites) - len(missing)
        ok = False if taken else (True if tried and accepted else None)
        checks.append(_check(f"live tls {domain}: TLS 1.2 {kind} refused", ok,
                             f"accepted {taken} of {tried} suites tried; offered by none of this machine's clients "
                             f"{missing}; the Mozilla check's enumeration completed TLS 1.2 with {len(accepted)} suites"))
    return checks


def hsts_check(site: Site, domain: str, address: str, roots: Path, *, port: int = 443) -> Check:
    """``Strict-Transport-Security`` on a verified HTTPS answer, with ``max-age`` at least
    :data:`MOZILLA_HSTS_MIN_AGE_S` (curl; not proven when HTTPS itself fails)."""
    got = _run(site, ["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-D", "-", "--cacert", str(roots),
                      "--resolve", f"{domain}:{port}:{address}", f"https://{domain}:{port}/"])
    headers = [line.strip() for line in got.stdout.splitlines()
               if line.lower().startswith("strict-transport-security:")]
    age = re.search(r"max-age=\"?(\d+)", headers[0], re.I) if headers else None
    ok = None if got.returncode != 0 else bool(age) and int(age.group(1)) >= MOZILLA_HSTS_MIN_AGE_S
    return _check(f"live tls {domain}: HSTS sent (max-age >= {MOZILLA_HSTS_MIN_AGE_S})", ok,
                  headers[0] if headers else f"curl exit {got.returncode}: {got.stderr}{got.stdout[:300]}")


def unknown_name_check(site: Site, domain: str, address: str, *, port: int = 443) -> Check:
    """A handshake naming :data:`UNKNOWN_NAME` at ``domain``'s address fails with no certificate
    sent (nginx's ``ssl_reject_handshake``), while ``domain`` itself completes (otherwise a closed
    port would pass: not proven)."""
    known, _ = handshake(site, domain, address, port=port)
    cipher, text = handshake(site, UNKNOWN_NAME, address, port=port)
    refused = cipher is None and "BEGIN CERTIFICATE" not in text
    return _check(f"live tls {domain}: an unknown name is refused at the handshake",
                  refused if known not in (None, "unoffered") else None,
                  (f"{domain} negotiated {known}; " if known else f"{domain} itself got no handshake; ") + text[-300:])


# curl's exit code for an HTTP/2 framing error (a stream refused by GOAWAY or RST_STREAM).
CURL_HTTP2_ERROR = 16


def _curl(site: Site, argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return _run(site, ["curl", "-sS", "--max-time", "10", *argv], timeout=timeout)


def serial(site: Site, domain: str, address: str, *, port: int = 443) -> str:
    """The serial of the certificate nginx serves for ``domain`` (hex, or "" on no handshake)."""
    shown = _run(site, ["openssl", "s_client", "-connect", f"{address}:{port}", "-servername", domain])
    parsed = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=shown.stdout, capture_output=True,
                            text=True, timeout=30)
    return parsed.stdout.strip().removeprefix("serial=") if parsed.returncode == 0 else ""


def ingress_checks(site: Site, domain: str, address: str, roots: Path) -> list[Check]:
    """Everything a client on the internet meets at ``domain`` (served at ``address``), from
    ``site`` (the internet probe); ``roots``: the ACME CA's roots (``LabServices.acme_roots_pem``
    in a file): HTTPS verifies, HSTS, HTTP answers 301 to HTTPS except under
    ``/.well-known/acme-challenge/``, the protocols, the cipher suites, an unknown name."""
    checks = []
    https = _curl(site, ["-o", "/dev/null", "--cacert", str(roots), "--resolve", f"{domain}:443:{address}",
                         f"https://{domain}/"])
    checks.append(_check(f"live tls {domain}: HTTPS verifies against the ACME CA's root", https.returncode == 0,
                         f"curl exit {https.returncode}: {https.stderr}"))
    checks.append(hsts_check(site, domain, address, roots))
    plain = _curl(site, ["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "--resolve", f"{domain}:80:{address}",
                         f"http://{domain}/lab-probe?x=1"])
    checks.append(_check(f"live tls {domain}: HTTP answers 301 to HTTPS",
                         plain.stdout.strip() == f"301 https://{domain}/lab-probe?x=1", plain.stdout + plain.stderr))
    acme = _curl(site, ["-o", "/dev/null", "-w", "%{http_code}", "--resolve", f"{domain}:80:{address}",
                        f"http://{domain}/.well-known/acme-challenge/lab-probe"])
    checks.append(_check(f"live tls {domain}: the ACME path is served over HTTP, not redirected",
                         acme.stdout.strip() not in ("", "000", "301"), acme.stdout + acme.stderr))
    checks += protocol_checks(site, domain, address, roots=roots)
    checks += cipher_checks(site, domain, address)
    checks.append(unknown_name_check(site, domain, address))
    return checks


def renewal_checks(lab, site: Site, box: str, domain: str, address: str, roots: Path, *,
                   interval_s: float = 0.3) -> list[Check]:
    """Forces a renewal in the box with the stack's certbot (``certbot renew --force-renewal``)
    and its deploy hook, requesting the site all the while: the renewal succeeds, nginx serves a
    new serial that verifies, and no request failed."""
    import threading
    import time

    before = serial(site, domain, address)
    failures: list[str] = []
    requests = [0]
    stop = threading.Event()

    retried: list[str] = []

    def load() -> None:
        argv = ["-o", "/dev/null", "--cacert", str(roots), "--resolve", f"{domain}:443:{address}", f"https://{domain}/"]
        while not stop.is_set():
            got = _curl(site, argv)
            requests[0] += 1
            if got.returncode == CURL_HTTP2_ERROR:
                # An old worker's GOAWAY on a connection it accepted as the reload began: the
                # stream was not processed, which RFC 9113 section 6.8 says a client may retry,
                # and browsers do. One retry, on a new connection; its failure counts.
                retried.append(got.stderr.strip()[-120:])
                got = _curl(site, argv)
            if got.returncode != 0:
                failures.append(got.stderr.strip()[-200:])
            stop.wait(interval_s)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        renew = lab.exec(box, ["certbot", "renew", "--force-renewal", "--no-random-sleep-on-renew"], timeout=600)
        deadline = time.monotonic() + 30
        after = serial(site, domain, address)
        while after in ("", before) and time.monotonic() < deadline:
            time.sleep(1)
            after = serial(site, domain, address)
    finally:
        stop.set()
        worker.join(timeout=60)
    verified = _curl(site, ["-o", "/dev/null", "--cacert", str(roots), "--resolve", f"{domain}:443:{address}",
                            f"https://{domain}/"])
    output = (renew.stdout + renew.stderr).decode(errors="replace")
    return [
        _check(f"live tls {domain}: certbot renew --force-renewal succeeds", renew.returncode == 0, output[-400:]),
        _check(f"live tls {domain}: nginx serves the renewed certificate (new serial, verified)",
               bool(before) and after not in ("", before) and verified.returncode == 0,
               f"serial {before} -> {after}; curl exit {verified.returncode} {verified.stderr}"),
        _check(f"live tls {domain}: no failed request during the renewal and reload", requests[0] > 0 and not failures,
               f"{requests[0]} requests, {len(failures)} failed: {failures[:3]}; "
               f"{len(retried)} retried after an HTTP/2 GOAWAY: {retried[:2]}"),
    ]


def websocket_check(site: Site, domain: str, address: str, roots: Path, *, port: int = 443,
                    path: str = "/") -> Check:
    """The WebSocket upgrade on ``wss://domain:port/path`` completes through nginx and one
    message comes back from the backend (an echoing stand-in): ``rehearsal.checks.wsprobe`` run
    at ``site`` with the ``websockets`` library."""
    import os
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    url = f"wss://{domain}{'' if port == 443 else f':{port}'}{path}"
    got = _run(site, [sys.executable, "-m", "rehearsal.checks.wsprobe", url, address, str(roots)], timeout=60, env=env)
    return _check(f"live tls {domain}: the WebSocket upgrade completes and the backend echoes",
                  got.returncode == 0, (got.stderr or got.stdout).strip())
