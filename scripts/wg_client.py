"""Print an operator's WireGuard client config for a stack's management network.

    umask 077; wg genkey | sudo tee /etc/wireguard/wg-staging.key | wg pubkey   # once per device
    # declare that public key in Pulumi.staging.yaml (management.peers: name, public_key,
    # address), `pulumi up`, then:
    python scripts/wg_client.py staging --name alice | sudo tee /etc/wireguard/wg-staging.conf
    sudo chmod 600 /etc/wireguard/wg-staging.conf && sudo wg-quick up wg-staging

The file has the peer's ``Address`` (its ``management.peers`` entry, with the network's prefix)
and one ``[Peer]`` per product entry host of the stack (its public key, public address and UDP
port, ``AllowedIPs`` its one management address, ``PersistentKeepalive``): the tunnel carries
the management network only. No private key is printed or taken: ``PostUp`` loads the device's
own key from ``--key-file`` (default ``/etc/wireguard/wg-STACK.key``), never read here.

The endpoints come from the stack output ``management`` (``pulumi stack output management
--json --stack STACK``, run here unless ``--outputs FILE``, ``-`` for stdin, gives that JSON or
the whole ``pulumi stack output --json`` document). ``--public-key`` checks that the key the
device holds is the one the stack file declares for ``--name``.

Exit 2, with one message naming the key path and the fix, when the stack file, the name, the
key or the outputs are wrong (stale outputs: the stack file's endpoints differ, so `pulumi up`
first); exit 1 when ``pulumi`` itself fails.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components import wireguard  # noqa: E402
from stacks import management  # noqa: E402
from stacks.errors import show  # noqa: E402
from synth.stackfile import StackFileError, load_stack_config  # noqa: E402

PEERS_PATH = "platform:environment.management.peers"


class UsageError(Exception):
    """Bad input: exit 2 with this message."""


class ToolError(Exception):
    """``pulumi`` failed: exit 1 with this message."""


def stack_management(stack: str, stack_file: Path | None = None,
                     root: Path = ROOT) -> tuple[management.Management, list[str]]:
    """The validated ``environment.management`` and ``products`` of ``stack_file`` (default
    ``Pulumi.<stack>.yaml``; the whole config is validated, as ``pulumi up`` would). Raises
    UsageError with the config's problems."""
    try:
        config = load_stack_config(stack, stack_file, root)
    except StackFileError as exc:
        raise UsageError(str(exc)) from None
    return config.environment.management, list(config.products)


def find_peer(m: management.Management, name: str, public_key: str | None) -> wireguard.Peer:
    """The peer ``name`` of the management network; with ``public_key``, also checks it is the
    declared one. Raises UsageError naming the key path."""
    for index, peer in enumerate(m.peers):
        if peer.name == name:
            if public_key is not None and public_key.strip() != peer.public_key:
                problem = wireguard.key_problem(public_key)
                raise UsageError(f"--public-key {problem}" if problem else
                                 f"--public-key is not the key declared at {PEERS_PATH}[{index}] ({name})"
                                 ".public_key: declare this device's key there and `pulumi up`, or use "
                                 "the device that holds the declared one")
            return wireguard.Peer(peer.name, peer.public_key, peer.address)
    names = ", ".join(p.name for p in m.peers) or "none"
    raise UsageError(f"{PEERS_PATH}: no peer named {name!r} (peers: {names}); add one with its name, "
                     "public_key (`wg pubkey < KEY`) and address, and `pulumi up`")


def read_outputs(stack: str, source: str | None, *, pulumi: str = "pulumi") -> Any:
    """The stack output ``management`` as JSON: from ``source`` (a file, ``-`` for stdin) or
    from ``pulumi stack output``. Raises UsageError for unreadable JSON, ToolError when pulumi
    fails."""
    if source is None:
        try:
            result = subprocess.run([pulumi, "stack", "output", "management", "--json", "--stack", stack],
                                    cwd=ROOT, capture_output=True, text=True, timeout=120)
        except OSError as exc:
            raise ToolError(f"cannot run pulumi ({exc.strerror}); pass --outputs FILE instead") from None
        if result.returncode != 0:
            raise ToolError(f"`pulumi stack output management --stack {stack}` failed: {result.stderr.strip()}")
        text, where = result.stdout, "pulumi stack output management"
    else:
        try:
            data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
        except OSError as exc:
            raise UsageError(f"--outputs {source}: {exc.strerror}") from None
        where = f"--outputs {source}"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{where}: not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}); give "
                             "the output of `pulumi stack output management --json`") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        # JSONDecodeError has a line; a ValueError of another kind (none known) would not.
        raise UsageError(f"{where}: not JSON ({getattr(exc, 'msg', exc)} at line {getattr(exc, 'lineno', '?')}); "
                         "give the output of `pulumi stack output management --json`") from None
    except RecursionError:
        raise UsageError(f"{where}: JSON nested too deeply to be a stack output; give the output of "
                         "`pulumi stack output management --json`") from None
    if isinstance(document, dict) and "endpoints" not in document and "management" in document:
        document = document["management"]
    return document


def remote_endpoints(m: management.Management, products: list[str], document: Any) -> list[wireguard.RemoteEndpoint]:
    """Each product's endpoint from the ``management`` output, checked against the stack file
    (network, port and each product's address: different ones mean outputs older than the file).
    Raises UsageError naming the output key."""
    if not isinstance(document, dict) or not isinstance(document.get("endpoints"), list):
        raise UsageError("the stack output `management` has no `endpoints`: the stack was last deployed by "
                         "a version without it; `pulumi up` first")
    if document.get("network") != m.network or document.get("listenPort") != m.listen_port:
        raise UsageError(f"the stack output management (network {document.get('network')}, listenPort "
                         f"{document.get('listenPort')}) differs from platform:environment.management "
                         f"({m.network}, {m.listen_port}): `pulumi up` first")
    listed: dict[str, tuple[int, dict]] = {}
    for i, entry in enumerate(document["endpoints"]):
        if not isinstance(entry, dict):
            raise UsageError(f"management.endpoints[{i}] is not an object (product, endpoint, address, publicKey): "
                             "the output is malformed; `pulumi up` to rewrite it")
        product = entry.get("product")
        if not isinstance(product, str):
            raise UsageError(f"management.endpoints[{i}].product must be a product name, got {show(product)}: "
                             "the output is malformed; `pulumi up` to rewrite it")
        if product in listed:
            raise UsageError(f"management.endpoints[{i}] and management.endpoints[{listed[product][0]}] are both "
                             f"for {product!r}: each product has one endpoint; `pulumi up` to rewrite the output")
        listed[product] = (i, entry)
    out = []
    for product in sorted(products, key=lambda p: management.GATEWAY_OFFSETS[p]):
        if product not in listed:
            raise UsageError(f"management.endpoints has no entry for {product}: `pulumi up` first")
        index, entry = listed[product]
        where = f"management.endpoints[{index}] ({product})"
        host, _, port = str(entry.get("endpoint", "")).rpartition(":")
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
                raise UsageError(f"{where}.endpoint {entry.get('endpoint')!r} is not ADDRESS:PORT") from None
        if not port.isdigit() or int(port) != m.listen_port:
            raise UsageError(f"{where}.endpoint {entry.get('endpoint')!r}: its port is not {m.listen_port}")
        if entry.get("address") != management.endpoint_address(m, product):
            raise UsageError(f"{where}.address {entry.get('address')!r} is not "
                             f"{management.endpoint_address(m, product)}: `pulumi up` first")
        problem = wireguard.key_problem(str(entry.get("publicKey", "")))
        if problem:
            raise UsageError(f"{where}.publicKey {problem}")
        out.append(wireguard.RemoteEndpoint(product, host, int(port), entry["address"], entry["publicKey"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack")
    parser.add_argument("--stack-file", type=Path, help="read the config from this file instead")
    parser.add_argument("--name", required=True, help="the peer's name in management.peers")
    parser.add_argument("--public-key", help="the device's public key (`wg pubkey < KEY`), checked against "
                                             "the declared one")
    parser.add_argument("--key-file", help="where the device keeps its private key (default "
                                           "/etc/wireguard/wg-STACK.key); never read here")
    parser.add_argument("--outputs", metavar="FILE", help="the JSON of `pulumi stack output management "
                                                          "--json` (- for stdin) instead of running pulumi")
    args = parser.parse_args(argv)
    try:
        m, products = stack_management(args.stack, args.stack_file)
        peer = find_peer(m, args.name, args.public_key)
        key_file = args.key_file or f"/etc/wireguard/wg-{args.stack}.key"
        if problem := wireguard.key_file_problem(key_file):
            raise UsageError(f"--key-file {problem}")
        endpoints = remote_endpoints(m, products, read_outputs(args.stack, args.outputs))
        text = wireguard.render_client_conf(peer, m.network, endpoints, key_file)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
