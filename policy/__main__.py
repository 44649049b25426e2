"""The policy pack as `pulumi preview --policy-pack policy/` runs it. Builds nothing else:
constructing PolicyPack starts the analyzer's gRPC server and blocks."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from policy.rules import POLICIES  # noqa: E402

PolicyPack(
    name="platform-guardrails",
    policies=POLICIES,
    enforcement_level=EnforcementLevel.ADVISORY,
    description="Tier model, TLS, data, container and host rules for the platform program.",
)
