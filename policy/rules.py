"""The CrossGuard policies. Each is a ``pulumi_policy`` policy object; ``POLICIES`` is the pack.

The rules read only what resources carry (their inputs, options and dependencies) and use the
standard library: they do not import the program's tier module, so a bug there is caught here.
Tiers are read from what the program writes on resources: a DigitalOcean Firewall's name ends in
its tier (``kro-prod-edge``), droplets carry ``tier-<tier>`` tags, containers a
``platform.tier`` label.

Names follow ``<provider>-<resource>-<verb>-<thing>`` with the verb disallow, enable or configure.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

from pulumi_policy import (EnforcementLevel, PolicyConfigSchema, ReportViolation,
                           ResourceValidationArgs, ResourceValidationPolicy, Severity,
                           StackValidationArgs, StackValidationPolicy)

MANDATORY, ADVISORY = EnforcementLevel.MANDATORY, EnforcementLevel.ADVISORY
TIERS = ("edge", "app", "data", "mgmt")
WEB_PORTS = {80, 443}
# Ports that must never face the internet, with what listens there.
SENSITIVE_PORTS = {
    22: "SSH", 5432: "Postgres", 25060: "managed Postgres", 25061: "managed Valkey/Redis",
    27017: "MongoDB", 6379: "Redis", 9000: "MinIO", 9001: "MinIO console",
    9090: "Prometheus", 9093: "Alertmanager", 9100: "node-exporter", 9115: "blackbox exporter",
    8080: "cAdvisor", 2375: "Docker API", 2376: "Docker API",
}
DATASTORE_IMAGES = re.compile(r"(^|/)(postgres|pgvector|mongo|redis|valkey|minio)[:@/-]")
SECRET_NAME = re.compile(r"(password|passwd|secret|token|api_?key|private_?key|access_?key|dsn)",
                         re.IGNORECASE)
URL_WITH_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^\s:/@]+:[^\s@/]+@", re.IGNORECASE)
POSTGRES_URL = re.compile(r"postgres(?:ql)?://[^\s\"']+", re.IGNORECASE)
SECRET_MASK = "[secret]"

DO = "digitalocean:index/"
T_FIREWALL = DO + "firewall:Firewall"
T_DROPLET = DO + "droplet:Droplet"
T_CLUSTER = DO + "databaseCluster:DatabaseCluster"
T_DB_FIREWALL = DO + "databaseFirewall:DatabaseFirewall"
T_LB = DO + "loadBalancer:LoadBalancer"
T_SPACES = DO + "spacesBucket:SpacesBucket"
T_APP = DO + "app:App"
T_CONTAINER = "docker:index/container:Container"
T_IMAGE = "docker:index/remoteImage:RemoteImage"
T_COMMAND = "command:remote:Command"
T_MINIO_BUCKET = "minio:index/s3Bucket:S3Bucket"
T_MINIO_VERSIONING = "minio:index/s3BucketVersioning:S3BucketVersioning"
T_MINIO_POLICY = "minio:index/s3BucketPolicy:S3BucketPolicy"
T_R2 = "cloudflare:index/r2Bucket:R2Bucket"
T_R2_DOMAIN = "cloudflare:index/r2CustomDomain:R2CustomDomain"
T_R2_MANAGED_DOMAIN = "cloudflare:index/r2ManagedDomain:R2ManagedDomain"
T_CF_ZONE_SETTING = "cloudflare:index/zoneSetting:ZoneSetting"
T_R2_BACKUP = "platform:components:R2Backup"
STATEFUL_TYPES = (T_DROPLET, T_CLUSTER, DO + "databaseDb:DatabaseDb", DO + "databaseUser:DatabaseUser",
                  T_SPACES, T_MINIO_BUCKET, T_R2, DO + "vpc:Vpc", DO + "volume:Volume")


@dataclass(frozen=True)
class PolicyInfo:
    """Catalog facts about a policy that the SDK object does not hold."""

    category: str
    anchor: str


CATALOG: dict[str, PolicyInfo] = {}


# --- helpers shared by the rules -----------------------------------------------------------

def is_world(cidr: str) -> bool:
    try:
        return ipaddress.ip_network(str(cidr), strict=False).prefixlen < 8
    except ValueError:
        return False


def port_range(text: Any) -> tuple[int, int] | None:
    """DigitalOcean port_range: "22", "8000-9000", "1-65535" or "all"."""
    if text is None:
        return None
    text = str(text).strip()
    if text in ("all", "0", ""):
        return (1, 65535)
    low, _, high = text.partition("-")
    try:
        return (int(low), int(high or low))
    except ValueError:
        return None


def ports_in(range_: tuple[int, int], ports: Iterable[int]) -> list[int]:
    return sorted(p for p in ports if range_[0] <= p <= range_[1])


def firewall_tier(name: Any) -> str | None:
    suffix = str(name or "").rsplit("-", 1)[-1]
    return suffix if suffix in TIERS else None


def labels_of(props: Mapping[str, Any]) -> dict[str, str]:
    return {str(l.get("label")): str(l.get("value")) for l in props.get("labels") or []
            if isinstance(l, Mapping)}


def walk_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from walk_strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from walk_strings(item, f"{path}[{index}]")


def image_is_pinned(image: str) -> bool:
    if re.search(r"@sha256:[a-f0-9]{64}$", image):
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and last.rsplit(":", 1)[1] not in ("", "latest")


def nginx_configs(props: Mapping[str, Any]) -> list[str]:
    """nginx.conf documents a remote script writes (heredoc bodies that hold an http block)."""
    text = str(props.get("stdin") or "")
    bodies = re.findall(r"<<'PLATFORM_EOF'[^\n]*\n(.*?)\nPLATFORM_EOF", text, re.DOTALL)
    return [b for b in bodies if re.search(r"^http \{", b, re.MULTILINE)]


def file_bodies(props: Mapping[str, Any], path_pattern: str) -> list[str]:
    text = str(props.get("stdin") or "")
    return re.findall(r"put_file (" + path_pattern + r") [^\n]*<<'PLATFORM_EOF'[^\n]*\n(.*?)\nPLATFORM_EOF",
                      text, re.DOTALL)


def stack_of(urn: str) -> str:
    parts = urn.split("::")
    return parts[0].rsplit(":", 1)[-1] if parts else ""


def is_production(urn: str, config: Mapping[str, Any]) -> bool:
    pattern = config.get("productionStacks", r"^(.+-)?prod$")
    return re.match(pattern, stack_of(urn)) is not None


# --- building policies ----------------------------------------------------------------------

Check = Callable[[Mapping[str, Any], ResourceValidationArgs], Iterable[str]]


def resource_policy(name: str, description: str, *, level: EnforcementLevel, severity: Severity,
                    category: str, anchor: str, types: Sequence[str], check: Check,
                    config_schema: Optional[PolicyConfigSchema] = None) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if args.resource_type not in types:
            return
        for message in check(args.props, args):
            report(message, args.urn)

    CATALOG[name] = PolicyInfo(category=category, anchor=anchor)
    return ResourceValidationPolicy(name=name, description=description, enforcement_level=level,
                                    severity=severity, validate=validate,
                                    config_schema=config_schema)


def stack_policy(name: str, description: str, *, level: EnforcementLevel, severity: Severity,
                 category: str, anchor: str,
                 check: Callable[[StackValidationArgs], Iterable[tuple[str, Optional[str]]]],
                 config_schema: Optional[PolicyConfigSchema] = None) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        for message, urn in check(args):
            report(message, urn)

    CATALOG[name] = PolicyInfo(category=category, anchor=anchor)
    return StackValidationPolicy(name=name, description=description, enforcement_level=level,
                                 severity=severity, validate=validate, config_schema=config_schema)


# --- network ----------------------------------------------------------------------------------

def _world_rules(props):
    for rule in props.get("inboundRules") or []:
        sources = list(rule.get("sourceAddresses") or [])
        if any(is_world(s) for s in sources):
            yield rule, port_range(rule.get("portRange")) if rule.get("protocol") != "icmp" else None


def _check_world_only_web_on_edge(props, args):
    tier = firewall_tier(props.get("name"))
    for rule, range_ in _world_rules(props):
        if range_ is None:
            continue
        if tier != "edge":
            yield (f"firewall {props.get('name')} ({tier or 'no tier'}) opens port "
                   f"{rule.get('portRange')} to the internet; only edge-tier firewalls may face it")
        elif not set(range(range_[0], min(range_[1], 65535) + 1)) <= WEB_PORTS:
            yield (f"firewall {props.get('name')} opens port {rule.get('portRange')} to the "
                   "internet; an edge firewall opens only 80 and 443")


def _check_sensitive_ports(props, args):
    for rule, range_ in _world_rules(props):
        if range_ is None:
            continue
        for port in ports_in(range_, SENSITIVE_PORTS):
            yield (f"firewall {props.get('name')} opens {SENSITIVE_PORTS[port]} ({port}) to the "
                   "internet; allow only admin CIDRs or internal peers")


def _check_database_in_vpc(props, args):
    if not props.get("privateNetworkUuid"):
        yield f"database cluster {props.get('name')} has no private_network_uuid; put it in a VPC"


def _check_trusted_sources(props, args):
    rules = props.get("rules") or []
    if not rules:
        yield "the database firewall has no trusted sources"
    for rule in rules:
        kind, value = rule.get("type"), str(rule.get("value"))
        if kind == "ip_addr" and is_world(value):
            yield f"the database firewall admits {value}, the whole internet"
        elif kind == "ip_addr" and not _private_or_admin(value, args.get_config()):
            yield (f"the database firewall admits public address {value}, which is not an admin "
                   "CIDR; admit app-tier droplets, apps or tags instead")
        elif kind == "tag" and value not in ("tier-app", "tier-mgmt"):
            yield f"the database firewall trusts tag {value}; only tier-app or tier-mgmt may reach data"


def _private_or_admin(cidr: str, config: Mapping[str, Any]) -> bool:
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    if network.is_private:
        return True
    return any(network.subnet_of(ipaddress.ip_network(a, strict=False))
               for a in config.get("adminCidrs", []) if "/" in str(a))


def _check_container_bind(props, args):
    tier = labels_of(props).get("platform.tier")
    for port in props.get("ports") or []:
        ip = port.get("ip") or "0.0.0.0"
        if ip in ("0.0.0.0", "::") and tier != "edge":
            yield (f"container publishes port {port.get('external')} on {ip} but its tier is "
                   f"{tier or 'unset'}; Docker-published ports bypass the host firewall, so only "
                   "edge containers may listen on all interfaces")


# --- TLS --------------------------------------------------------------------------------------

def _check_nginx_redirect(props, args):
    for conf in nginx_configs(props):
        for block in re.findall(r"server \{(.*?)\n  \}", conf, re.DOTALL):
            if " ssl" in block.split(";", 1)[0]:
                continue
            if "acme-challenge" in block and "return 301 https://" not in block:
                yield "an nginx HTTP server answers without redirecting to HTTPS"
            elif "return 301 https://" not in block and "listen 127.0.0.1" not in block:
                yield "an nginx HTTP server answers without redirecting to HTTPS"


def _check_nginx_tls(props, args):
    for conf in nginx_configs(props):
        protocols = re.findall(r"ssl_protocols ([^;]+);", conf)
        if not protocols:
            yield "nginx config sets no ssl_protocols; set TLSv1.2 TLSv1.3"
        for value in protocols:
            old = [p for p in value.split() if p in ("SSLv3", "TLSv1", "TLSv1.1")]
            if old:
                yield f"nginx allows {', '.join(old)}; allow TLSv1.2 and TLSv1.3 only"
        ssl_servers = conf.count(" ssl;") + conf.count(" ssl default_server")
        hsts = conf.count("Strict-Transport-Security")
        named = len(re.findall(r"listen \d+ ssl;", conf))
        if named and hsts < named:
            yield "an nginx HTTPS server sends no Strict-Transport-Security header"
        if ssl_servers == 0:
            yield "nginx config terminates no TLS"


def _check_lb_redirect(props, args):
    if not props.get("redirectHttpToHttps"):
        yield f"load balancer {props.get('name')} does not redirect HTTP to HTTPS"


def _check_app_https(props, args):
    spec = props.get("spec") or {}
    for rule in ((spec.get("ingress") or {}).get("rules") or []):
        redirect = rule.get("redirect") or {}
        if redirect and str(redirect.get("scheme", "https")).lower() != "https":
            yield "an App Platform ingress rule redirects to a non-HTTPS scheme"


LOOPBACK_URL = re.compile(r"^postgres(?:ql)?://(?:[^@/]*@)?(?:127\.\d+\.\d+\.\d+|localhost|\[::1\])[:/]")


def _check_postgres_urls(props, args):
    for path, text in walk_strings(props):
        for url in POSTGRES_URL.findall(text):
            if "sslmode=verify-full" not in url and not LOOPBACK_URL.match(url):
                yield f"{path} carries a Postgres URL without sslmode=verify-full"


def _check_zone_tls(props, args):
    setting, value = props.get("settingId"), props.get("value")
    if setting == "ssl" and value != "strict":
        yield f"Cloudflare zone SSL mode is {value!r}; set it to strict (full, with validation)"
    if setting == "min_tls_version" and str(value) not in ("1.2", "1.3"):
        yield f"Cloudflare zone minimum TLS version is {value}; set 1.2 or newer"


def _check_r2_domain_tls(props, args):
    if str(props.get("minTls") or "1.0") not in ("1.2", "1.3"):
        yield f"R2 custom domain {props.get('domain')} allows TLS below 1.2; set min_tls to 1.2"


# --- data -------------------------------------------------------------------------------------

def _check_bucket_private(props, args):
    if args.resource_type == T_SPACES and props.get("acl", "private") != "private":
        yield f"Spaces bucket {props.get('name')} has acl {props.get('acl')}; buckets are private"
    if args.resource_type == T_MINIO_BUCKET and props.get("acl", "private") != "private":
        yield f"MinIO bucket {props.get('bucket')} has acl {props.get('acl')}; buckets are private"
    if args.resource_type == T_MINIO_POLICY and '"Principal":"*"' in re.sub(r"\s", "", str(props.get("policy"))):
        yield "a MinIO bucket policy grants access to everyone (Principal *)"
    if args.resource_type == T_R2_MANAGED_DOMAIN and props.get("enabled"):
        yield "the R2 bucket's public r2.dev URL is enabled; keep backups private"


def _check_bucket_force_destroy(props, args):
    if props.get("forceDestroy"):
        yield f"bucket {props.get('name') or props.get('bucket')} sets force_destroy; a delete would erase its objects"


def _check_spaces_versioning(props, args):
    if not (props.get("versioning") or {}).get("enabled"):
        yield f"Spaces bucket {props.get('name')} is not versioned"


def _check_app_secret_env(props, args):
    spec = props.get("spec") or {}
    holders = [("app", spec)] + [(c.get("name"), c) for kind in ("services", "workers", "jobs",
                                                                 "staticSites", "functions")
                                 for c in spec.get(kind) or []]
    for owner, holder in holders:
        for env in holder.get("envs") or []:
            key = str(env.get("key", ""))
            if SECRET_NAME.search(key) and env.get("type") != "SECRET":
                yield f"App env var {key} of {owner} looks secret but is not type SECRET"


def _check_plaintext_secrets(props, args):
    secret_inputs = getattr(args, "secret_inputs", None)
    if secret_inputs is None:
        args.not_applicable("the engine unwraps secrets before policies see them; "
                            "python -m synth STACK --policy checks this rule on every PR")
    for path, text in walk_strings({k: v for k, v in props.items() if k not in secret_inputs}):
        if text == SECRET_MASK:
            continue
        if "BEGIN" in text and "PRIVATE KEY" in text:
            yield f"{path} holds a private key in plain text; pass it as a secret"
        elif URL_WITH_CREDENTIALS.search(text):
            yield f"{path} holds a URL with credentials in plain text; pass it as a secret"
        elif re.match(r"^[A-Z0-9_]+=.+", text) and SECRET_NAME.search(text.split("=", 1)[0]):
            yield f"{path} sets {text.split('=', 1)[0]} in plain text; pass it as a secret"
        elif SECRET_NAME.search(path.rsplit(".", 1)[-1]) and text and not path.startswith("triggers"):
            if args.resource_type not in (T_COMMAND,) and not path.endswith(("Name", "name", "Id", "id")):
                yield f"{path} looks like a secret and is plain text; pass it as a secret"


# --- containers -------------------------------------------------------------------------------

def _check_privileged(props, args):
    if props.get("privileged"):
        yield "the container is privileged; it would own the host"


def _check_limits(props, args):
    if not props.get("memory"):
        yield "the container has no memory limit"
    if not props.get("cpus") and not props.get("cpuQuota"):
        yield "the container has no CPU limit"


def _check_healthcheck(props, args):
    tests = (props.get("healthcheck") or {}).get("tests") or []
    if not tests or tests[0] == "NONE":
        yield "the container has no healthcheck"


def _check_image_pinned(props, args):
    image = props.get("name") if args.resource_type == T_IMAGE else props.get("image")
    if isinstance(image, str) and not image.startswith("sha256:") and not image_is_pinned(image):
        yield f"image {image} is not pinned; use a version tag (not latest) or an @sha256 digest"


def _check_non_root(props, args):
    user = str(props.get("user") or "")
    if user in ("", "root", "0", "0:0") or user.startswith(("root:", "0:")):
        yield "the container runs as the image's default user (often root); set user"


def _check_host_access(props, args):
    for volume in props.get("volumes") or []:
        if str(volume.get("hostPath", "")).rstrip("/") in ("/var/run/docker.sock", "/run/docker.sock"):
            yield "the container mounts the Docker socket, which gives it the host"
        if str(volume.get("hostPath", "")) == "/":
            yield "the container mounts the host's root filesystem"
    for key, label in (("networkMode", "network"), ("pidMode", "PID"), ("ipcMode", "IPC"),
                       ("usernsMode", "user")):
        if props.get(key) == "host":
            yield f"the container shares the host's {label} namespace"


def _check_no_new_privileges(props, args):
    if "no-new-privileges:true" not in (props.get("securityOpts") or []) and \
            "no-new-privileges" not in (props.get("securityOpts") or []):
        yield "the container does not set no-new-privileges"


def _check_log_rotation(props, args):
    opts = props.get("logOpts") or {}
    if props.get("logDriver", "json-file") in ("json-file", "local") and "max-size" not in opts:
        yield "the container's logs do not rotate; set log_opts max-size and max-file"


# --- hosts ------------------------------------------------------------------------------------

def _check_droplet_keys(props, args):
    if not props.get("sshKeys"):
        yield f"droplet {props.get('name')} has no SSH keys; it would get a root password by email"


def _check_sshd(props, args):
    for _, body in file_bodies(props, r"/etc/ssh/sshd_config\.d/[^ ]+"):
        settings = {line.split()[0].lower(): line.split(None, 1)[1].strip()
                    for line in body.splitlines() if line.strip() and not line.startswith("#")
                    and len(line.split()) > 1}
        if settings.get("permitrootlogin") != "no":
            yield "sshd config does not set PermitRootLogin no"
        if settings.get("passwordauthentication") != "no":
            yield "sshd config does not set PasswordAuthentication no"
        if not settings.get("maxauthtries", "").isdigit() or int(settings["maxauthtries"]) > 6:
            yield "sshd config sets no MaxAuthTries limit of 6 or fewer"


def _check_ufw(props, args):
    text = str(props.get("stdin") or "")
    if re.search(r"\bufw\b", text) and "ufw default deny incoming" not in text:
        yield "a UFW script does not deny incoming traffic by default"


# --- stack-wide -------------------------------------------------------------------------------

def _by_type(args: StackValidationArgs, type_: str):
    return [r for r in args.resources if r.resource_type == type_]


def _check_droplets_firewalled(args: StackValidationArgs):
    guarded = {d.urn for f in _by_type(args, T_FIREWALL) for d in f.dependencies
               if d.resource_type == T_DROPLET}
    for droplet in _by_type(args, T_DROPLET):
        if droplet.urn not in guarded:
            yield f"droplet {droplet.name} is behind no DigitalOcean Firewall", droplet.urn


def _check_one_db_firewall(args: StackValidationArgs):
    counts: dict[str, int] = {}
    for firewall in _by_type(args, T_DB_FIREWALL):
        for dep in firewall.dependencies:
            if dep.resource_type == T_CLUSTER:
                counts[dep.urn] = counts.get(dep.urn, 0) + 1
    for cluster in _by_type(args, T_CLUSTER):
        count = counts.get(cluster.urn, 0)
        if count != 1:
            yield (f"database cluster {cluster.name} has {count} DatabaseFirewalls; exactly one "
                   "keeps its trusted sources in one place"), cluster.urn


def _check_protected(args: StackValidationArgs):
    for resource in args.resources:
        if resource.resource_type in STATEFUL_TYPES and is_production(resource.urn, args.get_config()):
            if not resource.opts.protect:
                yield (f"{resource.resource_type.rsplit(':', 1)[-1]} {resource.name} holds state "
                       "in a production stack and is not protected"), resource.urn


def _datastores(args: StackValidationArgs):
    for cluster in _by_type(args, T_CLUSTER):
        if cluster.props.get("engine") in ("pg", "mongodb", "mysql"):
            yield cluster
    for container in _by_type(args, T_CONTAINER):
        if labels_of(container.props).get("platform.tier") == "data":
            yield container


def _check_backups(args: StackValidationArgs):
    covered = {str(source) for b in _by_type(args, T_R2_BACKUP)
               if b.props.get("restoreTest") for source in [b.props.get("source")]}
    for store in _datastores(args):
        if store.urn not in covered and store.name not in covered:
            yield (f"datastore {store.name} has no R2Backup with a restore test"), store.urn


def _check_reachability(args: StackValidationArgs):
    """The stack's flows from the internet and into the data tier, from the rules resources
    carry, checked against the tier model; a named waiver in config excuses one flow."""
    waivers = {w.get("name") for w in args.get_config().get("waivers", []) if isinstance(w, Mapping)}
    droplets = {d.urn: d for d in _by_type(args, T_DROPLET)}
    for firewall in _by_type(args, T_FIREWALL):
        tier = firewall_tier(firewall.props.get("name"))
        for rule, range_ in _world_rules(firewall.props):
            if range_ and (tier != "edge" or not set(range(range_[0], range_[1] + 1)) <= WEB_PORTS):
                yield (f"internet -> {firewall.props.get('name')} ({tier}) on "
                       f"{rule.get('portRange')}: only the edge tier on 80/443 faces the internet"), firewall.urn
    for db_firewall in _by_type(args, T_DB_FIREWALL):
        for rule in db_firewall.props.get("rules") or []:
            if rule.get("type") == "droplet":
                for dep in db_firewall.dependencies:
                    if dep.urn in droplets:
                        tags = set(dep.props.get("tags") or [])
                        if not tags & {"tier-app", "tier-mgmt"}:
                            yield (f"{dep.name} ({', '.join(sorted(tags)) or 'untagged'}) -> data "
                                   "tier: only app and mgmt tiers reach data"), db_firewall.urn
            elif rule.get("type") == "ip_addr" and is_world(str(rule.get("value"))):
                yield "internet -> data tier through a database firewall", db_firewall.urn
    for container in _by_type(args, T_CONTAINER):
        tier = labels_of(container.props).get("platform.tier")
        for port in container.props.get("ports") or []:
            if (port.get("ip") or "0.0.0.0") in ("0.0.0.0", "::") and tier != "edge":
                yield (f"internet -> {container.name} ({tier}) on {port.get('external')}: "
                       "published on all interfaces"), container.urn
    for command in _by_type(args, T_COMMAND):
        for line in str(command.props.get("stdin") or "").splitlines():
            match = re.search(r"ufw allow (?:in )?(?:proto \w+ )?from (\S+) to \S+ port (\S+)", line)
            if not match:
                continue
            source, ports = match.group(1), match.group(2)
            waiver = re.search(r"# waiver: ([\w-]+)", line)
            if (source in ("any", "0.0.0.0/0") or is_world(source)) and not \
                    set(int(p) for p in re.findall(r"\d+", ports)) <= WEB_PORTS:
                if not (waiver and waiver.group(1) in waivers):
                    yield f"internet -> {command.name} on {ports} through UFW", command.urn


WAIVER_SCHEMA = PolicyConfigSchema(properties={
    "waivers": {"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string"}, "reason": {"type": "string"}}, "required": ["name", "reason"]}},
})
ADMIN_SCHEMA = PolicyConfigSchema(properties={
    "adminCidrs": {"type": "array", "items": {"type": "string"}}})
PRODUCTION_SCHEMA = PolicyConfigSchema(properties={"productionStacks": {"type": "string"}})

H, C, M, L = Severity.HIGH, Severity.CRITICAL, Severity.MEDIUM, Severity.LOW
CONTAINER_TYPES = [T_CONTAINER]

POLICIES = [
    # network
    resource_policy("digitalocean-firewall-disallow-public-non-web",
                    "Only edge-tier firewalls are open to the internet, and only on ports 80 and 443.",
                    level=MANDATORY, severity=C, category="network", anchor="Checkov CKV_DIO_4; Trivy AVD-DIG-0001",
                    types=[T_FIREWALL], check=_check_world_only_web_on_edge),
    resource_policy("digitalocean-firewall-disallow-public-admin-ports",
                    "SSH, database, cache and metrics ports are never open to the internet.",
                    level=MANDATORY, severity=C, category="network", anchor="CIS Controls 4.4; Trivy AVD-DIG-0001",
                    types=[T_FIREWALL], check=_check_sensitive_ports),
    stack_policy("digitalocean-droplet-enable-firewall",
                 "Every droplet sits behind a DigitalOcean Firewall.",
                 level=MANDATORY, severity=H, category="network", anchor="Checkov CKV_DIO_4",
                 check=_check_droplets_firewalled),
    stack_policy("digitalocean-databasecluster-enable-single-firewall",
                 "Every managed database cluster has exactly one DatabaseFirewall.",
                 level=MANDATORY, severity=H, category="network", anchor="DigitalOcean trusted sources",
                 check=_check_one_db_firewall),
    resource_policy("digitalocean-databasefirewall-disallow-untrusted-sources",
                    "A database firewall trusts only app-tier or mgmt-tier clients, never the internet.",
                    level=MANDATORY, severity=C, category="network", anchor="DigitalOcean trusted sources",
                    types=[T_DB_FIREWALL], check=_check_trusted_sources, config_schema=ADMIN_SCHEMA),
    resource_policy("digitalocean-databasecluster-enable-vpc",
                    "Every managed database cluster sits in a VPC.",
                    level=MANDATORY, severity=H, category="network", anchor="DigitalOcean VPC best practice",
                    types=[T_CLUSTER], check=_check_database_in_vpc),
    resource_policy("docker-container-disallow-public-bind-outside-edge",
                    "Containers outside the edge tier never publish ports on all interfaces.",
                    level=MANDATORY, severity=C, category="network", anchor="CIS Docker 5.13",
                    types=CONTAINER_TYPES, check=_check_container_bind),
    stack_policy("platform-stack-configure-tier-reachability",
                 "From the internet only the edge tier is reachable, and the data tier only from app and mgmt.",
                 level=MANDATORY, severity=C, category="network", anchor="Kredete network tiers",
                 check=_check_reachability, config_schema=WAIVER_SCHEMA),
    # TLS
    resource_policy("command-nginx-enable-https-redirect",
                    "The nginx ingress answers plain HTTP with a redirect to HTTPS, except the ACME challenge path.",
                    level=MANDATORY, severity=H, category="tls", anchor="Mozilla Web Security",
                    types=[T_COMMAND], check=_check_nginx_redirect),
    resource_policy("command-nginx-configure-modern-tls",
                    "The nginx ingress serves TLS 1.2 or newer only and sends HSTS on every HTTPS server.",
                    level=MANDATORY, severity=H, category="tls", anchor="Mozilla TLS intermediate 5.7",
                    types=[T_COMMAND], check=_check_nginx_tls),
    resource_policy("digitalocean-loadbalancer-enable-https-redirect",
                    "DigitalOcean load balancers redirect HTTP to HTTPS.",
                    level=MANDATORY, severity=H, category="tls", anchor="DigitalOcean LB docs",
                    types=[T_LB], check=_check_lb_redirect),
    resource_policy("digitalocean-app-enable-https-redirect",
                    "App Platform ingress never redirects to plain HTTP.",
                    level=MANDATORY, severity=H, category="tls", anchor="Mozilla Web Security",
                    types=[T_APP], check=_check_app_https),
    resource_policy("platform-connection-configure-postgres-verify-full",
                    "Every Postgres connection URL that leaves the host verifies the server with sslmode=verify-full.",
                    level=MANDATORY, severity=H, category="tls", anchor="PostgreSQL libpq SSL docs",
                    types=[T_CONTAINER, T_APP, T_COMMAND], check=_check_postgres_urls),
    resource_policy("cloudflare-zonesetting-configure-strict-tls",
                    "Cloudflare zones use SSL mode strict and a minimum of TLS 1.2.",
                    level=MANDATORY, severity=H, category="tls", anchor="Cloudflare SSL/TLS docs",
                    types=[T_CF_ZONE_SETTING], check=_check_zone_tls),
    resource_policy("cloudflare-r2customdomain-configure-min-tls",
                    "R2 custom domains require TLS 1.2 or newer.",
                    level=MANDATORY, severity=M, category="tls", anchor="Cloudflare R2 docs",
                    types=[T_R2_DOMAIN], check=_check_r2_domain_tls),
    # data
    resource_policy("platform-bucket-disallow-public-access",
                    "Spaces, MinIO and R2 buckets are private.",
                    level=MANDATORY, severity=C, category="data", anchor="Checkov CKV_DIO_3",
                    types=[T_SPACES, T_MINIO_BUCKET, T_MINIO_POLICY, T_R2_MANAGED_DOMAIN],
                    check=_check_bucket_private),
    resource_policy("platform-bucket-disallow-force-destroy",
                    "Buckets never set force_destroy, so deleting one cannot erase its objects.",
                    level=MANDATORY, severity=H, category="data", anchor="Pulumi state safety",
                    types=[T_SPACES, T_MINIO_BUCKET], check=_check_bucket_force_destroy),
    resource_policy("digitalocean-spacesbucket-enable-versioning",
                    "Spaces buckets keep object versions.",
                    level=MANDATORY, severity=M, category="data", anchor="Checkov CKV_DIO_1",
                    types=[T_SPACES], check=_check_spaces_versioning),
    stack_policy("platform-stateful-enable-protection",
                 "Stateful resources in production stacks are protected from deletion.",
                 level=MANDATORY, severity=H, category="data", anchor="Pulumi protect",
                 check=_check_protected, config_schema=PRODUCTION_SCHEMA),
    stack_policy("platform-datastore-enable-offsite-backup",
                 "Every datastore has an off-site R2Backup with a restore test.",
                 level=MANDATORY, severity=H, category="data", anchor="Kredete backup rules",
                 check=_check_backups),
    resource_policy("digitalocean-app-configure-secret-env",
                    "App Platform environment variables that carry secrets are of type SECRET.",
                    level=MANDATORY, severity=H, category="data", anchor="DO App Platform docs",
                    types=[T_APP], check=_check_app_secret_env),
    resource_policy("platform-resource-disallow-plaintext-secrets",
                    "No input that looks like a secret (password, token, key, URL with credentials) is plain text.",
                    level=MANDATORY, severity=C, category="data", anchor="CWE-312",
                    types=[T_CONTAINER, T_APP, T_COMMAND, T_DROPLET, "cloudflare:index/apiToken:ApiToken",
                           DO + "spacesKey:SpacesKey", "minio:index/iamUser:IamUser"],
                    check=_check_plaintext_secrets),
    # containers
    resource_policy("docker-container-disallow-privileged",
                    "Containers never run privileged.",
                    level=ADVISORY, severity=C, category="containers", anchor="CIS Docker 5.4",
                    types=CONTAINER_TYPES, check=_check_privileged),
    resource_policy("docker-container-configure-resource-limits",
                    "Containers have memory and CPU limits.",
                    level=ADVISORY, severity=M, category="containers", anchor="CIS Docker 5.10, 5.11",
                    types=CONTAINER_TYPES, check=_check_limits),
    resource_policy("docker-container-enable-healthcheck",
                    "Containers declare a healthcheck.",
                    level=ADVISORY, severity=M, category="containers", anchor="CIS Docker 4.6",
                    types=CONTAINER_TYPES, check=_check_healthcheck),
    resource_policy("docker-image-disallow-unpinned-tag",
                    "Images are pinned by a version tag or digest, never latest or untagged.",
                    level=ADVISORY, severity=M, category="containers", anchor="Trivy / Hadolint DL3007",
                    types=[T_IMAGE, T_CONTAINER], check=_check_image_pinned),
    resource_policy("docker-container-configure-non-root-user",
                    "Containers run as a non-root user where the image allows it.",
                    level=ADVISORY, severity=M, category="containers", anchor="CIS Docker 4.1",
                    types=CONTAINER_TYPES, check=_check_non_root),
    resource_policy("docker-container-disallow-host-access",
                    "Containers mount no Docker socket and share no host namespace.",
                    level=ADVISORY, severity=C, category="containers", anchor="CIS Docker 5.9, 5.15, 5.31",
                    types=CONTAINER_TYPES, check=_check_host_access),
    resource_policy("docker-container-enable-no-new-privileges",
                    "Containers set no-new-privileges.",
                    level=ADVISORY, severity=M, category="containers", anchor="CIS Docker 5.25",
                    types=CONTAINER_TYPES, check=_check_no_new_privileges),
    resource_policy("docker-container-configure-log-rotation",
                    "Container logs rotate by size.",
                    level=ADVISORY, severity=L, category="containers", anchor="Docker json-file docs",
                    types=CONTAINER_TYPES, check=_check_log_rotation),
    # hosts
    resource_policy("digitalocean-droplet-configure-ssh-keys",
                    "Droplets are created with SSH keys.",
                    level=ADVISORY, severity=H, category="hosts", anchor="Checkov CKV_DIO_2",
                    types=[T_DROPLET], check=_check_droplet_keys),
    resource_policy("command-sshd-configure-baseline",
                    "The sshd baseline disallows root and password logins and limits authentication tries.",
                    level=ADVISORY, severity=H, category="hosts", anchor="CIS Ubuntu 5.2",
                    types=[T_COMMAND], check=_check_sshd),
    resource_policy("command-ufw-enable-default-deny",
                    "UFW denies incoming traffic by default.",
                    level=ADVISORY, severity=H, category="hosts", anchor="CIS Ubuntu 3.5",
                    types=[T_COMMAND], check=_check_ufw),
]


def _check_minio_versioning(args: StackValidationArgs):
    versioned = {d.urn for v in _by_type(args, T_MINIO_VERSIONING)
                 if (v.props.get("versioningConfiguration") or {}).get("status") == "Enabled"
                 for d in v.dependencies if d.resource_type == T_MINIO_BUCKET}
    for bucket in _by_type(args, T_MINIO_BUCKET):
        if bucket.urn not in versioned:
            yield f"MinIO bucket {bucket.props.get('bucket') or bucket.name} is not versioned", bucket.urn


def _check_fail2ban(args: StackValidationArgs):
    setup = [c for c in _by_type(args, T_COMMAND) if "sshd_config.d" in str(c.props.get("stdin"))]
    for command in setup:
        host = command.name.split("-setup-")[0]
        if not any("ensure_service_enabled fail2ban" in str(c.props.get("stdin"))
                   and c.name.startswith(host) for c in _by_type(args, T_COMMAND)):
            yield f"host {host} hardens sshd but runs no fail2ban", command.urn


POLICIES.insert(next(i for i, p in enumerate(POLICIES) if p.name == "platform-stateful-enable-protection"),
               stack_policy("minio-s3bucket-enable-versioning",
                            "MinIO buckets keep object versions.",
                            level=MANDATORY, severity=M, category="data", anchor="MinIO bucket versioning docs",
                            check=_check_minio_versioning))

def _check_published_ports_filtered(args: StackValidationArgs):
    """Docker DNATs published ports before UFW sees them; only DOCKER-USER can filter them."""
    scripts = "\n".join(str(c.props.get("stdin") or "") for c in _by_type(args, T_COMMAND))
    for container in _by_type(args, T_CONTAINER):
        for port in container.props.get("ports") or []:
            address = port.get("ip") or "0.0.0.0"
            if address in ("0.0.0.0", "::") or address.startswith("127."):
                continue
            rule = f"--ctorigdst {address} --ctorigdstport {port.get('external')} -j DROP"
            if rule not in scripts:
                yield (f"container {container.name} publishes {address}:{port.get('external')}, which "
                       "bypasses UFW, and no DOCKER-USER rule filters it"), container.urn


POLICIES.insert(next(i for i, p in enumerate(POLICIES) if p.name == "platform-stack-configure-tier-reachability"),
               stack_policy("docker-container-enable-published-port-filter",
                            "A port published on a private address is filtered in DOCKER-USER, which Docker "
                            "consults before its own rules (UFW never sees that traffic).",
                            level=MANDATORY, severity=H, category="network",
                            anchor="Docker docs: packet filtering, DOCKER-USER",
                            check=_check_published_ports_filtered))

POLICIES.append(stack_policy(
    "command-fail2ban-enable-service", "Every host that runs sshd also runs fail2ban.",
    level=ADVISORY, severity=M, category="hosts", anchor="CIS Ubuntu 5.x; V-EdFinance audit 4.1",
    check=_check_fail2ban))
