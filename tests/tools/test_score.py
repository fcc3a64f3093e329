"""`python -m pipeline.tools.score FILE reward=...`: per-term statistics of a JSONL of prompts and completions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.tools.score import score_file
from tests.helpers.runs import REPO, offline_env

ROWS = [
    {"prompt": "What is 2 + 3?", "completion": "<reasoning>add</reasoning><answer>5</answer>", "answer": "5"},
    {"prompt": [{"role": "user", "content": "What is 2 + 2?"}], "completion": "It is 5", "answer": "4"},
    {"prompt": "Add one", "answer": "x", "tests": ["assert f(1) == 2", "assert f(2) == 4"],
     "completion": [{"role": "assistant", "content": "```python\ndef f(x):\n    return x + 1\n```"}]},
]


def write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.tools.score", *args], cwd=cwd, env=offline_env(),
                          capture_output=True, text=True, timeout=300)


def test_statistics_per_term_and_total(tmp_path: Path) -> None:
    report = score_file(write(tmp_path / "rows.jsonl", ROWS), ["reward=correctness_format"],
                        out=str(tmp_path / "scored.jsonl"))
    assert report["rows"] == 3 and report["reward"] == "correctness_format"
    correctness, fmt = report["terms"]["correctness"], report["terms"]["xml_format"]
    assert (correctness["mean"], correctness["min"], correctness["max"], correctness["failures"]) == (
        pytest.approx(1 / 3), 0.0, 1.0, 0)
    assert fmt["mean"] == pytest.approx(0.8 / 3) and report["total"]["max"] == pytest.approx(1.8)
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert [r["scores"]["correctness"] for r in scored] == [1.0, 0.0, 0.0] and scored[0]["total"] == 1.8


def test_overrides_compose_like_a_run_and_rows_without_a_column_score_none(tmp_path: Path) -> None:
    report = score_file(write(tmp_path / "rows.jsonl", ROWS), ["reward=code", "reward.terms.tests.weight=2"])
    tests = report["terms"]["tests"]
    assert (tests["mean"], tests["none"], tests["weight"]) == (0.5, 2, 2.0)
    assert report["total"]["max"] == 1.0


def test_the_cli_prints_a_table_and_refuses_bad_input_naming_the_fix(tmp_path: Path) -> None:
    rows = write(tmp_path / "rows.jsonl", ROWS)
    ok = cli(str(rows), "reward=code", "limit=3", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0].startswith(f"{rows}: 3 rows, reward=code") and lines[1].split()[:3] == ["term", "weight", "mean"]
    assert lines[2].split()[:4] == ["tests", "1", "0.5000", "0.0000"]

    no_url = cli(str(rows), "reward=judge", cwd=tmp_path)
    assert no_url.returncode != 0 and "reward.terms.judge (judge) needs url and model" in no_url.stderr
    bad = cli(str(write(tmp_path / "bad.jsonl", [ROWS[0], "{not json"])), cwd=tmp_path)
    assert bad.returncode != 0 and f"{tmp_path / 'bad.jsonl'}:2: not JSON" in bad.stderr
    missing = cli(str(write(tmp_path / "m.jsonl", [{"prompt": "p"}])), cwd=tmp_path)
    assert "m.jsonl:1: no completion field" in missing.stderr
    unknown = cli(str(rows), "limt=3", cwd=tmp_path)
    assert "unknown option 'limt=3'" in unknown.stderr
    secret = cli(str(rows), "reward=judge", "reward.terms.judge.api_key=sk-123456789", cwd=tmp_path)
    assert secret.returncode != 0 and "carry a credential" in secret.stderr and "sk-123456789" not in secret.stderr


def test_a_failing_reward_stops_with_the_term_and_row_not_a_traceback(tmp_path: Path) -> None:
    rows = write(tmp_path / "rows.jsonl", [{"prompt": "p", "completion": "a"}, {"prompt": "q", "completion": "x"}])
    target = "reward.terms.correctness._target_=tests.helpers.rewards.breaks_on_x"
    proc = cli(str(rows), "reward=correctness", target, cwd=REPO)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert ("reward term 'correctness' failed on row 1 of 2 (prompt 'q', completion 'x'): ZeroDivisionError"
            in proc.stderr)
