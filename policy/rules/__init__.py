"""The CrossGuard policies, one module per category; ``POLICIES`` is the pack, ``CATALOG`` its
metadata (category, anchor sources, fix) and ``CASES`` each policy's compliant fixture and
violating mutations with their exact messages.

The rules read only what resources carry (inputs, options, dependencies, parents) and never
import the program's tier module, so a bug there is caught here. Names follow
``<provider>-<resource>-<verb>-<thing>`` with the verb disallow, enable or configure.
"""

# Importing a module registers its policies; the pack and the catalog list them in this order.
from policy.rules import (app_platform, containers, container_isolation, container_runtime,  # noqa: F401
                          hosts, network, docker_filter, management, data_protection, uptime,
                          plaintext_secrets, stack, storage, nginx_configs, tls_connections, tls,
                          tls_internal)
from policy.rules.base import CASES, CATALOG, POLICIES, Case, PolicyInfo

__all__ = ["CASES", "CATALOG", "POLICIES", "Case", "PolicyInfo"]
