"""Live probes of the data tier's TLS (issue #16 point 3, DESIGN.md "TLS invariants"): every
datastore connection the stack hands a client, tried with the real client from where that client
runs, three ways: with the CA the client trusts (must connect), with another CA (must fail
certificate verification), in plaintext (must be refused). A refusal counts only where the first
connected (a closed port refuses everything); a probe that cannot be tried is "not proven" with
the reason. Passwords go in ``PGPASSWORD`` / ``REDISCLI_AUTH``, never on a command line.

Which connections (``Handed``, one per URL):

- every environment variable of a running container holding ``postgres(ql)://...`` with
  ``sslmode=verify-full`` or ``rediss://...`` (``container_urls``), tried from inside that
  container's network namespace; the CA is the file the URL names (``sslrootcert``,
  ``ssl_ca_certs``, ``tlsCAFile``) or the container's ``NODE_EXTRA_CA_CERTS``, read from the
  box through the container's bind;
- the same in every App Platform component's ``envs`` (``app_platform_urls``), tried from the
  lab's namespace, where DigitalOcean's network is in the lab (the overlay maps every VPC range to
  the managed databases' stand-ins, ``rehearsal.services.managed``); the CA is the spec's
  ``<NAME>_CA_CERT`` variable for an ``sslrootcert`` file ``.../<name>-ca.crt``, and for a
  ``rediss://`` URL with no CA the public trust store, for which the lab's CA stands in.

MongoDB URLs are not tried: no MongoDB server is to be had here (README, "Not proven").
The clients: ``psql`` (libpq: verify-full checks the chain and the name) and ``redis-cli --tls``
(hiredis checks the chain and sends SNI but does not match the name).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from rehearsal.checks.access import run_at, verdict
from rehearsal.checks.probes import BoxContainer
from rehearsal.report import Check

Site = Sequence[str]
APP = "digitalocean:index/app:App"
NO_ANSWER_S = 8
"""redis-cli has no read timeout: a TLS server waits for the rest of a record sent in plaintext,
a plaintext one for the rest of a command sent as a ClientHello. No PONG in 8 s is a refusal."""


def kind(url: str) -> Optional[str]:
    """``postgres`` for a verify-full Postgres URL, ``redis`` for ``rediss://``, else None (not
    a connection these probes try: plain ``redis://`` stays on the container's own network, policy
    ``redis-tls``; a Postgres URL without verify-full is the policy's finding)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("postgres", "postgresql") and "sslmode=verify-full" in url:
        return "postgres"
    return "redis" if scheme == "rediss" else None


@dataclass(frozen=True)
class Handed:
    """One datastore URL handed to ``client`` in variable ``key``, placed in the lab: ``site``
    where its client runs, ``address`` of its server there, ``ca_pem`` the CA the client trusts
    (``ca_from`` says where it came from). A None is why it is not proven."""

    client: str
    key: str
    url: str
    site: Optional[Site]
    address: Optional[str]
    ca_pem: Optional[bytes]
    ca_from: str

    @property
    def kind(self) -> str:
        return kind(self.url) or ""

    @property
    def server(self) -> str:
        return urlsplit(self.url).hostname or ""


def container_urls(lab, probes, host: str) -> list[Handed]:
    """The ``Handed`` of every running container of ``host`` (``probes``: a started
    ``LabProbes``); the server's address as the container names it (another container, an
    address, or a name the box resolves: the managed databases' stand-ins)."""
    containers = probes.containers.get(host, [])
    out = []
    for client in containers:
        for key, url in sorted(client.env.items()):
            if kind(url) is None:
                continue
            query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
            ca_path = (query.get("sslrootcert") or query.get("ssl_ca_certs") or query.get("tlsCAFile")
                       or client.env.get("NODE_EXTRA_CA_CERTS", ""))
            server = urlsplit(url).hostname or ""
            ca_host_path = _host_path(client, ca_path)
            ca = lab.exec(host, ["cat", ca_host_path], timeout=30) if ca_host_path else None
            out.append(Handed(client.service, key, url, probes.container_site(host, client),
                              _resolve(containers, server) or _getent(lab, host, server),
                              ca.stdout if ca is not None and ca.returncode == 0 else None,
                              f"{ca_path or 'none'} -> {ca_host_path}"))
    return out


def app_platform_urls(state: Mapping, site: Site, resolve: Callable[[str], Optional[str]],
                      public_ca: bytes, product: Optional[str] = None) -> list[Handed]:
    """The ``Handed`` of every App Platform component of a capture (``state``, secrets revealed;
    ``product``: only its apps, ``<product>-...`` by name), tried from ``site``; ``resolve``: a
    server name's lab address; ``public_ca``: what stands in for the public trust store."""
    out = []
    for app in (r for r in state.get("resources") or [] if r["type"] == APP
                and (product is None or r["name"].split("-", 1)[0] == product)):
        spec = (app.get("inputs") or {}).get("spec") or {}
        for component in (c for group in ("services", "workers", "jobs") for c in spec.get(group) or []):
            env = {str(e.get("key")): str(e.get("value") or "") for e in component.get("envs") or []}
            for key, url in sorted(env.items()):
                if kind(url) is None:
                    continue
                ca_path = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}.get("sslrootcert", "")
                if ca_path:
                    variable = Path(ca_path).name.rsplit("-ca.", 1)[0].upper().replace("-", "_") + "_CA_CERT"
                    ca, source = env.get(variable, "").encode() or None, f"{ca_path} from {variable}"
                else:
                    ca, source = public_ca, "the public trust store (the lab's CA)"
                out.append(Handed(f"app {component.get('name')}", key, url, site,
                                  resolve(urlsplit(url).hostname or ""), ca, source))
    return out


@contextmanager
def ca_files(own: bytes, other: bytes) -> Iterator[tuple[Path, Path]]:
    """``own`` and ``other`` PEM written to a temporary directory (gone afterwards)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = Path(tmp) / "ca.crt", Path(tmp) / "other.crt"
        paths[0].write_bytes(own)
        paths[1].write_bytes(other)
        yield paths


def handed_checks(handed: Sequence[Handed], other_ca: bytes,
                  stack_address: Callable[[str], Optional[str]] = lambda address: None) -> list[Check]:
    """The three probes of each ``Handed`` (``other_ca``: a CA that signed no server here;
    ``stack_address``: the stack address a lab address stands for, which the certificate
    carries: ``rehearsal.overlay.Overlay.stack_address``)."""
    checks = []
    for h in handed:
        parts = urlsplit(h.url)
        name = f"live {h.kind} from {h.client} {h.key} ({h.server})"
        first = "verify-full with the stack's CA connects" if h.kind == "postgres" else "TLS with the stack's CA connects"
        if not (h.address and h.ca_pem and h.site):
            checks.append(verdict(f"{name}: {first}", None,
                                 f"server address {h.address}, CA {h.ca_from}: {'found' if h.ca_pem else 'none'}, site {h.site}"))
            continue
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        with ca_files(h.ca_pem, other_ca) as (own, other):
            if h.kind == "postgres":
                checks += postgres_tls_checks(h.site, name, h.address, parts.port or 5432,
                                              server_name(h.server, stack_address), parts.path.lstrip("/"),
                                              user, password, own, other)
            else:
                checks += redis_tls_checks(h.site, name, h.address, parts.port or 6379,
                                           server_name(h.server, stack_address), user or "default", password, own, other)
    return checks


def postgres_tls_checks(site: Site, name: str, address: str, port: int, verified_name: str, dbname: str,
                        user: str, password: str, own_ca: Path, other_ca: Path) -> list[Check]:
    """``psql`` from ``site``: ``select 1`` with ``sslmode=verify-full`` against ``own_ca``
    answers 1; against ``other_ca`` fails "certificate verify failed"; with ``sslmode=disable``
    is refused. The client names the server ``verified_name`` (libpq's ``host``, which
    verify-full matches against the certificate) and connects to ``address`` (``hostaddr``)."""
    def psql(sslmode: str, root: Optional[Path]) -> subprocess.CompletedProcess:
        conninfo = (f"host={verified_name} hostaddr={address} port={port} dbname={dbname} user={user} "
                    f"sslmode={sslmode}" + (f" sslrootcert={root}" if root else ""))
        env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
        return run_at(site, ["psql", conninfo, "-XAtc", "select 1"], env=env)

    good, wrong, plain = psql("verify-full", own_ca), psql("verify-full", other_ca), psql("disable", None)
    connected = good.stdout.strip() == "1"
    return [
        verdict(f"{name}: verify-full with the stack's CA connects", connected, good.stderr),
        verdict(f"{name}: verify-full against another CA fails",
               (wrong.returncode != 0 and "certificate verify failed" in wrong.stderr) if connected else None,
               wrong.stderr or wrong.stdout),
        verdict(f"{name}: plaintext (sslmode=disable) is refused",
               (plain.returncode != 0) if connected else None,
               plain.stderr or f"plaintext connected: {plain.stdout.strip()}"),
    ]


def redis_tls_checks(site: Site, name: str, address: str, port: int, sni: str, user: str, password: str,
                     own_ca: Path, other_ca: Path) -> list[Check]:
    """``redis-cli --tls`` from ``site``: ``PING`` verified against ``own_ca`` answers ``PONG``;
    the same against ``other_ca`` fails certificate verification; the same without TLS gets no
    ``PONG``. A ``PONG`` where none may come fails at once. The name is not proven by it."""
    def ping(*tls: str) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin:/bin", "REDISCLI_AUTH": password}
        return run_at(site, ["redis-cli", "-h", address, "-p", str(port), "--user", user, "--no-auth-warning", *tls,
                          "PING"], timeout=NO_ANSWER_S, env=env)

    good = ping("--tls", "--sni", sni, "--cacert", str(own_ca))
    connected = good.returncode == 0 and good.stdout.strip() == "PONG"
    wrong = ping("--tls", "--sni", sni, "--cacert", str(other_ca))
    plain = ping()

    def refused(got: subprocess.CompletedProcess, why: str = "") -> Optional[bool]:
        if got.stdout.strip() == "PONG":
            return False
        return (why in got.stdout + got.stderr) if connected else None

    return [
        verdict(f"{name}: TLS with the stack's CA connects", connected, good.stderr or good.stdout),
        verdict(f"{name}: TLS against another CA fails", refused(wrong, "certificate verify failed"),
               wrong.stderr or wrong.stdout),
        verdict(f"{name}: plaintext is refused", refused(plain), (plain.stderr or plain.stdout) or "no answer"),
    ]


def server_name(server: str, stack_address: Callable[[str], Optional[str]]) -> str:
    """The name a verify-full client gives for ``server`` (a URL's host in the lab): the stack
    address behind a lab address, else ``server`` as it is (a DNS name, a container's name)."""
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", server):
        return stack_address(server) or server
    return server


def _resolve(containers: Sequence[BoxContainer], server: str) -> Optional[str]:
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", server):
        return server
    for c in containers:
        if c.service == server:
            return next(iter(sorted(ip for ip, _ in c.addresses.values())), None)
    return None


def _getent(lab, host: str, name: str) -> Optional[str]:
    """``name`` as the box resolves it (its /etc/hosts names the managed databases' stand-ins)."""
    found = lab.exec(host, ["getent", "ahostsv4", name], timeout=30)
    words = found.stdout.decode(errors="replace").split()
    return words[0] if found.returncode == 0 and words else None


def _host_path(container: BoxContainer, path: str) -> Optional[str]:
    """The box path behind ``path`` in the container (the longest bind that holds it)."""
    for destination in sorted(container.mounts, key=len, reverse=True):
        if path == destination or path.startswith(destination.rstrip("/") + "/"):
            return container.mounts[destination] + path[len(destination):]
    return None
