"""POSIX shell words in linear time: what ``shlex.shlex(text, posix=True,
punctuation_chars=";&|()<>\\n")`` with ``whitespace_split`` and no comments gives, token for
token, without its cost. shlex adds a word's characters one at a time to a string attribute, so
a word costs time quadratic in its length (a 128 KB word took 0.7 s, a 5 MB one did not finish
in 15 minutes); a regex reads the same grammar in one pass.

The grammar is shlex's (``Lib/shlex.py``, ``read_token``), which ``tests/test_shell_words.py``
checks against shlex itself on random texts of these characters:

- blanks (space, tab, carriage return) separate words; a run of ``; & | ( ) < >`` and newlines
  is one token of its own;
- outside quotes a backslash keeps the next character, whatever it is;
- ``'...'`` keeps everything; in ``"..."`` a backslash escapes only ``"`` and ``\\`` and is kept
  before any other character;
- a word made of quotes alone (``''``) is an empty word.

An unclosed quote or a backslash at the end is no script shlex can split: the text is then split
on whitespace, line by line, with a newline token after each line (as before).
"""

from __future__ import annotations

import re

_SCRIPT = re.compile(r"(?:[ \t\r]++|[;&|()<>\n]++|"
                     r"(?:[^ \t\r;&|()<>\n'\"\\]++|\\[\s\S]|'[^']*+'|\"(?:[^\"\\]++|\\[\s\S])*+\")++)*+")
"""Text shlex splits: blanks, runs of operators and words (unquoted characters, a backslash and
the character it keeps, single- and double-quoted parts). Possessive quantifiers (Python 3.11):
text that does not match fails in linear time, never by trying every way to cut a word."""
_TOKEN = re.compile(r"([;&|()<>\n]++)|((?:[^ \t\r;&|()<>\n'\"\\]++|\\[\s\S]|'[^']*+'|\"(?:[^\"\\]++|\\[\s\S])*+\")++)")
_PLAIN_TOKEN = re.compile(r"[;&|()<>\n]+|[^ \t\r;&|()<>\n]+")
_PIECE = re.compile(r"[^'\"\\]++|\\([\s\S])|'([^']*+)'|\"((?:[^\"\\]++|\\[\s\S])*+)\"")
_ESCAPED_IN_DOUBLE_QUOTES = re.compile(r'\\(["\\])')


def _unquoted(word: str) -> str:
    """A word with its quoting removed, as the shell (and shlex) reads it."""
    parts = []
    for piece in _PIECE.finditer(word):
        escaped, single, double = piece.group(1, 2, 3)
        if escaped is not None:
            parts.append(escaped)
        elif single is not None:
            parts.append(single)
        elif double is not None:
            parts.append(_ESCAPED_IN_DOUBLE_QUOTES.sub(r"\1", double))
        else:
            parts.append(piece.group(0))
    return "".join(parts)


def _by_lines(text: str) -> list[str]:
    return [t for line in text.splitlines() for t in (*line.split(), "\n")]


def shell_tokens(text: str) -> list[str]:
    """POSIX shell tokens of ``text``, quotes removed, operators and newlines as their own tokens
    (a run of them is one token: ``&&``, ``;;``); text with an unclosed quote or a trailing
    backslash is split on whitespace per line. Linear in the length of ``text``."""
    if not any(c in text for c in "'\"\\"):
        return _PLAIN_TOKEN.findall(text)
    if not _SCRIPT.fullmatch(text):
        return _by_lines(text)
    return [operators or (_unquoted(word) if any(c in word for c in "'\"\\") else word)
            for operators, word in _TOKEN.findall(text)]
