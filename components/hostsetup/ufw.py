"""UFW, the on-prem hosts' firewall: the tier model's inbound rules (and waivers), locked
egress, and flows a host may never open."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from components.hostsetup.delivery import deliver_file



@dataclass(frozen=True)
class OutboundRule:
    """One allowed outbound flow from a host whose egress is locked down."""

    destination: str
    port: int | None = None
    protocol: str | None = None
    reason: str = ""
    interface: str | None = None
    """Only out through this interface (``ufw allow out on IFACE``), e.g. the host's container bridge."""


def render_ufw_commands(rules, waivers: dict[str, str] | None = None,
                        outbound: Sequence[OutboundRule] | None = None,
                        denied_outbound: Sequence[OutboundRule] = ()) -> str:
    """The UFW commands for a host's inbound rules, default-deny. ``waivers`` maps a rule's
    ``reason`` to a waiver name, written on its line so the policy pack can match it. With
    ``outbound``, outgoing traffic is denied too, except those flows. ``denied_outbound`` are
    flows the host itself may never open, denied before any allow (UFW matches in order): a
    destination only another node may reach, such as Oracle ECRS, on a host whose egress is
    otherwise open."""
    waivers = waivers or {}
    lines = ["ufw --force reset >/dev/null", "ufw default deny incoming",
             f"ufw default {'allow' if outbound is None else 'deny'} outgoing"]
    for out in denied_outbound:
        if out.port is None or out.destination == "any":
            raise ValueError(f"a denied outbound flow names its destination and port: {out}")
        lines.append(f"ufw deny out proto {out.protocol or 'tcp'} to {out.destination} port {out.port}"
                     f" comment '{out.reason.replace(chr(39), '')}'")
    for out in outbound or ():
        line = "ufw allow out"
        if out.interface:
            line += f" on {out.interface}"
        if out.protocol:
            line += f" proto {out.protocol}"
        line += f" to {out.destination}"
        if out.port is not None:
            line += f" port {out.port}"
        lines.append(line + f" comment '{out.reason.replace(chr(39), '')}'")
    for rule in rules:
        port = rule.port_range.replace("-", ":")
        sources = list(rule.cidrs) or ["any"]
        for source in sources:
            comment = rule.reason.replace("'", "")
            line = f"ufw allow proto {rule.protocol} from {source} to any port {port} comment '{comment}'"
            if rule.reason in waivers:
                line += f"  # waiver: {waivers[rule.reason]}"
            lines.append(line)
    lines.append("ufw --force enable >/dev/null")
    return "\n".join(lines) + "\n"


def ufw_section(rules, waivers: dict[str, str] | None = None,
                outbound: Sequence[OutboundRule] | None = None,
                denied_outbound: Sequence[OutboundRule] = ()) -> str:
    """Rules live in a file; they are re-applied when it changes or UFW is not active."""
    commands = render_ufw_commands(rules, waivers, outbound, denied_outbound)
    return "\n".join([
        "ensure_packages ufw",
        "apply_ufw() {",
        *[f"  {line}" for line in commands.splitlines()],
        "}",
        deliver_file("/etc/platform/ufw-rules.sh", "0600", "root:root", commands,
                     on_change="apply_ufw"),
        'if ! ufw status | grep -q "^Status: active"; then',
        "  apply_ufw",
        '  note_change "ufw enabled"',
        "fi",
    ])
