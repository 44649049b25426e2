"""How a policy meets a value that is unknown during preview: it judges the fields it reads and
is skipped only when one of those is unknown.

pulumi-policy hands a policy its inputs as unknown-checking proxies that raise
``UnknownValueError`` on any read of an unknown value (``pulumi_policy.proxy``); the analyzer
then reports "can't run policy '<name>' ... during preview: <message>" as an advisory with an
empty URN. A policy that scans every input (a TLS flag or a secret in any string) touched the
container's ``image`` (a registry digest unknown until the image is pulled) before its
healthcheck, so under ``--preview`` each such mandatory policy became an advisory and judged
nothing. ``known_view`` wraps those proxies:

- iterating a mapping yields only the keys whose values are known, and iterating a list yields
  an ``UnknownItem`` in place of an unknown item (indexes keep their meaning): a scan judges
  what is known and passes over what is not;
- reading a field (``props["image"]``, ``props.get("stdin")``, ``value[2]``) still raises, and
  so does using an ``UnknownItem`` (``str``, ``==``, ``bool``, ``hash``, ``base.items``,
  ``base.mapping``, ``base.integer``): a field the policy needs stops it, as before;
- a scan that passed over an unknown value it could have judged did not pass: after the check
  has reported what it found, ``raise_skipped`` raises for the first such value, so the
  analyzer adds its advisory (never a silent pass). An unknown ``OPAQUE`` value (an identifier
  the provider assigns: ``image`` digest, ``triggers``, ``*Id``, ``*Uuid``) holds no setting a
  scan looks for, and passing over it is no gap;
- the error is an ``UnknownFieldError``, whose message names the resource URN and the field
  (the analyzer's ``urn`` stays empty, so the URN has to be in the message).

The policies then run again with every value known when ``pulumi up`` creates the resource.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Iterator

from pulumi_policy.proxy import UnknownValueError


OPAQUE = re.compile(r"^(?:image|triggers|connection|id|.*(?:Id|Ids|Uuid))$")
"""Input names whose values hold nothing a scan of every string looks for (a TLS switch, a URL,
a plain-text secret): provider-assigned identifiers (a container's ``image``, the RemoteImage
digest; ``clusterId``, ``vpcUuid``), a command's ``triggers`` (replacement keys) and its SSH
``connection`` (address, user, key: a secret input, judged by name by the connection policy)."""


def _opaque(error: UnknownValueError) -> bool:
    return any(OPAQUE.match(str(part)) for part in error.props)


class UnknownFieldError(UnknownValueError):
    """``UnknownValueError`` whose ``message`` names the resource: "string value at .image of
    urn:pulumi:... can't be known during preview"."""

    def __init__(self, sentinel: str, props: list[str], urn: str):
        super().__init__(sentinel, props)
        self.urn = urn
        self.message = self.message.replace(" can't be known", f" of {urn} can't be known", 1)


def _named(error: UnknownValueError, urn: str) -> UnknownValueError:
    if isinstance(error, UnknownFieldError) or not urn:
        return error
    return UnknownFieldError(error.unknown_type_sentinel, list(error.props), urn)


@contextlib.contextmanager
def unknown_guard(urn: str) -> Iterator[None]:
    """Re-raise a bare ``UnknownValueError`` (a read of the raw proxies) naming ``urn``."""
    try:
        yield
    except UnknownFieldError:
        raise
    except UnknownValueError as error:
        raise _named(error, urn) from None


class UnknownItem:
    """A list item unknown during preview, met while iterating: not a ``str``, ``Mapping`` or
    ``Sequence`` (so a scan passes over it); any use of its value raises ``UnknownFieldError``."""

    def __init__(self, error: UnknownValueError):
        self.error = error

    @staticmethod
    def refuse(value: Any) -> None:
        """Raise the item's error when ``value`` is an ``UnknownItem``."""
        if isinstance(value, UnknownItem):
            raise value.error

    def _raise(self, *_args: Any) -> Any:
        raise self.error

    __str__ = __repr__ = __format__ = __bool__ = __hash__ = __eq__ = __ne__ = __lt__ = __gt__ = _raise
    __int__ = __float__ = __len__ = __iter__ = __contains__ = __getitem__ = _raise


def _wrap(value: Any, urn: str, skipped: list) -> Any:
    if isinstance(value, (str, bytes)) or isinstance(value, (KnownMapping, KnownSequence)):
        return value
    if isinstance(value, Mapping):
        return KnownMapping(value, urn, skipped)
    if isinstance(value, Sequence):
        return KnownSequence(value, urn, skipped)
    return value


def _skip(skipped: list, error: UnknownValueError, urn: str) -> None:
    if not _opaque(error):
        skipped.append(_named(error, urn))


class KnownMapping(Mapping):
    """A proxy mapping whose iteration skips the keys with unknown values (see module doc)."""

    def __init__(self, target: Mapping, urn: str, skipped: list):
        self._target, self._urn, self.skipped = target, urn, skipped

    def __getitem__(self, key: Any) -> Any:
        try:
            return _wrap(self._target[key], self._urn, self.skipped)
        except UnknownValueError as error:
            raise _named(error, self._urn) from None

    def __contains__(self, key: Any) -> bool:
        return key in iter(self._target)

    def __iter__(self) -> Iterator:
        for key in self._target:
            try:
                self._target[key]
            except UnknownValueError as error:
                _skip(self.skipped, error, self._urn)
                continue
            yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)


class KnownSequence(Sequence):
    """A proxy list whose iteration gives an ``UnknownItem`` for an unknown item (see module doc)."""

    def __init__(self, target: Sequence, urn: str, skipped: list):
        self._target, self._urn, self.skipped = target, urn, skipped

    def __getitem__(self, index: Any) -> Any:
        try:
            return _wrap(self._target[index], self._urn, self.skipped)
        except UnknownValueError as error:
            raise _named(error, self._urn) from None

    def __len__(self) -> int:
        return len(self._target)

    def __iter__(self) -> Iterator:
        for index in range(len(self._target)):
            try:
                yield self[index]
            except UnknownValueError as error:
                _skip(self.skipped, error, self._urn)
                yield UnknownItem(error)


def known_view(props: Any, urn: str) -> Any:
    """``props`` as the policy should see it: plain dicts (the offline runner without unknowns)
    as they are, pulumi-policy's proxies wrapped as above (a view again, with no skips yet)."""
    if isinstance(props, dict) or props is None:
        return props
    if isinstance(props, (KnownMapping, KnownSequence)):
        # The analyzer shares a stack's PolicyResource objects between policies: each policy
        # gets a view of its own, so one policy's skips are never another's advisory.
        props = props._target
    return _wrap(props, urn, [])


def raise_skipped(*views: Any) -> None:
    """Raise ``UnknownFieldError`` for the first unknown, non-``OPAQUE`` value a scan of
    ``views`` (from ``known_view``) passed over; nothing when there was none."""
    for view in views:
        for error in getattr(view, "skipped", ()):
            raise error

