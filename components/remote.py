"""Running rendered scripts on hosts over SSH, re-run only when their text changes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_command as command


@dataclass(frozen=True)
class SshTarget:
    """How to reach a host: directly, or through a bastion for hosts that are not internet-facing."""

    host: pulumi.Input[str]
    user: str
    private_key: pulumi.Input[str]
    port: int = 22
    bastion: Optional["SshTarget"] = None

    def connection(self) -> command.remote.ConnectionArgs:
        proxy = None
        if self.bastion is not None:
            proxy = command.remote.ProxyConnectionArgs(
                host=self.bastion.host, user=self.bastion.user,
                private_key=self.bastion.private_key, port=self.bastion.port,
            )
        return command.remote.ConnectionArgs(
            host=self.host, user=self.user, private_key=self.private_key, port=self.port,
            proxy=proxy, dial_error_limit=20, per_dial_timeout=30,
        )


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def run_script(
    name: str,
    target: SshTarget,
    script: pulumi.Input[str],
    *,
    parent: pulumi.Resource,
    depends_on: Sequence[pulumi.Resource] = (),
    environment: Optional[dict[str, pulumi.Input[str]]] = None,
) -> command.remote.Command:
    """One remote command that pipes ``script`` to ``sudo bash -s``.

    The script's hash is the only trigger, so it runs on create and again only when its text
    changes; the script is idempotent, so a re-run is safe. It travels on stdin, so nothing of
    it shows in the process list.
    """
    return command.remote.Command(
        name,
        connection=target.connection(),
        create="sudo -n bash -s",
        stdin=script,
        triggers=[pulumi.Output.from_input(script).apply(content_hash)],
        environment=environment,
        add_previous_output_in_env=False,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on)),
    )
