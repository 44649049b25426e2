"""The ``environment`` section of a stack: the settings every product in the stack shares (its
name, whether it is production, the default region, the admin CIDRs, where alerts go), and
the rules that check it against the stack it configures."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Iterator, Literal

from pydantic import EmailStr, Field, model_validator

from stacks.management import Management
from stacks.production import PRODUCTION_NAMES, is_production_name
from validation.fields import AdminCidr, StrictModel
from validation.provider_lists import digitalocean
from validation.rules import Finding, RuleContext, rule

SshPrincipal = Annotated[str, Field(pattern=r"^[a-z][a-z0-9._-]{0,31}$")]
"""A principal in an SSH certificate and in sshd's AuthorizedPrincipalsFile (one a line: no
spaces or commas)."""

DO_REGIONS = tuple(digitalocean()["regions"])


class AlertDestinations(StrictModel):
    """Where alerts go. Secrets (a Slack webhook) live in their own secret config key."""

    emails: list[EmailStr] = Field(
        default_factory=list,
        description="email addresses that receive alerts; none means alerts only reach Slack",
    )
    slack_channel: str | None = Field(
        default=None,
        pattern=r"^#[a-z0-9_-]+$",
        description="Slack channel such as #ops-alerts; needs the secret key "
        "platform:alerts_slack_webhook_url",
    )

    @model_validator(mode="after")
    def _a_destination(self) -> "AlertDestinations":
        if not self.emails and not self.slack_channel:
            raise ValueError("alerts need at least one destination: emails or slack_channel")
        return self


class Environment(StrictModel):
    """Settings every product in the stack shares."""

    name: str = Field(
        pattern=r"^[a-z][a-z0-9-]{1,20}$",
        description="environment name used in resource names and tags, such as prod or staging",
    )
    production: bool | None = Field(
        default=None,
        description="whether stateful resources are protected and retained on delete; "
        "defaults to true when name is prod (or production, prod-*, *-prod, *-production) and must agree with it",
    )
    region: Literal[DO_REGIONS] = Field(  # type: ignore[valid-type]
        default="fra1", description="default DigitalOcean region slug for the products"
    )
    admin_cidrs: list[AdminCidr] = Field(
        min_length=1,
        description="office egress CIDRs: SSH answers from them only with management.break_glass on "
        "(a first deploy, an outage of the management network)",
    )
    alerts: AlertDestinations = Field(description="where alerts are sent (at least one destination)")
    ssh_principals: list[SshPrincipal] = Field(
        default_factory=lambda: ["oncall"],
        description="certificate principals that may log in as the admin account ops on every "
        "host, with a short-lived certificate from the stack's SSH CA (scripts/ssh_cert.py); "
        "an empty list lets no engineer in",
    )
    management: Management = Field(
        default_factory=Management,
        description="the management network: WireGuard on each product's entry host, whose SSH answers "
        "only from it (README, 'Administrative access')",
    )

    @property
    def is_production(self) -> bool:
        return self.production if self.production is not None else is_production_name(self.name)



@rule(Environment)
def _stack_identity(env, ctx: RuleContext) -> Iterator[Finding]:
    """The file is for stack ``ctx.stack``: a prod file saying ``staging`` would synthesize
    staging-named resources with nothing protected."""
    if ctx.stack is not None and env.name != ctx.stack:
        yield Finding(("name",), f"is {env.name!r} but this is the config of stack {ctx.stack!r}; "
                                 f"environment.name must be the stack's name")


@rule(Environment)
def _production_agrees(env, ctx: RuleContext) -> Iterator[Finding]:
    if env.production is not None and env.production != is_production_name(env.name):
        expected = is_production_name(env.name)
        yield Finding(("production",), f"is {str(env.production).lower()} but environment {env.name!r} is "
                                       f"{'a' if expected else 'not a'} production environment "
                                       f"({', '.join(PRODUCTION_NAMES)}, prod-*, *-prod, *-production); set it to "
                                       f"{str(expected).lower()} or remove it")


@rule(Environment)
def _someone_can_log_in(env, ctx: RuleContext) -> Iterator[Finding]:
    """A production stack names at least one SSH principal: with none, no engineer can log in to
    mend a host in an incident (only the deploy key can)."""
    if env.is_production and not env.ssh_principals:
        yield Finding(("ssh_principals",), "is empty in a production stack, so no engineer can log in with "
                                           "a certificate; name at least one principal (e.g. [oncall])")


@rule(Environment)
def _admin_cidrs_once(env, ctx: RuleContext) -> Iterator[Finding]:
    """Each admin CIDR once: a repeat adds nothing but a second firewall rule to keep in step."""
    first: dict[str, int] = {}
    for index, cidr in enumerate(env.admin_cidrs):
        key = str(ipaddress.ip_network(str(cidr), strict=False))
        if key in first:
            yield Finding(("admin_cidrs", index), f"{key} repeats admin_cidrs[{first[key]}]; keep one")
        else:
            first[key] = index
