"""Format detection and stage views: each file format becomes the rows a stage reads, templates, and mismatches named
with the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.config.enums import DataFormat
from pipeline.data.errors import DataError
from pipeline.data.loader import load_stage_data
from tests.helpers.data import DATA, cfg, reply, user


@pytest.mark.parametrize(
    "fixture, stage, extra, first",
    [
        ("messages.jsonl", "sft", {}, {"prompt": user("Hi"), "completion": reply("Hello!")}),
        (
            "alpaca.json",
            "sft",
            {},
            {"prompt": user("Translate to French\n\ncat"), "completion": reply("chat")},
        ),
        (
            "prompt_completion.csv",
            "sft",
            {},
            {"prompt": user("Name a color, please"), "completion": reply("blue")},
        ),
        (
            "preference.jsonl",
            "dpo",
            {},
            {"prompt": user("Best pet?"), "chosen": reply("A cat."), "rejected": reply("A rock.")},
        ),
        (
            "qa.jsonl",
            "grpo",
            {"columns": {"question": "prompt"}},
            {"prompt": user("What is 6 * 7?"), "answer": "42"},
        ),
        (
            "qa.jsonl",
            "sft",
            {"columns": {"question": "prompt"}},
            {"prompt": user("What is 6 * 7?"), "completion": reply("42")},
        ),
        ("qa_lines.json", "grpo", {}, {"prompt": user("1+2?"), "answer": "3"}),
        ("qa.tsv", "grpo", {"format": DataFormat.prompt_answer}, {"prompt": user("3+3?"), "answer": "6"}),
    ],
)
def test_formats_convert_to_stage_rows(fixture: str, stage: str, extra: dict[str, Any], first: dict) -> None:
    out = load_stage_data(cfg(DATA / fixture, **extra), stage)
    assert out.train[0] == first
    assert out.drops.total == 0 and out.drops.summary() == ""


def test_messages_rows_keep_their_system_turn_and_skip_the_template() -> None:
    data = cfg(DATA / "messages.jsonl", system_prompt="SYS", prompt_template="IGNORED {prompt}")
    rows = load_stage_data(data, "sft").train.to_list()
    system = {"role": "system", "content": "SYS"}
    assert rows[0]["prompt"] == [system, *user("Hi")]
    assert rows[1]["prompt"] == [{"role": "system", "content": "Be terse."}, *user("2+2?")]
    assert rows[2] == {"prompt": [system, *user("A"), *reply("B"), *user("C")], "completion": reply("D")}


def test_alpaca_template_and_empty_input() -> None:
    data = cfg(DATA / "alpaca.json", prompt_template="Task: {prompt}", system_prompt="S")
    prompts = [r["prompt"] for r in load_stage_data(data, "sft").train]
    assert [p[1]["content"] for p in prompts] == [
        "Task: Translate to French\n\ncat",
        "Task: Say hi",
        "Task: Count to two",
    ]
    assert all(p[0] == {"role": "system", "content": "S"} for p in prompts)


def test_template_reads_other_columns_and_list_prompts_are_used_as_is() -> None:
    qa = cfg(DATA / "qa.jsonl", columns={"question": "prompt"}, prompt_template="[{topic}] {prompt}")
    assert load_stage_data(qa, "grpo").train[1]["prompt"] == user("[geo] Capital of Italy?")
    pref = cfg(DATA / "preference.jsonl", prompt_template="T {prompt}")
    assert load_stage_data(pref, "dpo").train[1] == {
        "prompt": user("1+1?"),
        "chosen": reply("2"),
        "rejected": reply("3"),
    }


@pytest.mark.parametrize(
    "fixture, stage, extra, message",
    [
        (
            "qa.jsonl",
            "dpo",
            {"columns": {"question": "prompt"}},
            "stage dpo needs prompt/chosen/rejected columns; found ['answer', 'prompt', 'topic']. "
            "Fix: provide them or map yours with data.columns={yours: chosen, yours: rejected, ...}",
        ),
        (
            "preference.jsonl",
            "grpo",
            {},
            "stage grpo needs prompt/answer columns; found ['chosen', 'prompt',",
        ),
        (
            "qa.jsonl",
            "grpo",
            {},
            "no data format matches the first row's columns ['answer', 'question', 'topic']; "
            "formats need messages: messages | alpaca: instruction/output | preference: prompt/chosen/",
        ),
        (
            "qa.jsonl",
            "sft",
            {"format": DataFormat.preference},
            "field 'format': stage sft cannot train on format preference",
        ),
    ],
)
def test_format_mismatch_errors(fixture: str, stage: str, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(DataError) as err:
        load_stage_data(cfg(DATA / fixture, **extra), stage)
    assert str(err.value).startswith(f"{DATA / fixture}: ")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("fixture", "stage", "expected"),
    [
        (DATA / "alpaca.json", "sft", {"prompt": user("Translate to French\n\ncat"),
                                       "completion": [{"role": "assistant", "content": "chat"}]}),
        (DATA / "messages.jsonl", "sft", None),
        (DATA / "prompt_completion.csv", "sft", None),
        (DATA / "preference.jsonl", "dpo", {"prompt": user("Best pet?"),
                                            "chosen": [{"role": "assistant", "content": "A cat."}],
                                            "rejected": [{"role": "assistant", "content": "A rock."}]}),
    ],
    ids=lambda x: getattr(x, "name", str(x)),
)
def test_core_formats_load_for_the_stages_the_experiments_use(fixture: Path, stage: str, expected: dict | None) -> None:
    rows = load_stage_data(cfg(fixture), stage).train.to_list()
    assert rows
    if expected is not None:
        assert rows[0] == expected
