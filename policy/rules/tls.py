"""TLS policies at Cloudflare's edge: the zone's SSL mode, minimum version and HTTPS, and R2
custom domains. The nginx front ends are in ``nginx_configs``, connection strings in
``tls_connections``, TLS between the platform's own hosts in ``tls_internal``."""

from __future__ import annotations

from policy.rules.base import MANDATORY, HIGH, MEDIUM, T_CF_ZONE_SETTING, T_R2_DOMAIN, Case, resource_policy
from policy.rules.fixtures import doc, res
from policy.rules.nginx_configs import MOZILLA

def _check_zone_tls(props, args):
    setting, value = props.get("settingId"), props.get("value")
    if setting == "ssl" and value != "strict":
        yield f"Cloudflare zone SSL mode is {value!r}; set it to strict (full, with validation)"
    if setting == "min_tls_version" and str(value) not in ("1.2", "1.3"):
        yield f"Cloudflare zone minimum TLS version is {value}; set 1.2 or newer"
    if setting == "always_use_https" and value != "on":
        yield "Cloudflare zone does not always use HTTPS; set always_use_https on"


resource_policy(
    "cloudflare-zonesetting-configure-strict-tls",
    "Cloudflare zones use SSL mode strict, a minimum of TLS 1.2 and always HTTPS.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["Cloudflare docs: SSL/TLS encryption modes (Full strict)", *MOZILLA],
    fix="Set zone settings ssl=strict, min_tls_version=1.2, always_use_https=on.",
    types=[T_CF_ZONE_SETTING], check=_check_zone_tls,
    cases=Case(doc(res(T_CF_ZONE_SETTING, "ssl", {"settingId": "ssl", "value": "strict"}),
                   res(T_CF_ZONE_SETTING, "tls", {"settingId": "min_tls_version", "value": "1.2"})),
               [(doc(res(T_CF_ZONE_SETTING, "ssl", {"settingId": "ssl", "value": "flexible"}),
                     res(T_CF_ZONE_SETTING, "tls", {"settingId": "min_tls_version", "value": "1.0"})),
                 ["Cloudflare zone SSL mode is 'flexible'; set it to strict (full, with validation)",
                  "Cloudflare zone minimum TLS version is 1.0; set 1.2 or newer"])]))


def _check_r2_domain_tls(props, args):
    if str(props.get("minTls") or "1.0") not in ("1.2", "1.3"):
        yield f"R2 custom domain {props.get('domain')} allows TLS below 1.2; set min_tls to 1.2"


resource_policy(
    "cloudflare-r2customdomain-configure-min-tls",
    "R2 custom domains require TLS 1.2 or newer.",
    level=MANDATORY, severity=MEDIUM, category="tls",
    sources=["Cloudflare R2 docs: custom domains (min_tls)", *MOZILLA],
    fix="Set min_tls to 1.2.",
    types=[T_R2_DOMAIN], check=_check_r2_domain_tls,
    cases=Case(doc(res(T_R2_DOMAIN, "d", {"domain": "b.example.com", "minTls": "1.2"})),
               [(doc(res(T_R2_DOMAIN, "d", {"domain": "b.example.com", "minTls": "1.0"})),
                 ["R2 custom domain b.example.com allows TLS below 1.2; set min_tls to 1.2"])]))
