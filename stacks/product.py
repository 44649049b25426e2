"""What ``stacks.provision`` creates for every product the same way: the product's root component
(the synth and the plan group resources by it) and the outputs of a plan's secret references
(generated passwords, config secrets, bucket keys, managed clusters' URIs)."""

from __future__ import annotations

from typing import Mapping, Sequence

import pulumi
import pulumi_random as random

from components.database import ManagedDatabaseCluster
from stacks import wiring


class Product(pulumi.ComponentResource):
    """The root of one product's resources, so the plan and the synth group by product."""

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"platform:products:{name.capitalize()}", name, None, opts)


def generated_password(name: str, parent: pulumi.Resource, length: int = 32) -> pulumi.Output[str]:
    """A generated secret (letters and digits, so it is safe in URLs and shell)."""
    return random.RandomPassword(name, length=length, special=False,
                                 opts=pulumi.ResourceOptions(parent=parent)).result


class SecretResolver:
    """Turns a plan's secret references (``stacks.wiring``) into outputs: each ``Generated``
    name becomes one ``random.RandomPassword`` under ``parent`` the first time it is read;
    ``ConfigSecret`` reads the stack config through ``secret`` (``BuildContext.secret``);
    ``BucketKey`` reads ``bucket_keys`` (service -> (access, secret)), set once the bucket
    exists; ``ClusterUri`` reads ``clusters`` (component name -> ``ManagedDatabaseCluster``),
    set once the clusters exist."""

    def __init__(self, parent: pulumi.Resource, secret):
        self._parent = parent
        self._secret = secret
        self._generated: dict[str, pulumi.Output[str]] = {}
        self.bucket_keys: Mapping[str, tuple[pulumi.Output[str], pulumi.Output[str]]] = {}
        self.clusters: Mapping[str, ManagedDatabaseCluster] = {}

    def password(self, ref: wiring.Generated) -> pulumi.Output[str]:
        if ref.name not in self._generated:
            self._generated[ref.name] = generated_password(ref.name, self._parent, ref.length)
        return self._generated[ref.name]

    def resolve(self, value: wiring.SecretValue | str) -> pulumi.Input[str]:
        if isinstance(value, str):
            return value
        if isinstance(value, wiring.Generated):
            return self.password(value)
        if isinstance(value, wiring.ConfigSecret):
            return self._secret(value.key)
        if isinstance(value, wiring.SecretUrl):
            return pulumi.Output.secret(self.password(value.password).apply(
                lambda pw, template=value.template: template.format(pw=pw)))
        if isinstance(value, wiring.BucketKey):
            return self.bucket_keys[value.service][0 if value.part == "access" else 1]
        if isinstance(value, wiring.ClusterUri):
            return self.clusters[value.cluster].uri(ca_path=value.ca_path, user=value.user,
                                                    database=value.database, pool=value.pool)
        raise TypeError(f"not a secret reference: {value!r}")

    def env(self, values: Mapping[str, wiring.SecretValue | str] | Sequence[tuple[str, wiring.SecretValue | str]]
            ) -> dict[str, pulumi.Input[str]]:
        items = values.items() if isinstance(values, Mapping) else values
        return {key: self.resolve(value) for key, value in items}
