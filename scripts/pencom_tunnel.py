"""Open the SSH tunnel the MinIO provider needs before `pulumi up` of a stack that holds Pencom:
a local port to MinIO's API on the storage node, through the edge node (the only one reachable).

    python scripts/pencom_tunnel.py STACK            # opens it in the background (ssh -f)
    python scripts/pencom_tunnel.py STACK --print    # prints the ssh command instead

Does nothing, successfully, when the stack holds no Pencom. The storage node's sshd permits
forwarding to that one address only.

The jump to the edge goes where the program's own connections go
(``stacks.management.connect_address``): the edge's management address (the machine running
this is a WireGuard peer, and the edge's SSH answers only from the management network), or its
public address while break-glass is on. The stack file is read and validated by the program's
config boundary (``synth.stackfile.load_stack_config``): a file the program would refuse is
refused here, one line per problem, exit 2.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.hostsetup import DEPLOY_USER  # noqa: E402
from stacks import management  # noqa: E402
from stacks.pencom import PORTS  # noqa: E402
from synth.stackfile import StackFileError, load_stack_config  # noqa: E402


def tunnel_command(stack: str, stack_file: Path | None = None, root: Path = ROOT) -> list[str] | None:
    """The ``ssh`` command of the tunnel, or None when the stack holds no Pencom. Raises
    StackFileError when the stack file cannot be read or the config is invalid."""
    config = load_stack_config(stack, stack_file, root)
    if "pencom" not in config.products:
        return None
    cfg = config.product("pencom")
    edge, storage = cfg.nodes.edge, cfg.nodes.storage
    jump = management.connect_address(config.environment.management, "pencom", edge.public_address)
    return ["ssh", "-f", "-N", "-o", "ExitOnForwardFailure=yes", "-o", "StrictHostKeyChecking=accept-new",
            "-J", f"{DEPLOY_USER}@{jump}:{edge.ssh_port}",
            "-L", f"{cfg.bucket.tunnel_port}:{storage.private_address}:{PORTS['minio']}",
            "-p", str(storage.ssh_port), f"{DEPLOY_USER}@{storage.private_address}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack")
    parser.add_argument("--stack-file", type=Path, help="read the config from this file instead")
    parser.add_argument("--print", action="store_true", help="print the command instead of running it")
    args = parser.parse_args(argv)
    try:
        command = tunnel_command(args.stack, args.stack_file)
    except StackFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if command is None:
        print(f"stack {args.stack} holds no Pencom: no tunnel needed", file=sys.stderr)
        return 0
    if args.print:
        print(shlex.join(command))
        return 0
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
