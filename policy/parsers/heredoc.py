"""Files that a remote script writes with a heredoc (``put_file PATH MODE OWNER <<'EOF'``).

Follows bash's rules for the forms the renderers use: a quoted or bare delimiter, ``<<-``
stripping leading tabs, the body ending at a line that is exactly the delimiter.
"""

from __future__ import annotations

import functools
import re
import shlex

_OPENER = re.compile(r"<<(-?)\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")


def heredocs(script: str) -> list[tuple[str, str]]:
    """``[(command line, body)]`` for every heredoc in ``script``, in order."""
    lines = script.split("\n")
    found: list[tuple[str, str]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        match = _OPENER.search(line)
        index += 1
        if not match:
            continue
        strip_tabs, delimiter = match.group(1) == "-", match.group(3)
        body: list[str] = []
        while index < len(lines):
            current = lines[index].lstrip("\t") if strip_tabs else lines[index]
            index += 1
            if current == delimiter:
                break
            body.append(current)
        found.append((line, "\n".join(body) + ("\n" if body else "")))
    return found


@functools.lru_cache(maxsize=4096)
def written_files(script: str) -> tuple[tuple[str, str], ...]:
    """``((path, content), ...)`` of the files a script writes through ``put_file`` or
    ``cat > PATH`` heredocs.

    Cached (a tuple, so no caller can change another's): the policy pack's host, TLS and
    network rules each read the same scripts, about 2,000 parses of a few hundred scripts per
    stack, most of a pack run's time (README, "Test cost")."""
    files = []
    for command, body in heredocs(script):
        head = command.split("<<", 1)[0]
        try:
            words = shlex.split(head.replace(";", " "), comments=False)
        except ValueError:
            words = head.split()
        if "put_file" in words and words.index("put_file") + 1 < len(words):
            files.append((words[words.index("put_file") + 1], body))
            continue
        target = re.search(r">\s*(/\S+)", head)
        if target:
            files.append((target.group(1), body))
    return tuple(files)
