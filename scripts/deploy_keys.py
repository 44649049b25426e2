"""Load each product's deploy key into the running ssh-agent before `pulumi up` of a stack.

    python scripts/deploy_keys.py STACK            # ssh-add every key the stack needs
    python scripts/deploy_keys.py STACK --names    # print the variables it reads, one a line

Every product has its own deploy key (``platform:<product>_ssh_private_key``, used by the remote
commands); the Docker provider and the Pencom tunnel reach hosts with the system ``ssh``, which
takes its keys from the agent. The key of product P comes from the environment variable
``P_SSH_PRIVATE_KEY`` (``KRO_SSH_PRIVATE_KEY``...; the deploy workflow maps repository secrets of
the same names). Keys go to ``ssh-add -`` on stdin, never on a command line or to disk.

Exit 2 (with the variables missing) when a product of the stack has no key; nothing is added then.
The stack file is read through the program's config boundary
(``synth.stackfile.load_stack_config``): a file the program would refuse is refused here, one
line per problem, exit 2.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synth.stackfile import StackFileError, load_stack_config  # noqa: E402


def key_variables(stack: str, stack_file: Path | None = None, root: Path = ROOT) -> list[str]:
    """``<PRODUCT>_SSH_PRIVATE_KEY`` for each product of the stack, in the file's order. Raises
    StackFileError when the stack file cannot be read or its config is invalid."""
    return [f"{product.upper()}_SSH_PRIVATE_KEY" for product in load_stack_config(stack, stack_file, root).products]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack")
    parser.add_argument("--names", action="store_true", help="print the variables read, then stop")
    parser.add_argument("--stack-file", type=Path, help="read the config from this file instead")
    args = parser.parse_args(argv)
    try:
        names = key_variables(args.stack, args.stack_file)
    except StackFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.names:
        print("\n".join(names))
        return 0
    missing = [n for n in names if not os.environ.get(n, "").strip()]
    if missing:
        print(f"error: stack {args.stack} needs {', '.join(missing)} (each product's deploy key; "
              "a repository secret of that name in CI)", file=sys.stderr)
        return 2
    if not os.environ.get("SSH_AUTH_SOCK"):
        print("error: no ssh-agent (SSH_AUTH_SOCK is unset); run `eval \"$(ssh-agent -s)\"` first",
              file=sys.stderr)
        return 2
    for name in names:
        key = os.environ[name].strip() + "\n"
        result = subprocess.run(["ssh-add", "-q", "-"], input=key, text=True, capture_output=True)
        if result.returncode != 0:
            # ssh-add's message names the problem (bad format, passphrase); never the key.
            print(f"error: ssh-add refused {name}: {result.stderr.strip()}", file=sys.stderr)
            return 2
        print(f"added {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
