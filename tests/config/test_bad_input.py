"""Bad input, one table: each case is something a user really gets wrong, fed through the real code path, and the
error must name where (file:line / row / key), what (the field) and the fix -- or, when the user asked to skip bad
rows, a counted drop. README's "Bad input" table lists the same cases (those that need a run are in
tests/e2e/test_bad_input.py).

Row-level data cases are covered exhaustively in tests/data/; here each kind appears once."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from pipeline.config.checks import ConfigError, to_run_config
from pipeline.config.data_schema import DataConfig
from pipeline.config.enums import DataFormat, OnBadRow
from pipeline.data.errors import DataError, DropReport
from pipeline.data.loader import load_stage_data
from pipeline.train.checkpoint.resume import CheckpointError, check_checkpoint, mark_complete
from tests.helpers.runs import REPO, compose_config

GOOD = {"prompt": "What is 1 + 1?", "answer": "2"}
MCQ = {"question": "Pick", "option_A": "a", "option_B": "b", "option_C": "c", "option_D": "d", "correct_answer": "B"}


def data_file(tmp: Path, lines: list, name: str = "d.jsonl") -> Path:
    path = tmp / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def load(tmp: Path, lines: list, stage: str = "grpo", **kw) -> Callable[[], object]:
    path = data_file(tmp, lines)
    return lambda: load_stage_data(DataConfig(name="t", path=str(path), **kw), stage)


def validate(*overrides: str) -> Callable[[], object]:
    return lambda: to_run_config(compose_config(["model=tiny", *overrides]))


def checkpoint(tmp: Path, damage: str) -> Callable[[], object]:
    ckpt = tmp / "checkpoints" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth", "adapter_model.safetensors"):
        (ckpt / name).write_text("{}" if name.endswith(".json") else "x" * 64)
    if damage != "unmarked":
        mark_complete(ckpt)
    if damage == "truncated":
        (ckpt / "optimizer.pt").write_text("x" * 10)
    if damage == "bad json":
        (ckpt / "trainer_state.json").write_text("{")
        mark_complete(ckpt)
    return lambda: check_checkpoint(ckpt)


def hostfile(tmp: Path) -> Callable[[], object]:
    from pipeline.config.hostfile import parse_hostfile

    path = tmp / "hosts"
    path.write_text("# two nodes\n10.0.0.1 slots=8\n10.0.0.2 slots=eight\n")
    return lambda: parse_hostfile(str(path))


def every_row_too_long(tmp: Path) -> Callable[[], object]:
    from datasets import Dataset
    from transformers import AutoTokenizer

    from pipeline.train.stages.long_rows import long_rows

    tokenizer = AutoTokenizer.from_pretrained(str(REPO / "pipeline" / "assets" / "smollm2_tokenizer"))
    rows = Dataset.from_list([{"prompt": "a long enough prompt for sure", "completion": "yes"}] * 3)
    return lambda: long_rows(rows, tokenizer, 4, skip=False, drops=DropReport())


# (case, build(tmp) -> callable that must raise, exception, substrings that must all appear)
CASES = [
    ("malformed JSON line", lambda t: load(t, [GOOD, "{oops"]), DataError, ["d.jsonl:2", "malformed JSON", "Fix:"]),
    ("missing column", lambda t: load(t, [GOOD, {"prompt": "q"}]), DataError, ["d.jsonl:2", "'answer'", "Fix:"]),
    ("empty prompt", lambda t: load(t, [GOOD, {"prompt": " ", "answer": "2"}]), DataError,
     ["d.jsonl:2", "field 'prompt'", "empty", "Fix:"]),
    ("empty answer", lambda t: load(t, [GOOD, {"prompt": "q", "answer": ""}]), DataError,
     ["d.jsonl:2", "field 'answer'", "empty", "Fix:"]),
    ("wrong type", lambda t: load(t, [GOOD, {"prompt": ["not", "text"], "answer": "2"}]), DataError,
     ["d.jsonl:2", "field 'prompt'", "Fix:"]),
    ("MCQ answer not A-D", lambda t: load(t, [MCQ, {**MCQ, "correct_answer": "E"}], format=DataFormat.mcq),
     DataError, ["d.jsonl:2", "field 'correct_answer'", "not one of A-D", "Fix:"]),
    ("missing file", lambda t: (lambda: load_stage_data(DataConfig(name="t", path=str(t / "nope.jsonl")), "grpo")),
     DataError, ["nope.jsonl", "Fix:"]),
    ("empty dataset", lambda t: load(t, []), DataError, ["d.jsonl", "no rows", "Fix:"]),
    ("unknown model path", lambda t: validate(f"model.path={t}/no_model", "model.source=pretrained"),
     ConfigError, ["model.path=", "no such directory", "Fix:"]),
    ("model folder without config.json", lambda t: validate(f"model.path={t}", "model.source=pretrained"),
     ConfigError, ["has no config.json", "final/"]),
    ("unknown reward name", lambda t: validate("stage=grpo", "reward.terms.correctness.function=corectness"),
     ConfigError, ["reward.terms.correctness", "unknown reward 'corectness'", "Known rewards:"]),
    ("GRPO batch vs num_generations", lambda t: validate("stage=grpo", "stage.batch_size=12",
                                                         "stage.num_generations=8"),
     ConfigError, ["stage.batch_size=12", "num_generations=8", "multiple of 8"]),
    ("wrong config type", lambda t: validate("stage.learning_rate=fast"), ConfigCompositionException,
     ["stage.learning_rate=fast"]),
    ("typo'd config key", lambda t: validate("stage.learning_rat=1e-4"), ConfigCompositionException,
     ["learning_rat"]),
    ("checkpoint half-written", lambda t: checkpoint(t, "unmarked"), CheckpointError,
     ["checkpoint-2", "not completely written", "resume=auto"]),
    ("checkpoint file truncated", lambda t: checkpoint(t, "truncated"), CheckpointError,
     ["checkpoint-2", "optimizer.pt is damaged", "expected 64 bytes, found 10", "resume=auto"]),
    ("checkpoint state unreadable", lambda t: checkpoint(t, "bad json"), CheckpointError,
     ["trainer_state.json is unreadable", "Fix:"]),
    ("every row over max_length", every_row_too_long, DataError,
     ["every training row", "stage.max_length=4", "Fix: raise stage.max_length"]),
    ("bad hostfile line", hostfile, Exception, ["hosts:3", "10.0.0.2 slots=eight", "Fix"]),
]


@pytest.mark.parametrize(("case", "build", "error", "needles"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_reported_with_location_and_fix(case, build, error, needles, tmp_path: Path) -> None:
    action = build(tmp_path)
    with pytest.raises(error) as raised:
        action()
    # Hydra wraps type errors; the message users see is the whole chain.
    message = str(raised.value) + str(getattr(raised.value, "__cause__", "") or "")
    for needle in needles:
        assert needle in message, f"{case}: {needle!r} missing from: {message}"


def test_skipping_bad_rows_counts_every_drop(tmp_path: Path) -> None:
    rows = [GOOD, "{oops", {"prompt": "q"}, {"prompt": "", "answer": "1"}, GOOD]
    out = load(tmp_path, rows, on_bad_row=OnBadRow.skip)()
    assert len(out.train) == 2 and out.drops.total == 3
    assert "dropped 3 of 5 rows" in out.drops.summary()


def test_rows_over_max_length_are_counted_or_dropped() -> None:
    from datasets import Dataset
    from transformers import AutoTokenizer

    from pipeline.train.stages.long_rows import long_rows

    tokenizer = AutoTokenizer.from_pretrained(str(REPO / "pipeline" / "assets" / "smollm2_tokenizer"))

    def turn(role: str, text: str) -> list[dict]:
        return [{"role": role, "content": text}]

    rows = Dataset.from_list([
        {"prompt": turn("user", "short"), "completion": turn("assistant", "ok")},
        {"prompt": turn("user", "long " * 200), "completion": turn("assistant", "ok")},
    ])
    kept, over = long_rows(rows, tokenizer, 64, skip=False, drops=DropReport())
    assert over == 1 and len(kept) == 2  # reported, TRL truncates
    drops = DropReport()
    kept, over = long_rows(rows, tokenizer, 64, skip=True, drops=drops)
    assert over == 1 and len(kept) == 1 and drops.total == 1
    assert "training row 2" in drops.summary() and "longer than stage.max_length=64" in drops.summary()


def test_validation_errors_are_all_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        validate("stage=grpo", "stage.batch_size=12", "stage.num_generations=8",
                 "reward.terms.correctness.function=bogus")()
    assert "num_generations=8" in str(err.value) and "unknown reward 'bogus'" in str(err.value)


def test_compose_type_error_names_the_key() -> None:
    with pytest.raises(ConfigCompositionException) as err:
        validate("stage.learning_rate=fast")()
    assert isinstance(err.value.__cause__, ValidationError)
