"""What ``__main__.py`` runs: validate the whole stack config, then plan and provision each product."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_tls as tls

from components.do_monitoring import Destinations
from components import wireguard
from components.hostsetup import AdminAccess
from stacks import management, placeholders
from stacks.config import StackConfig, read_pulumi_config
from stacks.environment import Environment
from stacks.errors import CONFIG_NAMESPACE
from stacks.secret_keys import SSH_CA_SECRET
from stacks.provision import provision
from stacks.registry import PRODUCTS


@dataclass(frozen=True)
class BuildContext:
    """What provisioning a product's plan reads besides the plan: the environment's secrets,
    admin access and alert destinations (``stacks.provision_kinds``)."""

    environment: Environment
    stack: StackConfig
    _invokes: dict = field(default_factory=dict, compare=False, repr=False)

    def alert_destinations(self):
        """Where this environment's alerts go (Slack's webhook URL is a secret key)."""
        alerts = self.environment.alerts
        url = self.secret("alerts_slack_webhook_url") if alerts.slack_channel else None
        return Destinations(emails=alerts.emails, slack_channel=alerts.slack_channel, slack_url=url)

    def admin_access(self) -> AdminAccess:
        """Just-in-time SSH for every host: the public half of the stack's SSH certificate
        authority (``platform:ssh_ca_private_key``, one invoke per stack) and the principals
        that may log in as the admin account (``environment.ssh_principals``)."""
        # One getPublicKey invoke per program run (per context: synth runs several stacks in
        # one process), whichever products ask.
        if "ca" not in self._invokes:
            self._invokes["ca"] = tls.get_public_key_output(
                private_key_openssh=self.secret(SSH_CA_SECRET)).public_key_openssh
        return AdminAccess(ca_public_key=self._invokes["ca"],
                           principals=tuple(self.environment.ssh_principals))

    def secret(self, key: str) -> pulumi.Output[str]:
        """An external secret from ``pulumi config set --secret platform:<key>``."""
        return pulumi.Config(CONFIG_NAMESPACE).require_secret(key)


def main() -> None:
    config = read_pulumi_config()
    found = placeholders.check()  # raises under a real engine, before any resource exists
    if found:
        pulumi.log.warn(placeholders.warning(found))
    context = BuildContext(environment=config.environment, stack=config)
    mgmt = config.environment.management
    wireguard.management_network(
        f"{config.environment.name}-management", network=mgmt.network, listen_port=mgmt.listen_port,
        endpoints={p: management.endpoint_address(mgmt, p) for p in config.products},
        break_glass={"enabled": mgmt.break_glass.enabled, "reason": mgmt.break_glass.reason,
                     "expires": mgmt.break_glass.expires.isoformat() if mgmt.break_glass.expires else None})
    pulumi.export("environment", config.environment.name)
    # `synth diff` blocks stateful deletions in production stacks, whatever their name.
    pulumi.export("production", config.environment.is_production)
    pulumi.export("products", config.products)
    endpoints = {}
    for name in config.products:
        outputs = provision(context, PRODUCTS[name].plan(config.product(name), context.environment))
        pulumi.export(name, outputs)
        endpoints[name] = outputs["wireguard"]
    # Apart from the products' outputs, some of which are secret as a whole: an operator's client
    # config reads this one without --show-secrets (scripts/wg_client.py).
    pulumi.export("management", management.stack_output(mgmt, endpoints))
