"""Every YAML key in conf/ has a comment on the line above it (or shares the comment of the key block it sits in)."""

from __future__ import annotations

import re

import pytest

from tests.helpers.runs import CONF


def yaml_key_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every `key:` line, list items and the defaults block excluded."""
    keys, in_defaults = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if re.match(r"^defaults:", line):
            in_defaults = True
            continue
        if in_defaults and (line.startswith(" ") or line.startswith("-")):
            continue
        in_defaults = False
        if re.match(r"^\s*[A-Za-z_][\w.]*:", line):
            keys.append((n, line))
    return keys


@pytest.mark.parametrize("path", sorted(CONF.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONF)))
def test_every_yaml_key_is_commented(path) -> None:
    """A key needs a comment above it; keys directly below a commented key share its comment."""
    lines = path.read_text().splitlines()
    uncommented = []
    for n, line in yaml_key_lines(path.read_text()):
        i = n - 2
        # Walk up through keys of the same block (deeper or equal indentation) to the nearest comment.
        while i >= 0 and re.match(r"^\s*[A-Za-z_][\w.]*:", lines[i]) and "#" not in lines[i]:
            i -= 1
        if "#" in line or (i >= 0 and lines[i].lstrip().startswith("#")):
            continue
        uncommented.append(f"{path.name}:{n}: {line.strip()}")
    assert not uncommented, "keys without a comment above them:\n" + "\n".join(uncommented)
