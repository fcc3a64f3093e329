"""Data tests' fixtures and row builders: the fixture folders, a DataConfig for a path, chat turns, a data file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.config.data_schema import DataConfig
from tests.helpers.runs import FIXTURES

DATA = FIXTURES / "data"
FORMATS = FIXTURES / "formats"
LLAMAFACTORY = FIXTURES / "llamafactory"


def cfg(path: Path | str, **kw: Any) -> DataConfig:
    return DataConfig(name="t", path=str(path), **kw)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def reply(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def write_lines(tmp_path: Path, name: str, lines: list[Any]) -> Path:
    """A data file: dicts become JSON lines, strings are written verbatim."""
    path = tmp_path / name
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path
