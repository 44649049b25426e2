"""A records for a product's public hostnames, on DigitalOcean DNS or Cloudflare."""

from __future__ import annotations

from typing import Optional, Sequence

import pulumi
import pulumi_cloudflare as cloudflare
import pulumi_digitalocean as do


def relative_name(host: str, zone: str) -> str:
    return "@" if host == zone else host[: -len(zone) - 1]


def a_records(
    prefix: str,
    *,
    provider: str,
    zone: str,
    hosts: Sequence[str],
    address: pulumi.Input[str],
    ttl: int,
    parent: pulumi.Resource,
    cloudflare_zone_id: Optional[str] = None,
) -> list[pulumi.Resource]:
    """One A record per host. Cloudflare records are DNS-only (not proxied): TLS terminates at
    our nginx with its own certificate, and the ACME HTTP challenge reaches it directly."""
    records: list[pulumi.Resource] = []
    for host in hosts:
        label = host.replace(".", "-")
        if provider == "digitalocean":
            records.append(do.DnsRecord(
                f"{prefix}-dns-{label}", domain=zone, type="A", name=relative_name(host, zone),
                value=address, ttl=ttl, opts=pulumi.ResourceOptions(parent=parent)))
        elif provider == "cloudflare":
            records.append(cloudflare.DnsRecord(
                f"{prefix}-dns-{label}", zone_id=cloudflare_zone_id, name=host, type="A",
                content=address, ttl=ttl, proxied=False,
                opts=pulumi.ResourceOptions(parent=parent)))
        else:
            raise ValueError(f"unknown DNS provider {provider}")
    return records
