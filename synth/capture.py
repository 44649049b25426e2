"""What one synth run learned about the program's desired state (``Capture``), and the document
``python -m synth STACK --json`` writes from it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from synth import sdkschema
from synth.values import digest, holds_unknown


@dataclass
class Capture:
    """Everything one synth run learned about the program's desired state."""

    project: str
    stack: str
    resources: list[dict[str, Any]] = field(default_factory=list)
    invokes: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    logs: list[dict[str, str]] = field(default_factory=list)
    secret_placeholders: list[str] = field(default_factory=list)
    secret_outputs: list[str] = field(default_factory=list)
    revealed_inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    preview: bool = False
    duplicate_urns: list[str] = field(default_factory=list)
    pulumi_urn_inputs: list[str] = field(default_factory=list)
    # Preview only: {urn: {input name: digest}} of a run with every output known (synth_capture).
    known_digests: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self, reveal: bool = False) -> dict[str, Any]:
        """Resources sorted by URN and invokes by content: both arrive in async order, which
        would make diffs noisy.

        ``reveal`` puts secret input values in place of the mask (for policy checks and tests;
        never written to disk by the CLI)."""
        resources = sorted(self.resources, key=lambda r: r["urn"])
        if reveal:
            resources = [{**r, "inputs": self.revealed_inputs.get(r["urn"], r["inputs"])}
                         for r in resources]
        document = {
            "project": self.project,
            "stack": self.stack,
            "resources": resources,
            "outputs": self.outputs,
            "invokes": sorted(self.invokes, key=lambda i: json.dumps(i, sort_keys=True)),
            "secret_placeholders": self.secret_placeholders,
            "secret_outputs": sorted(self.secret_outputs),
        }
        if self.preview:
            document["preview"] = True
            document["preview_unknowns"] = self.preview_unknowns()
        return document

    def preview_unknowns(self) -> dict[str, Any]:
        """What a preview cannot know yet, counted on the revealed inputs (a secret script that
        is unknown is masked as ``"[secret]"`` in ``resources``, so its unknown is not visible
        there). Only names and counts, never a value:

        ``{"by_type": {type: {"resources": int, "with_unknown_inputs": int,
        "inputs": {top-level input name: int}}}, "resources": {urn: [input names]},
        "known_digests": {urn: {input name: 16 hex}}}``: for each unknown input, the digest of
        its value when the outputs it reads take their mock values (``known_digests``, filled by
        ``synth.run.synth_capture``), so a diff of two previews sees a change of the known inputs
        the unknown is made from (``synth diff`` says "may change")."""
        by_type: dict[str, dict[str, Any]] = {}
        per_resource: dict[str, list[str]] = {}
        for resource in sorted(self.resources, key=lambda r: r["urn"]):
            counts = by_type.setdefault(resource["type"], {"resources": 0, "with_unknown_inputs": 0,
                                                           "inputs": {}})
            counts["resources"] += 1
            inputs = self.revealed_inputs.get(resource["urn"], resource["inputs"])
            names = sorted(name for name, value in inputs.items() if holds_unknown(value))
            if names:
                counts["with_unknown_inputs"] += 1
                for name in names:
                    counts["inputs"][name] = counts["inputs"].get(name, 0) + 1
                per_resource[resource["urn"]] = names
        digests = {urn: {name: self.known_digests[urn][name] for name in names
                         if name in self.known_digests.get(urn, {})}
                   for urn, names in per_resource.items() if urn in self.known_digests}
        return {"by_type": dict(sorted(by_type.items())), "resources": per_resource,
                "known_digests": digests}

    def input_digests(self) -> dict[str, dict[str, str]]:
        """``{urn: {input name: digest}}`` of every resource's revealed inputs (digest: 16 hex
        of SHA-256, as for secret leaves; never a value)."""
        return {r["urn"]: {name: digest(value) for name, value in
                           self.revealed_inputs.get(r["urn"], r["inputs"]).items()}
                for r in self.resources}

    def schema_findings(self) -> list[str]:
        """Every captured custom resource's inputs (secrets revealed, so their shape is checked
        too), provider configuration and invoke arguments against the installed provider SDKs'
        schemas: one ``"<urn or token>: <property path>: <problem>"`` line per finding."""
        findings = []
        for resource in sorted(self.resources, key=lambda r: r["urn"]):
            if not resource["custom"]:
                continue
            inputs = self.revealed_inputs.get(resource["urn"], resource["inputs"])
            findings += [f"{resource['urn']}: {f}"
                         for f in sdkschema.check_resource(resource["type"], inputs)]
        for invoke in sorted(self.invokes, key=lambda i: json.dumps(i, sort_keys=True)):
            findings += [f"invoke {invoke['token']}: {f}"
                         for f in sdkschema.check_invoke(invoke["token"], invoke["args"])]
        return list(dict.fromkeys(findings))
