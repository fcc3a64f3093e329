"""pipeline.data: sources, format detection, stage views, bad rows, eval split-off, built-in arithmetic."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.config.data_schema import ArithmeticConfig, DataConfig
from pipeline.config.enums import DataFormat, OnBadRow
from pipeline.data.errors import DataError, DropReport
from pipeline.data.loader import load_stage_data
from pipeline.data.sources import peek_columns

FIXTURES = Path(__file__).parent / "fixtures" / "data"
REPO = Path(__file__).resolve().parents[1]


def cfg(path: Path | str, **kw: Any) -> DataConfig:
    return DataConfig(name="t", path=str(path), **kw)


def arith(**kw: Any) -> DataConfig:
    return cfg("builtin:arithmetic", arithmetic=ArithmeticConfig(**kw))


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def reply(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def write_lines(tmp_path: Path, name: str, lines: list[Any]) -> Path:
    """A data file: dicts become JSON lines, strings are written verbatim."""
    path = tmp_path / name
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


# --- built-in arithmetic ---


def solve(prompt: list[dict[str, str]]) -> tuple[int, str, int, int]:
    m = re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\? Answer with just the number\.", prompt[-1]["content"])
    assert m, prompt
    a, op, b = int(m[1]), m[2], int(m[3])
    return a, op, b, {"+": a + b, "-": a - b, "*": a * b}[op]


@pytest.mark.parametrize(
    "stage, columns",
    [
        ("sft", {"prompt", "completion"}),
        ("dpo", {"prompt", "chosen", "rejected"}),
        ("grpo", {"prompt", "answer"}),
    ],
)
def test_arithmetic_views(stage: str, columns: set[str]) -> None:
    data = arith(num_train=20, num_eval=5, ops=["+", "-", "*"])
    data.system_prompt = "Be brief."
    out = load_stage_data(data, stage)
    assert set(out.train.column_names) == columns
    assert (len(out.train), len(out.eval_prompts), out.drops.total) == (20, 5, 0)
    assert set(out.eval_prompts.column_names) == {"prompt", "answer"}
    for row in out.train:
        assert row["prompt"][0] == {"role": "system", "content": "Be brief."}
        result = str(solve(row["prompt"])[3])
        if stage == "sft":
            assert row["completion"] == reply(result)
        elif stage == "dpo":
            assert row["chosen"] == reply(result)
            assert 1 <= abs(int(row["rejected"][0]["content"]) - int(result)) <= 10
        else:
            assert row["answer"] == result


def test_arithmetic_is_deterministic_distinct_and_disjoint() -> None:
    data = arith(num_train=300, num_eval=50, ops=["+", "-"], low=1, high=20, seed=7)
    first, again = load_stage_data(data, "grpo"), load_stage_data(data, "grpo")
    assert first.train.to_list() == again.train.to_list()
    train = [solve(r["prompt"])[:3] for r in first.train]
    held = [solve(r["prompt"])[:3] for r in first.eval_prompts]
    assert len(set(train)) == 300 and len(set(held)) == 50 and not set(train) & set(held)
    assert {op for _, op, _ in train} == {"+", "-"}
    assert all(1 <= a <= 20 and 1 <= b <= 20 for a, _, b in train + held)
    assert [r["answer"] for r in first.eval_prompts] == [
        str(solve(r["prompt"])[3]) for r in first.eval_prompts
    ]


def test_arithmetic_eval_set_ignores_num_train_and_limit() -> None:
    small = load_stage_data(arith(num_train=10, num_eval=8), "sft")
    limited = arith(num_train=500, num_eval=8)
    limited.limit = 3
    big = load_stage_data(limited, "sft")
    assert small.eval_prompts.to_list() == big.eval_prompts.to_list()
    assert len(big.train) == 3 and big.train.to_list() == small.train.to_list()[:3]


def test_arithmetic_template_and_exhaustive_draw() -> None:
    # 2 x 2 operands x 1 op = 4 distinct problems: all of them must come out, each once.
    data = arith(num_train=3, num_eval=1, low=1, high=2)
    data.prompt_template = "Q: {prompt}"
    out = load_stage_data(data, "grpo")
    contents = [r["prompt"][0]["content"] for r in out.train] + [out.eval_prompts[0]["prompt"][0]["content"]]
    assert sorted(contents) == sorted(
        f"Q: What is {a} + {b}? Answer with just the number." for a in (1, 2) for b in (1, 2)
    )
    assert all(len(r["prompt"]) == 1 for r in out.train)  # no system_prompt -> no system turn


@pytest.mark.parametrize(
    "kw, message",
    [
        (
            dict(num_train=4, num_eval=1, low=1, high=2),
            "5 problems requested (num_train + num_eval) but only 4",
        ),
        (dict(ops=["/"]), "field 'arithmetic.ops': unsupported operators ['/']"),
        (dict(low=5, high=1), "field 'arithmetic.low': low=5 is above high=1"),
    ],
)
def test_arithmetic_bad_settings(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(DataError, match=re.escape(message)):
        load_stage_data(arith(**kw), "sft")


# --- formats and stage views ---


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
    out = load_stage_data(cfg(FIXTURES / fixture, **extra), stage)
    assert out.train[0] == first
    assert out.drops.total == 0 and out.drops.summary() == ""


def test_messages_rows_keep_their_system_turn_and_skip_the_template() -> None:
    data = cfg(FIXTURES / "messages.jsonl", system_prompt="SYS", prompt_template="IGNORED {prompt}")
    rows = load_stage_data(data, "sft").train.to_list()
    system = {"role": "system", "content": "SYS"}
    assert rows[0]["prompt"] == [system, *user("Hi")]
    assert rows[1]["prompt"] == [{"role": "system", "content": "Be terse."}, *user("2+2?")]
    assert rows[2] == {"prompt": [system, *user("A"), *reply("B"), *user("C")], "completion": reply("D")}


def test_alpaca_template_and_empty_input() -> None:
    data = cfg(FIXTURES / "alpaca.json", prompt_template="Task: {prompt}", system_prompt="S")
    prompts = [r["prompt"] for r in load_stage_data(data, "sft").train]
    assert [p[1]["content"] for p in prompts] == [
        "Task: Translate to French\n\ncat",
        "Task: Say hi",
        "Task: Count to two",
    ]
    assert all(p[0] == {"role": "system", "content": "S"} for p in prompts)


def test_template_reads_other_columns_and_list_prompts_are_used_as_is() -> None:
    qa = cfg(FIXTURES / "qa.jsonl", columns={"question": "prompt"}, prompt_template="[{topic}] {prompt}")
    assert load_stage_data(qa, "grpo").train[1]["prompt"] == user("[geo] Capital of Italy?")
    pref = cfg(FIXTURES / "preference.jsonl", prompt_template="T {prompt}")
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
        load_stage_data(cfg(FIXTURES / fixture, **extra), stage)
    assert str(err.value).startswith(f"{FIXTURES / fixture}: ")
    assert message in str(err.value)


# --- bad rows ---

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
    path = FIXTURES / "bad_rows.jsonl"
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
    with pytest.raises(DataError, match=re.escape(f"{FIXTURES / 'bad_rows.jsonl'}:2: malformed JSON")):
        load_stage_data(cfg(FIXTURES / "bad_rows.jsonl"), "grpo")


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
    data = cfg(FIXTURES / "qa_lines.json", prompt_template="{prompt} {0}", on_bad_row=OnBadRow.skip)
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
        (str(FIXTURES.parent / "data" / "hub_dir" / "missing.jsonl"), "field 'path': file not found"),
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


# --- held-out data and limit ---


def numbered(tmp_path: Path, n: int, name: str = "d.jsonl") -> Path:
    return write_lines(tmp_path, name, [{"prompt": f"q{i}", "answer": i} for i in range(n)])


def prompts(ds: Any) -> list[str]:
    return [r["prompt"][-1]["content"] for r in ds]


def test_eval_size_split_is_seeded_disjoint_and_limit_applies_after(tmp_path: Path) -> None:
    data = cfg(numbered(tmp_path, 20), eval_size=5)
    a, b, c = (load_stage_data(data, "grpo", seed=s) for s in (1, 1, 2))
    assert prompts(a.eval_prompts) == prompts(b.eval_prompts) != prompts(c.eval_prompts)
    assert len(a.eval_prompts) == 5 and len(a.train) == 15
    assert sorted(prompts(a.train) + prompts(a.eval_prompts)) == sorted(f"q{i}" for i in range(20))
    # Train rows keep file order; limit keeps the first N of them, the held-out set is unchanged.
    assert prompts(a.train) == sorted(prompts(a.train), key=lambda p: int(p[1:]))
    data.limit = 4
    limited = load_stage_data(data, "grpo", seed=1)
    assert prompts(limited.train) == prompts(a.train)[:4] and prompts(limited.eval_prompts) == prompts(
        a.eval_prompts
    )


def test_split_off_rows_are_counted_once_in_the_drop_report(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path, "d.jsonl", [*({"prompt": f"q{i}", "answer": i} for i in range(9)), {"prompt": "x"}]
    )
    out = load_stage_data(cfg(path, eval_size=3, on_bad_row=OnBadRow.skip), "grpo")
    assert (len(out.train), len(out.eval_prompts)) == (6, 3)
    assert out.drops.summary().startswith(f"dropped 1 of 10 rows from {path}: 1 x missing field 'answer'")


def test_eval_path_and_sft_on_prompt_answer(tmp_path: Path) -> None:
    data = cfg(
        numbered(tmp_path, 3), eval_path=str(write_lines(tmp_path, "e.jsonl", [{"prompt": "e", "answer": 9}]))
    )
    out = load_stage_data(data, "sft")
    assert out.eval_prompts.to_list() == [{"prompt": user("e"), "answer": "9"}]
    assert out.train[0] == {"prompt": user("q0"), "completion": reply("0")}


def test_bad_eval_rows_are_reported_with_their_file(tmp_path: Path) -> None:
    eval_path = write_lines(tmp_path, "e.jsonl", [{"prompt": "e", "answer": 1}, {"prompt": "e"}])
    data = cfg(numbered(tmp_path, 3), eval_path=str(eval_path), on_bad_row=OnBadRow.skip)
    out = load_stage_data(data, "grpo")
    assert len(out.eval_prompts) == 1
    assert out.drops.summary() == (
        f"dropped 1 of 5 rows from {tmp_path / 'd.jsonl'}, {eval_path}: "
        f"1 x missing field 'answer' (first at {eval_path}:2)"
    )


def test_no_eval_for_formats_without_answers(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.data"):
        out = load_stage_data(cfg(FIXTURES / "alpaca.json", eval_size=1), "sft", seed=0)
    assert out.eval_prompts is None and len(out.train) == 2
    assert "format alpaca has no answer column" in caplog.text
    assert load_stage_data(cfg(FIXTURES / "qa_lines.json"), "grpo").eval_prompts is None


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"eval_size": 3}, "field 'eval_size': data.eval_size=3 leaves no training rows (3 usable rows)"),
        ({"eval_split": "test"}, "field 'eval_split': data.eval_split only selects a split of hub data"),
        ({"limit": 0}, "data.limit: field 'limit': limit=0 keeps no rows"),
    ],
)
def test_bad_eval_settings(tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(DataError, match=re.escape(message)):
        load_stage_data(cfg(numbered(tmp_path, 3), **extra), "grpo")


def test_limit_stops_reading_before_later_bad_rows(tmp_path: Path) -> None:
    path = write_lines(tmp_path, "d.jsonl", [QA, QA, "{broken"])
    data = cfg(path, limit=2)
    out = load_stage_data(data, "grpo")
    assert len(out.train) == 2 and out.drops.total == 0
    data.limit = 3
    with pytest.raises(DataError, match=re.escape(f"{path}:3: malformed JSON")):
        load_stage_data(data, "grpo")


# --- hub branch (a local folder stands in for a hub repository; never the network) ---


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)


@pytest.mark.usefixtures("offline_hub")
def test_hub_branch_reads_splits_renames_and_locates_rows() -> None:
    hub = str(FIXTURES / "hub_dir")
    data = cfg(hub, columns={"question": "prompt"}, eval_split="test", system_prompt="S")
    out = load_stage_data(data, "grpo")
    assert prompts(out.train) == ["q1", "q2", "q3"] and out.train[0]["answer"] == "1"
    assert out.eval_prompts.to_list() == [
        {"prompt": [{"role": "system", "content": "S"}, *user("t1")], "answer": "10"}
    ]
    with pytest.raises(DataError) as err:  # without the rename, rows have no prompt
        load_stage_data(cfg(hub, format=DataFormat.prompt_answer), "grpo")
    assert str(err.value).startswith(f"{hub}[train]: 3 bad rows; the first 3:\n  {hub}[train] row 1: field 'prompt': "
                                     "the field is missing")


@pytest.mark.usefixtures("offline_hub")
@pytest.mark.parametrize(
    "path, split, message",
    [
        (str(FIXTURES / "hub_dir"), "nope", "[nope]: field 'path': cannot load it (Unknown split \"nope\""),
        ("nobody/no_such_dataset", "train", "nobody/no_such_dataset[train]: field 'path': cannot load it ("),
    ],
)
def test_hub_load_failures(path: str, split: str, message: str) -> None:
    with pytest.raises(DataError) as err:
        load_stage_data(cfg(path, split=split), "grpo")
    assert message in str(err.value) and "Fix: check data.path" in str(err.value)


# --- peek_columns, errors, import weight ---


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


@pytest.mark.parametrize("path", ["builtin:arithmetic", "openai/gsm8k", "missing/file.jsonl", str(FIXTURES)])
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
        f"cols = peek_columns(DataConfig(name='t', path={str(FIXTURES / 'qa.jsonl')!r})); "
        "heavy = [m for m in ('torch', 'datasets', 'transformers', 'pyarrow') if m in sys.modules]; "
        "print(sorted(cols), heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "['answer', 'question', 'topic'] []"
