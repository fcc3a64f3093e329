"""peek_columns, the DataError message and drop report, and an import that stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.data.errors import DataError, DropReport
from pipeline.data.sources import peek_columns
from tests.helpers.data import DATA, cfg
from tests.helpers.runs import REPO


@pytest.mark.parametrize(
    "name, text, columns, expected",
    [
        (
            "d.jsonl",
            '\n{"question": "q", "answer": 1}\nnot json\n',
            {"question": "prompt"},
            {"prompt", "answer"},
        ),
        ("d.json", '  [ {"a": 1, "b": [1, 2]}, {this is never read', {}, {"a", "b"}),
        ("d.json", '{"a": 1}\n{"b": 2}\n', {"a": "z"}, {"z"}),
        ("d.csv", "\ufeffprompt,completion\nq,c\n", {}, {"prompt", "completion"}),
        ("d.tsv", "x\ty\n1\t2\n", {"x": "prompt"}, {"prompt", "y"}),
        ("d.jsonl", "{broken\n", {}, None),
        ("d.json", "[]", {}, None),
        ("d.csv", "", {}, None),
    ],
)
def test_peek_columns_reads_the_first_record(
    tmp_path: Path, name: str, text: str, columns: dict[str, str], expected: set[str] | None
) -> None:
    (tmp_path / name).write_text(text)
    assert peek_columns(cfg(tmp_path / name, columns=columns)) == expected


@pytest.mark.parametrize("path", ["builtin:arithmetic", "openai/gsm8k", "missing/file.jsonl", str(DATA)])
def test_peek_columns_is_none_without_a_local_file(path: str) -> None:
    assert peek_columns(cfg(path)) is None


def test_data_error_message_and_drop_report() -> None:
    err = DataError("x.jsonl:7", "the field is missing.", "add it", field="answer")
    assert str(err) == "x.jsonl:7: field 'answer': the field is missing. Fix: add it"
    assert str(DataError("x.jsonl", "no rows", "add some")) == "x.jsonl: no rows. Fix: add some"
    report = DropReport()
    assert report.total == 0 and report.summary() == ""
    report.note_read("x.jsonl", 120)
    for loc, reason in [
        ("x.jsonl:3", "malformed JSON"),
        ("x.jsonl:7", "missing field 'answer'"),
        ("x.jsonl:9", "missing field 'answer'"),
    ]:
        report.add(DataError(loc, "p", "f", reason=reason))
    assert report.summary() == (
        "dropped 3 of 120 rows from x.jsonl: 2 x missing field 'answer' (first at "
        "x.jsonl:7), 1 x malformed JSON (first at x.jsonl:3)"
    )


def test_import_and_peek_stay_light() -> None:
    code = (
        "import sys; from pipeline.config.schema import DataConfig; from pipeline.data.sources import peek_columns; "
        f"cols = peek_columns(DataConfig(name='t', path={str(DATA / 'qa.jsonl')!r})); "
        "heavy = [m for m in ('torch', 'datasets', 'transformers', 'pyarrow') if m in sys.modules]; "
        "print(sorted(cols), heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "['answer', 'question', 'topic'] []"
