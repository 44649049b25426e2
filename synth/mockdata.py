"""What the mock engine answers: computed outputs per resource type and invoke results by token.

Values are deterministic (derived from the resource name) and use documentation address
ranges (RFC 5737 for public, 10.x private), so no captured value can point at a real machine.
Every output name here must be an output of the resource class in the installed provider SDK:
the engine checks each answer against ``synth.sdkschema.output_names`` and refuses names the
provider does not have.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Callable, Optional

MOCK_CA_PEM = (
    "-----BEGIN CERTIFICATE-----\nMIIB-mock-cluster-ca-for-offline-synth\n-----END CERTIFICATE-----\n"
)


def _octet(name: str, salt: str) -> int:
    return int(hashlib.sha256(f"{salt}:{name}".encode()).hexdigest()[:4], 16) % 250 + 2


def _public_ip(name: str) -> str:
    return f"203.0.113.{_octet(name, 'public')}"


def _private_ip(name: str) -> str:
    return f"10.110.{_octet(name, 'subnet')}.{_octet(name, 'host')}"


def database_cluster(name: str, inputs: dict) -> dict:
    """The outputs invented for a DigitalOcean database cluster named ``name`` (its engine from
    ``inputs``): URIs, hosts and port shaped like the provider's; the rehearsal reads the hosts."""
    engine = inputs.get("engine", "pg")
    port = {"pg": 25060, "mongodb": 27017, "valkey": 25061, "redis": 25061}.get(engine, 25060)
    scheme = {"pg": "postgresql", "mongodb": "mongodb+srv", "valkey": "rediss"}.get(engine, engine)
    return {
        "uri": f"{scheme}://doadmin:mock@{name}-do-user-0.db.ondigitalocean.com:{port}/defaultdb",
        "privateUri": f"{scheme}://doadmin:mock@private-{name}-do-user-0.db.ondigitalocean.com:{port}/defaultdb",
        "host": f"{name}-do-user-0.db.ondigitalocean.com",
        "privateHost": f"private-{name}-do-user-0.db.ondigitalocean.com",
        "port": port,
        "user": "doadmin",
        "password": f"mock-{name}-admin-password",
        "database": "defaultdb",
    }


RESOURCE_OUTPUTS: dict[str, Callable[[str, dict], dict]] = {
    "digitalocean:index/droplet:Droplet": lambda n, i: {
        "ipv4Address": _public_ip(n),
        "ipv4AddressPrivate": _private_ip(n),
        "status": "active",
    },
    "digitalocean:index/reservedIp:ReservedIp": lambda n, i: {"ipAddress": _public_ip(n + "-rip")},
    "digitalocean:index/databaseCluster:DatabaseCluster": database_cluster,
    "digitalocean:index/databaseUser:DatabaseUser": lambda n, i: {"password": f"mock-{n}-password"},
    "digitalocean:index/databaseConnectionPool:DatabaseConnectionPool": lambda n, i: {
        "privateHost": f"private-{n}-pool.db.ondigitalocean.com", "port": 25061,
    },
    "digitalocean:index/spacesBucket:SpacesBucket": lambda n, i: {
        "bucketDomainName": f"{i.get('name', n)}.{i.get('region', 'fra1')}.digitaloceanspaces.com",
        "endpoint": f"{i.get('region', 'fra1')}.digitaloceanspaces.com",
    },
    "digitalocean:index/spacesKey:SpacesKey": lambda n, i: {
        "accessKey": f"MOCKACCESS{_octet(n, 'k')}", "secretKey": f"mock-secret-{n}",
    },
    "digitalocean:index/app:App": lambda n, i: {
        "liveUrl": f"https://{n}.ondigitalocean.app",
        "defaultIngress": f"https://{n}.ondigitalocean.app",
    },
    "random:index/randomPassword:RandomPassword": lambda n, i: {
        "result": f"mock-{n}-" + "x" * max(0, int(i.get("length", 32)) - len(n) - 6),
    },
    "random:index/randomBytes:RandomBytes": lambda n, i: {
        "hex": hashlib.sha256(n.encode()).hexdigest()[: int(i.get("length", 32)) * 2],
        # The same bytes as hex (a WireGuard key's public half is computed from them), and
        # different per resource, as generated secrets are.
        "base64": base64.b64encode(hashlib.sha256(n.encode()).digest()[: int(i.get("length", 32))]).decode(),
    },
    "tls:index/privateKey:PrivateKey": lambda n, i: {
        "privateKeyPem": f"-----BEGIN PRIVATE KEY-----\nmock-{n}\n-----END PRIVATE KEY-----\n",
        "publicKeyPem": f"-----BEGIN PUBLIC KEY-----\nmock-{n}\n-----END PUBLIC KEY-----\n",
        "publicKeyOpenssh": f"ssh-ed25519 AAAAmock{n}",
    },
    "tls:index/selfSignedCert:SelfSignedCert": lambda n, i: {
        "certPem": f"-----BEGIN CERTIFICATE-----\nmock-ca-{n}\n-----END CERTIFICATE-----\n",
    },
    "tls:index/locallySignedCert:LocallySignedCert": lambda n, i: {
        "certPem": f"-----BEGIN CERTIFICATE-----\nmock-leaf-{n}\n-----END CERTIFICATE-----\n",
    },
    "tls:index/certRequest:CertRequest": lambda n, i: {
        "certRequestPem": f"-----BEGIN CERTIFICATE REQUEST-----\nmock-{n}\n-----END CERTIFICATE REQUEST-----\n",
    },
    "command:remote:Command": lambda n, i: {"stdout": "", "stderr": ""},
    # The real provider answers the image's ID (``sha256:...``); Docker's container ``image``
    # accepts a reference as well, and answering the reference lets reviews and policies see
    # which image each container runs.
    "docker:index/remoteImage:RemoteImage": lambda n, i: {"imageId": i.get("name", n)},
    "cloudflare:index/r2Bucket:R2Bucket": lambda n, i: {"location": "WEUR"},
    "cloudflare:index/apiToken:ApiToken": lambda n, i: {"value": f"mock-token-value-{n}"},
    "cloudflare:index/accountToken:AccountToken": lambda n, i: {"value": f"mock-token-value-{n}"},
    "cloudflare:index/zone:Zone": lambda n, i: {"nameServers": ["a.ns.example", "b.ns.example"]},
}


# Types whose real IDs are numbers; programs convert them with int().
NUMERIC_ID_TYPES = {"digitalocean:index/droplet:Droplet"}


def mock_id(type_: str, name: str) -> str:
    if type_ in NUMERIC_ID_TYPES:
        return str(int(hashlib.sha256(name.encode()).hexdigest()[:7], 16))
    return f"{name}-id"


def _database_ca(args: dict) -> dict:
    return {"certificate": MOCK_CA_PEM, "clusterId": args.get("clusterId", "")}


INVOKE_ANSWERS: dict[str, Callable[[dict], dict]] = {
    "digitalocean:index/getDatabaseCa:getDatabaseCa": _database_ca,
    "cloudflare:index/getZone:getZone": lambda a: {"id": "mock-zone-id", "name": a.get("name", "")},
    "cloudflare:index/getAccountApiTokenPermissionGroupsList:getAccountApiTokenPermissionGroupsList":
        lambda a: {"results": [{"id": "mock-permission-group-" + a.get("name", "").replace(" ", "-").lower(),
                                "name": a.get("name", ""), "scopes": ["com.cloudflare.edge.r2.bucket"]}]},
    "tls:index/getPublicKey:getPublicKey": lambda a: {
        "algorithm": "ED25519", "id": "mock-public-key",
        "publicKeyOpenssh": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + hashlib.sha256(
            str(a.get("privateKeyOpenssh") or a.get("privateKeyPem")).encode()).hexdigest()[:43] + " synth\n",
    },
    "digitalocean:index/getSshKey:getSshKey": lambda a: {
        "id": 1, "name": a.get("name", ""), "fingerprint": "00:11:22:33", "publicKey": "ssh-ed25519 AAAAmock",
    },
}


# DigitalOcean's own URNs, ``do:<kind>:<id>``, as its Projects API takes them. Kinds and ids from
# the API reference's list of resource URNs (do:droplet:4126873, do:dbaas:<uuid>,
# do:space:<bucket name>, do:vpc:<uuid>, do:app:<uuid>) and, for reserved IPs, the provider's
# acceptance test (terraform-provider-digitalocean, datasource_reserved_ip_test.go:
# ``do:reservedip:<ip address>``).
DIGITALOCEAN_URNS: dict[str, tuple[str, str, Callable[[str, dict], str]]] = {
    "digitalocean:index/droplet:Droplet": ("dropletUrn", "droplet", lambda id_, state: id_),
    "digitalocean:index/reservedIp:ReservedIp": ("reservedIpUrn", "reservedip",
                                                 lambda id_, state: state["ipAddress"]),
    "digitalocean:index/vpc:Vpc": ("vpcUrn", "vpc", lambda id_, state: id_),
    "digitalocean:index/databaseCluster:DatabaseCluster": ("clusterUrn", "dbaas", lambda id_, state: id_),
    "digitalocean:index/spacesBucket:SpacesBucket": ("bucketUrn", "space", lambda id_, state: state.get("name", id_)),
    "digitalocean:index/app:App": ("appUrn", "app", lambda id_, state: id_),
}


def invented_outputs(type_: str, name: str, inputs: dict[str, Any], id_: str,
                     table: Optional[dict[str, Callable[[str, dict], dict]]] = None) -> dict[str, Any]:
    """The outputs the mock engine makes up for a created resource (on top of its inputs);
    ``table`` replaces ``RESOURCE_OUTPUTS`` (tests override single types)."""
    extra = (RESOURCE_OUTPUTS if table is None else table).get(type_)
    outputs = dict(extra(name, inputs)) if extra else {}
    urn = DIGITALOCEAN_URNS.get(type_)
    if urn is not None:
        output, kind, ident = urn
        outputs[output] = f"do:{kind}:{ident(id_, {**inputs, **outputs})}"
    return outputs
