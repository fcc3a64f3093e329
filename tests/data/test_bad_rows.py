"""Bad rows: each kind raises naming the row, the field and the fix, or is skipped and counted; empty data, the
location per file type, broken templates, missing files and unsupported suffixes."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.config.enums import DataFormat, OnBadRow
from pipeline.data.errors import DataError
from pipeline.data.loader import load_stage_data
from tests.helpers.data import DATA, cfg, user, write_lines

QA = {"prompt": "q", "answer": "1"}
PC = {"prompt": "q", "completion": "c"}
CHAT = {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}
PREF = {"prompt": "q", "chosen": "c", "rejected": "r"}
ALPACA = {"instruction": "i", "output": "o"}


def chat(*turns: Any) -> dict[str, Any]:
    return {"messages": list(turns)}


BAD_ROWS = [
    # (good first row, bad second row, stage, "field 'x': problem" expected after "<file>:2: ")
    (QA, '{"prompt": "q", "answer": ', "grpo", "malformed JSON (Expecting value at column 27)"),
    (QA, "[1, 2]", "grpo", "row is a list, not an object"),
    (QA, {"prompt": "q"}, "grpo", "field 'answer': the field is missing"),
    (QA, {"prompt": "q", "answer": None}, "grpo", "field 'answer': the field is missing"),
    (QA, {"prompt": " \t", "answer": "1"}, "grpo", "field 'prompt': the value is empty"),
    (QA, {"prompt": "q", "answer": ""}, "grpo", "field 'answer': the value is empty"),
    (QA, {"prompt": "q", "answer": {"v": 1}}, "grpo", "field 'answer': the value is a dict, not a string"),
    (QA, {"prompt": "q", "answer": [1]}, "grpo", "field 'answer': the value is a list, not a string"),
    (QA, {"prompt": "q", "answer": True}, "grpo", "field 'answer': the value is a bool, not a string"),
    (PC, {"prompt": "q", "completion": "  "}, "sft", "field 'completion': the value is empty"),
    (PREF, {**PREF, "chosen": ""}, "dpo", "field 'chosen': the value is empty"),
    (PREF, {**PREF, "rejected": " "}, "dpo", "field 'rejected': the value is empty"),
    (
        PREF,
        {**PREF, "rejected": [{"role": "user", "content": "r"}]},
        "dpo",
        "field 'rejected': a list reply must be exactly one assistant message",
    ),
    (ALPACA, {"instruction": "", "output": "o"}, "sft", "field 'instruction': the value is empty"),
    (ALPACA, {"instruction": "i", "output": "\n"}, "sft", "field 'output': the value is empty"),
    (CHAT, {"messages": "hi"}, "sft", "field 'messages': expected a list of messages, got a str"),
    (CHAT, {"messages": []}, "sft", "field 'messages': the conversation is empty"),
    (
        CHAT,
        chat({"role": "user"}, {"role": "assistant", "content": "a"}),
        "sft",
        "field 'messages': message 1 has no role/content",
    ),
    (
        CHAT,
        chat({"role": "user", "content": 3}, {"role": "assistant", "content": "a"}),
        "sft",
        "field 'messages': message 1 content is a int, not a string",
    ),
    (
        CHAT,
        chat({"role": "bot", "content": "u"}, {"role": "assistant", "content": "a"}),
        "sft",
        "field 'messages': message 1 has unknown role 'bot'",
    ),
    (
        CHAT,
        chat({"role": "assistant", "content": "a"}, {"role": "user", "content": "u"}),
        "sft",
        "field 'messages': the last turn is 'user', not 'assistant'",
    ),
    (
        CHAT,
        chat({"role": "assistant", "content": "a"}),
        "sft",
        "field 'messages': there is no turn before the reply",
    ),
    (
        CHAT,
        chat({"role": "user", "content": "u"}, {"role": "assistant", "content": " "}),
        "sft",
        "field 'messages': the final assistant content is empty",
    ),
]


@pytest.mark.parametrize("good, bad, stage, expected", BAD_ROWS)
def test_bad_row_raises_with_location_field_and_fix(
    tmp_path: Path, good: dict, bad: Any, stage: str, expected: str
) -> None:
    path = write_lines(tmp_path, "d.jsonl", [good, bad, good])
    with pytest.raises(DataError) as err:
        load_stage_data(cfg(path), stage)
    assert str(err.value).startswith(f"{path}:2: {expected}. Fix: ")


@pytest.mark.parametrize("good, bad, stage, expected", BAD_ROWS)
def test_bad_row_is_skipped_and_counted(
    tmp_path: Path, good: dict, bad: Any, stage: str, expected: str
) -> None:
    path = write_lines(tmp_path, "d.jsonl", [good, bad, good])
    out = load_stage_data(cfg(path, on_bad_row=OnBadRow.skip), stage)
    assert len(out.train) == 2 and out.drops.total == 1
    assert out.drops.summary().startswith(f"dropped 1 of 3 rows from {path}: 1 x ")
    assert out.drops.summary().endswith(f" (first at {path}:2)")


def test_skip_summary_counts_reasons_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    path = DATA / "bad_rows.jsonl"
    with caplog.at_level(logging.WARNING, logger="pipeline.data"):
        out = load_stage_data(cfg(path, on_bad_row=OnBadRow.skip), "grpo")
    assert out.train.to_list() == [
        {"prompt": user("ok 1"), "answer": "1"},
        {"prompt": user("ok 2"), "answer": "2"},
    ]
    expected = (
        f"dropped 5 of 7 rows from {path}: 2 x missing field 'answer' (first at {path}:3), "
        f"1 x malformed JSON (first at {path}:2), 1 x empty field 'prompt' (first at {path}:4), "
        f"1 x wrong type in field 'answer' (first at {path}:5)"
    )
    assert out.drops.total == 5 and out.drops.summary() == expected
    assert [r.getMessage() for r in caplog.records] == [expected]


def test_error_mode_names_the_first_bad_row_in_file_order_first() -> None:
    with pytest.raises(DataError, match=re.escape(f"{DATA / 'bad_rows.jsonl'}:2: malformed JSON")):
        load_stage_data(cfg(DATA / "bad_rows.jsonl"), "grpo")


@pytest.mark.parametrize(
    "lines, on_bad_row, message",
    [
        ([], OnBadRow.error, ": no rows: the source is empty. Fix: "),
        (["", "  "], OnBadRow.skip, ": no rows: the source is empty. Fix: "),
        (
            ["{oops", {"prompt": "q"}],
            OnBadRow.skip,
            ": no usable rows: all 2 rows read were dropped (dropped 2 of 2",
        ),
        (["{oops", "{oops"], OnBadRow.skip, ": no usable rows: all 2 rows read were dropped"),
        (["{oops"], OnBadRow.error, ":1: malformed JSON"),
    ],
)
def test_empty_data(tmp_path: Path, lines: list[Any], on_bad_row: OnBadRow, message: str) -> None:
    path = write_lines(tmp_path, "d.jsonl", lines)
    with pytest.raises(DataError, match=re.escape(f"{path}{message}")):
        load_stage_data(cfg(path, on_bad_row=on_bad_row, format=DataFormat.prompt_answer), "grpo")


@pytest.mark.parametrize(
    "name, text, location, problem",
    [
        ("d.csv", "prompt,answer\nq,1\nq,1,extra\n", "d.csv:3", "row has a different number of cells"),
        ("d.csv", 'prompt,answer\nq,1\n"multi\nline",\n', "d.csv:4", "field 'answer': the value is empty"),
        ("d.tsv", "prompt\tanswer\nq\t1\nq\n", "d.tsv:3", "row has a different number of cells"),
        (
            "d.json",
            '[{"prompt": "q", "answer": 1}, {"prompt": "q"}]',
            "d.json[row 2]",
            "field 'answer': the field",
        ),
        ("d.json", '[{"prompt": "q", "answer": 1},\n {"prompt": }]', "d.json:2", "malformed JSON"),
        (
            "d.json",
            '{"prompt": "q", "answer": 1}\n\n{"prompt": "q"}\n',
            "d.json:3",
            "field 'answer': the field",
        ),
    ],
)
def test_locations_per_file_type(tmp_path: Path, name: str, text: str, location: str, problem: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError) as err:
        load_stage_data(cfg(tmp_path / name), "grpo")
    assert str(err.value).startswith(f"{tmp_path / location}: {problem}")


def test_broken_template_is_fatal_even_when_skipping() -> None:
    data = cfg(DATA / "qa_lines.json", prompt_template="{prompt} {0}", on_bad_row=OnBadRow.skip)
    with pytest.raises(
        DataError, match=r"^data.prompt_template: field 'prompt_template': invalid format string"
    ):
        load_stage_data(data, "grpo")


def test_template_column_missing_in_a_row_is_a_bad_row(tmp_path: Path) -> None:
    path = write_lines(tmp_path, "d.jsonl", [{**QA, "topic": "t"}, QA])
    with pytest.raises(
        DataError, match=re.escape(f"{path}:2: field 'topic': data.prompt_template uses {{topic}}")
    ):
        load_stage_data(cfg(path, prompt_template="{topic}: {prompt}"), "grpo")


@pytest.mark.parametrize(
    "path, message",
    [
        ("nope/train.jsonl", "nope/train.jsonl: field 'path': file not found (looked at "),
        ("./nope", "./nope: field 'path': file not found"),
        (str(DATA.parent / "data" / "hub_dir" / "missing.jsonl"), "field 'path': file not found"),
    ],
)
def test_missing_file(path: str, message: str) -> None:
    with pytest.raises(DataError) as err:
        load_stage_data(cfg(path), "sft")
    assert message in str(err.value) and "Fix: check data.path" in str(err.value)


def test_unsupported_suffix(tmp_path: Path) -> None:
    (tmp_path / "d.txt").write_text("hello\n")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'd.txt'}: unsupported file type '.txt'")):
        load_stage_data(cfg(tmp_path / "d.txt"), "sft")
