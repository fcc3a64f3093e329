"""Evaluation with tools, end to end: a GRPO run with env=calculator measures its held-out accuracy (before, during
every eval.every_steps, after) by playing each problem as its rollouts play it, and `pipeline.tools.evaluate` does
the same on the finished run, or without the tools (tools=off) to compare. The tiny model's `generate` is scripted
to call the calculator (tests/helpers/scripted_tools.py), so the tool calls really happen and the expected
accuracy is known per problem."""

from __future__ import annotations

import json
import re

from transformers import AutoTokenizer, Qwen3ForCausalLM

from pipeline.config.plan import plan_run
from pipeline.tools.evaluate import evaluate_run
from tests.helpers.runs import REPO, TINY, compose_config
from tests.helpers.scripted_tools import expected_correct, scripted_bisection, scripted_generate

TOKENIZER = REPO / "pipeline" / "assets" / "smollm2_tokenizer"


def scripted_run(tmp_path, monkeypatch, script, *extra: str):
    """A finished 2-step GRPO run of the tiny model (qwen2.5 template) whose `generate` plays `script`."""
    monkeypatch.setattr(Qwen3ForCausalLM, "generate", script(AutoTokenizer.from_pretrained(TOKENIZER)))
    run_dir = tmp_path / "run"
    overrides = [*TINY, "stage.batch_size=4", "stage.num_generations=4", "model.chat_template=qwen2.5", *extra,
                 f"output_dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}"]
    from pipeline.train.stages import run_stage

    run_stage(plan_run(compose_config(overrides), run_dir))
    return run_dir


def jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_held_out_accuracy_runs_the_tools_in_training_and_in_evaluate(tmp_path, monkeypatch) -> None:
    run_dir = scripted_run(tmp_path, monkeypatch, scripted_generate, "env=calculator",
                           "stage.max_completion_length=160", "eval.every_steps=1")

    before = jsonl(run_dir / "samples" / "eval_before.jsonl")
    firsts = [int(re.search(r"What is (\d+) \+", r["prompt"]).group(1)) for r in before]
    expected = sum(map(expected_correct, firsts)) / len(firsts)
    assert 0 < expected < 1, firsts  # the problems tell right from wrong
    summary = json.loads((run_dir / "summary.json").read_text())
    # the scripted model answers from the tool results: before and after training alike
    assert summary["accuracy_before"] == summary["accuracy_after"] == expected
    assert all(r["trajectory"][1]["role"] == "tool" for r in before)
    assert [r["tool_calls"] for r in before] == [1 + (a % 2 == 0 and a % 3 == 0) for a in firsts]
    # during training: eval/accuracy and the episodes' tool use, every step
    logged = [row for row in jsonl(run_dir / "metrics.jsonl") if "eval/accuracy" in row]
    assert [row["eval/accuracy"] for row in logged] == [expected, expected]
    assert all(row["eval/tool_calls"] >= 1 and row["eval/turns"] >= 2 for row in logged)
    # training's own counters hold the rollouts' calls only (held-out episodes count apart)
    assert summary["tools"]["calculate"]["calls"] == 2 * 4

    report = evaluate_run(run_dir, compare="base")
    assert report["tools"] == "on" and report["problems"] == len(firsts)
    assert report["models"]["tuned"]["accuracy"] == report["models"]["base"]["accuracy"] == expected
    assert report["models"]["tuned"]["tool_calls"] == sum(r["tool_calls"] for r in before) / len(before)
    rows = jsonl(run_dir / "eval" / "predictions.jsonl")
    assert rows[0]["tuned_trajectory"][1]["role"] == "tool"
    saved = json.loads((run_dir / "eval" / "eval.json").read_text())
    assert saved["tools"] == "on"

    off = evaluate_run(run_dir, tools="off", out=str(tmp_path / "off"))
    # one turn, no tools: the scripted model's answer is its unanswered call
    assert off["tools"] == "off" and off["models"]["tuned"]["accuracy"] == 0.0
    assert "tool_calls" not in off["models"]["tuned"]
    assert json.loads((tmp_path / "off" / "eval.json").read_text())["tools"] == "off"


def test_an_environment_run_is_evaluated_on_held_out_games(tmp_path, monkeypatch) -> None:
    run_dir = scripted_run(tmp_path, monkeypatch, scripted_bisection, "env=guess_number", "env.placeholder_rows=8",
                           "stage.max_completion_length=600", "eval.limit=6")
    # the run measures its success rate on eval.limit held-out games (not the data group's arithmetic problems)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["accuracy_before"] == summary["accuracy_after"] == 1.0 and summary["eval_problems"] == 6
    in_run = jsonl(run_dir / "samples" / "eval_before.jsonl")

    report = evaluate_run(run_dir, limit=6)
    assert report["tools"] == "on" and report["data"] == "guess_number" and report["problems"] == 6
    tuned = report["models"]["tuned"]
    # bisection finds every secret: each game won (reward > 0), in 2..8 turns (guesses + the closing answer)
    assert tuned["accuracy"] == 1.0 and 0.5 <= tuned["env_reward"] <= 1.0 and 2 <= tuned["turns"] <= 8
    rows = jsonl(run_dir / "eval" / "predictions.jsonl")
    games = [r["tuned_trajectory"] for r in rows]
    hints = [[m["content"] for m in g if m["role"] == "tool"] for g in games]
    assert all(h[-1].startswith("Correct!") for h in hints), hints
    found = [h[-1] for h in hints]
    # held-out games are not the training games: their seeds follow the 8 training rows'
    assert len({r["prompt"] for r in rows}) == 1  # the rules; the secrets differ by seed
    assert len(set(found)) > 1
    # the run and evaluate play the same held-out games
    assert [[m["content"] for m in r["trajectory"] if m["role"] == "tool"][-1] for r in in_run] == found
