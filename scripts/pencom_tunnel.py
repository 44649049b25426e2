"""Open the SSH tunnel the MinIO provider needs before `pulumi up` of a stack that holds Pencom:
a local port to MinIO's API on the storage node, through the edge node (the only one reachable).

    python scripts/pencom_tunnel.py STACK            # opens it in the background (ssh -f)
    python scripts/pencom_tunnel.py STACK --print    # prints the ssh command instead

Does nothing, successfully, when the stack holds no Pencom. The storage node's sshd permits
forwarding to that one address only.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.hostsetup import DEPLOY_USER  # noqa: E402
from stacks.pencom import PORTS, PencomConfig  # noqa: E402


def tunnel_command(stack: str) -> list[str] | None:
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    if "pencom" not in (config.get("platform:products") or []):
        return None
    cfg = PencomConfig.model_validate(config["platform:pencom"])
    edge, storage = cfg.nodes.edge, cfg.nodes.storage
    return ["ssh", "-f", "-N", "-o", "ExitOnForwardFailure=yes", "-o", "StrictHostKeyChecking=accept-new",
            "-J", f"{DEPLOY_USER}@{edge.public_address}:{edge.ssh_port}",
            "-L", f"{cfg.bucket.tunnel_port}:{storage.private_address}:{PORTS['minio']}",
            "-p", str(storage.ssh_port), f"{DEPLOY_USER}@{storage.private_address}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack")
    parser.add_argument("--print", action="store_true", help="print the command instead of running it")
    args = parser.parse_args()
    stack_file = ROOT / f"Pulumi.{args.stack}.yaml"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.stack) or not stack_file.is_file():
        print(f"error: no stack {args.stack!r}: {stack_file.name} does not exist in {ROOT}", file=sys.stderr)
        return 2
    command = tunnel_command(args.stack)
    if command is None:
        print(f"stack {args.stack} holds no Pencom: no tunnel needed", file=sys.stderr)
        return 0
    if args.print:
        print(shlex.join(command))
        return 0
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
