"""What two ``--preview`` states hide behind values a preview does not know yet: the
replacements the engine makes through them (``hidden_replacements``) and the inputs that may
change (``may_change``). ``synth.diff`` judges and shows them."""

from __future__ import annotations

from typing import Any

from synth.input_diff import is_unknown
from synth.replacements import replacing_inputs


def unknown_inputs(state: dict[str, Any], resource: dict[str, Any]) -> set[str]:
    """Top-level input names of ``resource`` that a ``--preview`` state does not know yet: those
    ``preview_unknowns`` lists (counted on the revealed inputs, so an unknown inside a secret
    too) and those shown as ``"[unknown]"``."""
    listed = ((state.get("preview_unknowns") or {}).get("resources") or {}).get(resource["urn"]) or []
    shown = {name for name, value in (resource.get("inputs") or {}).items() if is_unknown(value)}
    return set(listed) | shown


FED_INPUTS: dict[str, frozenset[str] | None] = {
    "docker:index/remoteImage:RemoteImage": frozenset({"image"}),
    "docker:index/network:Network": frozenset({"networksAdvanced"}),
    "random:index/randomPassword:RandomPassword": None,
    "random:index/randomBytes:RandomBytes": None,
    "random:index/randomString:RandomString": None,
    "random:index/randomId:RandomId": None,
    "tls:index/privateKey:PrivateKey": None,
    "tls:index/certRequest:CertRequest": None,
    "tls:index/selfSignedCert:SelfSignedCert": None,
    "tls:index/locallySignedCert:LocallySignedCert": None,
}
"""Without digests, the dependencies whose replacement makes a dependent's input unknown, and
which inputs they can feed (``None``: any but a container's ``image``): a RemoteImage's
``imageId`` is a container's ``image``, never its env; a generated password or certificate can
be anywhere else. A type not listed feeds nothing: the host's file deliveries (Commands) a
container depends on only order it, and counting them replaced every container of a host
whenever a file was added."""


def known_digests(state: dict[str, Any], urn: str) -> dict[str, str]:
    """``{input name: digest}`` of a ``--preview --review`` state's unknown inputs of ``urn``,
    their values with the mock outputs known (``synth.capture``); ``{}`` without digests."""
    return ((state.get("preview_unknowns") or {}).get("known_digests") or {}).get(urn) or {}


def hidden_replacements(base: dict[str, Any], head: dict[str, Any],
                        replaced: set[str]) -> dict[str, dict[str, str]]:
    """Replacements a ``--preview`` state hides behind unknown values, as the engine finds them:
    a replaced resource's outputs are unknown until apply, and a provider replaces a resource
    when an input that forces replacement is unknown (the Docker provider does so for a
    container whose ``image`` is a replaced RemoteImage's ``imageId``). ``replaced``: URNs in
    both states replaced by known inputs.

    For every resource in both states, an input that forces its replacement and is unknown on
    either side (a preview base against a normal head hides the old value) counts when its
    digests (``known_digests``) differ, or, without digests, when the resource depends on a
    replaced or new resource that can feed that input (``FED_INPUTS``), followed transitively:
    ``{urn: {input name: why}}``.
    """
    base_by_urn = {r["urn"]: r for r in base.get("resources", [])}
    head_by_urn = {r["urn"]: r for r in head.get("resources", [])}
    fresh = set(replaced) | (set(head_by_urn) - set(base_by_urn))

    found: dict[str, dict[str, str]] = {}
    grew = True
    while grew:
        grew = False
        for urn in sorted(set(base_by_urn) & set(head_by_urn)):
            resource = head_by_urn[urn]
            hidden = (unknown_inputs(head, resource) | unknown_inputs(base, base_by_urn[urn])) \
                & replacing_inputs(resource)
            if not hidden:
                continue
            before, after = known_digests(base, urn), known_digests(head, urn)
            upstream = [head_by_urn[d] for d in resource.get("dependencies") or () if d in fresh and d in head_by_urn]
            why = {}
            for name in sorted(hidden):
                if name in before and name in after:
                    if before[name] != after[name]:
                        why[name] = "known after apply; the known values it is made from changed"
                    continue
                sources = sorted(u["name"] for u in upstream if u["type"] in FED_INPUTS
                                 and (name in FED_INPUTS[u["type"]] if FED_INPUTS[u["type"]] is not None
                                      else name != "image"))
                if sources:
                    why[name] = ("known after apply; it can come from "
                                 + ", ".join(f"`{n}`" for n in sources) + ", which is replaced or new")
            if why and why != found.get(urn):
                found[urn] = why
                grew = grew or urn not in fresh
                fresh.add(urn)
    return found


def may_change(base: dict[str, Any], head: dict[str, Any], resource: dict[str, Any],
               shown: set[str]) -> list[str]:
    """For two ``--preview`` states: one line per input of ``resource`` that is unknown until
    apply in both and whose digest with the mock outputs known (``preview_unknowns.known_digests``,
    ``synth.capture``) differs, so a known value it is made from changed (a CA path inside an
    unknown DATABASE_URL); inputs already shown as changed (``shown``) are left out. Names
    and digests only, never a value; ``[]`` for states without digests."""
    before, after = known_digests(base, resource["urn"]), known_digests(head, resource["urn"])
    lines = []
    for name in sorted(set(before) & set(after) - shown):
        if before[name] != after[name]:
            lines.append(f"`{resource['name']}` ({resource['type'].rsplit(':', 1)[-1]}): `{name}` may change: "
                         "unknown until apply, and the known values it is made from changed")
    return lines
