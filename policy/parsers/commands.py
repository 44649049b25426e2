"""Commands and URLs in a resource's inputs, for the policies that judge what a client is told
to do (TLS switched off, a password on the command line): every string split as a POSIX shell
script and every list of strings read as an exec-form command (``validation.connections``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from validation.connections import simple_commands

URL = re.compile(r"\b([a-z][a-z0-9+.-]*)://[^\s\"'`<>]+", re.IGNORECASE)
"""A URL in free text: the scheme (group 1) and everything up to whitespace, a quote or ``<>``."""

ENV_INPUTS = ("envs", "environment", "env")
"""Where a resource holds its environment: a container's ``envs`` (a list of "NAME=value"),
a pulumi-command Command's ``environment`` (a map); either form is read under each name."""


def commands(props, keep_substitutions: bool = False):
    """(path, words) of every simple command in every input but the environment (``ENV_INPUTS``,
    at any depth): each string split as a shell script (``sh -c`` scripts in turn), and each list
    of strings (a container's ``command``, ``entrypoint``, healthcheck ``tests``) as one
    exec-form command, ``curl -k`` in two items. ``keep_substitutions``: as in
    ``simple_commands`` (a ``$(cat f)`` value stays a reference)."""
    def walk(value, path):
        if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            if len(value) > 1 and all(isinstance(v, str) for v in value):
                for words in simple_commands(list(value), nested=False,
                                                keep_substitutions=keep_substitutions):
                    yield path, words
            for index, item in enumerate(value):
                yield from walk(item, f"{path}[{index}]")
        elif isinstance(value, Mapping):
            # An environment holds values, not scripts: "URL?a=1&sslmode=x" is no two commands.
            for key in value:
                if key not in ENV_INPUTS:
                    yield from walk(value[key], f"{path}.{key}" if path else str(key))
        elif isinstance(value, str) and path:
            for words in simple_commands(value, keep_substitutions=keep_substitutions):
                yield path, words
    yield from walk(props, "")
