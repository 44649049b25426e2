"""What the products wire the same way, as plain values a plan holds: references to secrets
(config values, generated passwords, bucket keys, managed clusters' URIs; resolved to Pulumi outputs only by ``stacks.product.SecretResolver``), each service's env map
assembled with one source per key, backup job and bucket names, and the secret keys a product's
services read. Nothing here creates a resource or an output, so plans are unit-testable without
the mock engine."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence, Union

from components.containers import ContainerSpec
from stacks.definition import SecretKey


@dataclass(frozen=True)
class ConfigSecret:
    """A secret stack config value, ``platform:<key>``."""

    key: str


@dataclass(frozen=True)
class Generated:
    """A password the program generates (letters and digits, ``length`` characters): the name
    is its ``random.RandomPassword`` resource's name, so one name is one password."""

    name: str
    length: int = 32


@dataclass(frozen=True)
class SecretUrl:
    """A connection URL with a generated password in it: ``template`` holds ``{pw}``."""

    template: str
    password: Generated

    def __post_init__(self) -> None:
        if "{pw}" not in self.template:
            raise ValueError(f"SecretUrl template {self.template!r} has no {{pw}}")


@dataclass(frozen=True)
class BucketKey:
    """One half of a service's object-storage key pair (a MinIO user's, a Spaces key's):
    ``part`` is ``access`` or ``secret``."""

    service: str
    part: str


@dataclass(frozen=True)
class ClusterUri:
    """A managed database cluster's secret, TLS-verifying connection URI
    (``ManagedDatabaseCluster.uri``): ``cluster`` is the cluster component's name, ``ca_path``
    where the client reads the cluster's CA; ``pool`` connects through that PgBouncer pool.
    A Valkey cluster's URI takes no user or database."""

    cluster: str
    ca_path: str
    user: str | None = None
    database: str | None = None
    pool: str | None = None


SecretValue = Union[ConfigSecret, Generated, SecretUrl, BucketKey, ClusterUri]


@dataclass(frozen=True)
class ResourceValue:
    """A plain (not secret) value that exists only once a resource does: the ``attribute``
    output of what the plan names ``resource`` (a bucket's ``name``, a cluster's
    ``ca_certificate``). The product's provision step resolves it; the env key is claimed in the
    plan like any other, so no second source can set it."""

    resource: str
    attribute: str


PlainValue = Union[str, ResourceValue]


@dataclass(frozen=True)
class ServiceEnv:
    """A service's complete env map in assembly order: ``plain`` values go in the container's
    environment, ``secret`` ones in its secret env file; ``sources`` says what set each key."""

    service: str
    plain: tuple[tuple[str, PlainValue], ...] = ()
    secret: tuple[tuple[str, SecretValue], ...] = ()
    sources: tuple[tuple[str, str], ...] = ()

    def keys(self) -> list[str]:
        return [k for k, _ in self.plain] + [k for k, _ in self.secret]


class EnvMaps:
    """The one place a product's env maps are assembled: a key set twice for one service (two
    sources, or the program over a user's own key) raises ``ValueError`` naming both sources.
    The config rules report such collisions first, with their key paths; this is the invariant
    behind them, so an overwrite can never be silent."""

    def __init__(self) -> None:
        self._plain: dict[str, dict[str, PlainValue]] = {}
        self._secret: dict[str, dict[str, SecretValue]] = {}
        self._sources: dict[str, dict[str, str]] = {}

    def _claim(self, service: str, key: str, source: str) -> None:
        sources = self._sources.setdefault(service, {})
        if key in sources:
            raise ValueError(f"{service}: {key} is set by {sources[key]} and by {source}")
        sources[key] = source

    def plain(self, service: str, values: Mapping[str, PlainValue], source: str) -> None:
        for key, value in values.items():
            self._claim(service, key, source)
            self._plain.setdefault(service, {})[key] = value

    def secret(self, service: str, values: Mapping[str, SecretValue], source: str) -> None:
        for key, value in values.items():
            self._claim(service, key, source)
            self._secret.setdefault(service, {})[key] = value

    def user(self, spec: ContainerSpec) -> None:
        """A service's own ``env`` and ``secret_env`` from the stack config, first."""
        for key in spec.env:
            self._claim(spec.name, key, "its env in the stack config")
        self.secret(spec.name, {env: ConfigSecret(key) for env, key in spec.secret_env.items()},
                    "its secret_env in the stack config")

    def freeze(self) -> dict[str, ServiceEnv]:
        services = dict.fromkeys([*self._sources])
        return {s: ServiceEnv(service=s, plain=tuple(self._plain.get(s, {}).items()),
                              secret=tuple(self._secret.get(s, {}).items()),
                              sources=tuple(self._sources[s].items())) for s in services}


def with_env(spec: ContainerSpec, env: ServiceEnv | None, **update) -> ContainerSpec:
    """``spec`` with the program's plain env after its own (the keys never overlap: EnvMaps)."""
    plain = dict(env.plain) if env else {}
    return spec.model_copy(update={"env": {**spec.env, **plain}, **update})


def host_file(data_dir: str, service: str, container_path: str) -> str:
    """Where a service's file lives on its host, as ``service_files.host_path_for`` places it
    (the provision steps check they agree)."""
    return posixpath.join(data_dir, "files", service, container_path.lstrip("/"))


WAL_LABEL = "wal"
"""The label of the WAL archive job (point-in-time recovery of a product's Postgres cluster):
its job is ``<stack>-wal``, so no database (whose backup job is ``<stack>-<name>``) takes it."""


def backup_job_name(stack: str, label: str) -> str:
    """A backup job's name (its systemd units, metrics and R2 object prefix): ``kro-prod-db``."""
    return f"{stack}-{label.replace('_', '-')}"


SESSION_ARCHIVE_LABEL = "sessions"
"""The label of the admin-session archive's bucket, ``<backup.bucket>-sessions``."""
SESSION_LABEL_TAKEN = ("its backup bucket would be <backup.bucket>-sessions, the admin-session archive's "
                       "(one bucket, one lock: the archive's would block restic's deletes); rename the database")


def backup_bucket_name(bucket: str, label: str) -> str:
    """The R2 bucket of one backup job of a product with several: ``<bucket>-<label>``."""
    return f"{bucket}-{label.replace('_', '-')}"


def service_secret_keys(services: Iterable[ContainerSpec],
                        describe: Callable[[str, str], str] = lambda env, name: f"{env} of {name}"
                        ) -> list[SecretKey]:
    """The secret config keys the services' ``secret_env`` reads, per service in env order."""
    return [SecretKey(key=key, description=describe(env, spec.name))
            for spec in services for env, key in sorted(spec.secret_env.items())]


def images(services: Sequence[ContainerSpec]) -> list[str]:
    return [s.image for s in services]
