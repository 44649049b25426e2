"""Base classes and small value types shared by every config model."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$"


class StrictModel(BaseModel):
    """Rejects unknown keys, so a typo in a stack file is an error rather than a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"must be a CIDR such as 203.0.113.7/32 ({exc})") from None
    return str(network)


def _public_cidr_for_admins(value: str) -> str:
    network = ipaddress.ip_network(_cidr(value))
    if network.prefixlen < 8:
        raise ValueError(
            "an admin CIDR this broad opens SSH to much of the internet; list your office or VPN "
            "egress addresses (for example 203.0.113.7/32)"
        )
    return str(network)


Cidr = Annotated[str, AfterValidator(_cidr)]
AdminCidr = Annotated[str, AfterValidator(_public_cidr_for_admins)]
ResourceName = Annotated[str, Field(pattern=NAME_PATTERN)]

_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def _hostname(value: str) -> str:
    if not _HOSTNAME.match(value):
        raise ValueError("must be a lower-case fully qualified hostname such as api.example.com")
    return value


Hostname = Annotated[str, AfterValidator(_hostname)]


BootstrapUser = Annotated[str | None, Field(
    pattern=r"^[a-z_][a-z0-9_-]*$",
    description="existing sudo user (not root) that accepts the deploy key; set it and the first run "
                "creates the deploy user; unset, the deploy user must exist")]
