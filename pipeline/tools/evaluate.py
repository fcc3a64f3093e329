"""Held-out accuracy of a finished run: alone, or side by side with its base model or another run.

    python -m pipeline.tools.evaluate outputs/grpo/RUN                  # the tuned model on the run's held-out split
    python -m pipeline.tools.evaluate outputs/grpo/RUN compare=base     # base vs tuned, one table
    python -m pipeline.tools.evaluate outputs/grpo/RUN compare=outputs/grpo/OTHER limit=50 max_new_tokens=32
    python -m pipeline.tools.evaluate outputs/grpo/RUN which=best       # <run>/best/ (eval.every_steps=N runs)
    python -m pipeline.tools.evaluate outputs/grpo/RUN harness=pipeline_heldout compare=base   # lm-eval tasks
    python -m pipeline.tools.evaluate outputs/grpo/RUN compare=base tools=off   # a tool run, without its tools
    python -m pipeline.tools.evaluate outputs/sft_then_grpo/RUN/2_grpo compare=model   # vs model= itself

compare=base is the weights the run started from, init_from merged (for a chain's step: the step before it);
compare=model is the run's model option alone, where a chain began.

A run trained with tools or an environment is evaluated as its rollouts ran (tools=on, its default): each problem
is an episode with the run's tools under the env group's limits (pipeline/train/observe/episodes.py); eval.json
says `tools: on|off` and, with tools, each model's tool calls, turns and environment reward per episode. An
environment that writes its own prompts (env.placeholder_rows: guess_number) plays held-out games: seeds after the
training rows' (limit=N of them, 64 by default), a game counting as correct when its reward is positive.

Writes <run>/eval/eval.json and the predictions per problem (predictions.csv for MCQ data, else .jsonl).
harness=TASKS runs lm-evaluation-harness instead, against our own server (pipeline/tools/harness.py says how and
where its results land).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import replace
from pathlib import Path

from pipeline.config.run_dir import RunDir, write_json_atomic
from pipeline.config.user_errors import reported
from pipeline.data.loader import load_stage_data
from pipeline.envs.loading import heldout_games
from pipeline.tools.lean_start import keep_unused_libraries_out
from pipeline.tools.options import parse_options
from pipeline.tools.tuned import RunDirError, final_dir, load_tuned, load_untuned, run_config
from pipeline.train.observe.episodes import eval_agent, has_tools
from pipeline.train.observe.heldout import heldout_records

# ---- CLI: python -m pipeline.tools.evaluate RUN_DIR [compare=base|model|RUN_DIR] [limit=N] ... ---------------------

OPTIONS = {"compare": str, "limit": int, "max_new_tokens": int, "batch_size": int, "eval_path": str, "out": str,
           "which": str, "tools": str, "harness": str, "harness.include_path": str, "harness.gsm8k": str,
           "harness.mcq": str}


def is_mcq(data_format: str, golds: list[str]) -> bool:
    """MCQ data gets a CSV of predictions (the format its recipes submit); is_correct already reads letters."""
    return data_format == "mcq" or all(str(g).strip().upper() in ("A", "B", "C", "D") for g in golds)


def model_loaders(run_dir: Path, cfg, which: str, compare: str | None) -> dict:
    """{name: () -> (model, tokenizer)}: the base first when compared with it, then the tuned (or best) model."""
    # which=best is reported as "best", so a table never passes the best step off as the final model
    loaders = {"tuned" if which == "final" else which: lambda: load_tuned(run_dir, cfg, which)}
    if compare == "base":
        loaders = {"base": lambda: load_untuned(run_dir, cfg), **loaders}
    elif compare == "model":  # without init_from: a chain step's base is the step before, not the model it began at
        loaders = {"model": lambda: load_untuned(run_dir, replace(cfg, init_from=None)), **loaders}
    elif compare:
        loaders[Path(compare).name] = lambda: load_tuned(Path(compare))
    return loaders


def evaluate_run(run_dir: Path, **opts) -> dict:
    """Measure the run's tuned model (and `compare`) on its held-out split; write eval.json + predictions.
    With harness=TASKS, lm-evaluation-harness's tasks instead (pipeline.tools.harness)."""
    cfg = run_config(run_dir)
    if opts.get("harness"):
        from pipeline.tools.harness import evaluate_harness

        which = opts.get("which") or "final"
        final_dir(run_dir, which)  # a missing best/ or final/ is said before any model loads
        return evaluate_harness(run_dir, cfg, model_loaders(run_dir, cfg, which, opts.get("compare")),
                                Path(opts.get("out") or RunDir(run_dir).eval), opts)
    if any(key.startswith("harness.") for key in opts):
        raise SystemExit("harness.*= options need harness=TASKS (e.g. harness=pipeline_heldout).")
    if opts.get("eval_path"):
        cfg = replace(cfg, data=replace(cfg.data, eval_path=opts["eval_path"], eval_split=None, eval_size=0))
    tools = _tools(cfg, opts.get("tools"), run_dir)
    cfg = replace(cfg, eval=replace(cfg.eval, tools=tools))
    games = tools and cfg.env.placeholder_rows is not None  # the environment writes its prompts: held-out games
    problems = heldout_games(cfg.env, cfg.seed, opts.get("limit")) if games else \
        load_stage_data(cfg.data, cfg.stage.name, cfg.seed).eval_prompts
    if problems is None or not len(problems):
        raise SystemExit(f"{run_dir}: data={cfg.data.name} has no held-out rows with answers. Fix: "
                         "eval_path=FILE (prompt/answer rows), or train with data.eval_size=N or data.eval_path.")
    if opts.get("limit"):
        problems = problems.select(range(min(opts["limit"], len(problems))))
    which = opts.get("which") or "final"
    loaders = model_loaders(run_dir, cfg, which, opts.get("compare"))
    out = Path(opts.get("out") or RunDir(run_dir).eval)
    results, rows = {}, None
    for name, load in loaders.items():
        model, tokenizer = load()
        path = out / f".{name}.jsonl"
        agent = eval_agent(cfg, tokenizer, opts.get("max_new_tokens"))
        records = heldout_records(model, tokenizer, problems, agent=agent,
                                  max_new_tokens=opts.get("max_new_tokens") or cfg.stage.eval_max_new_tokens,
                                  batch_size=opts.get("batch_size") or cfg.hw.eval_batch)
        del model
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))
        results[name] = _scores(records)
        rows = _merge_predictions(rows, name, path)
    report = {"run_dir": str(run_dir), "which": which, "data": cfg.env.name if tools and cfg.env.placeholder_rows
              is not None else cfg.data.name, "problems": len(problems), "tools": "on" if tools else "off",
              "models": results}
    _write_outputs(out, report, rows, mcq="answer" in problems.column_names
                   and is_mcq(getattr(cfg.data.format, "value", ""), problems["answer"]))
    return report


def _tools(cfg, asked: str | None, run_dir: Path) -> bool:
    """tools=on|off: on by default for a run that had tools; on for a run without them is an error."""
    if asked not in (None, "on", "off"):
        raise SystemExit(f"tools={asked}: use tools=on (the run's tools, as its rollouts had them) or tools=off.")
    if asked == "on" and not has_tools(cfg):
        raise SystemExit(f"tools=on: {run_dir} was trained without tools (env=none, no stage.tools). Fix: leave "
                         "tools= out.")
    return has_tools(cfg) and asked != "off"


def _scores(records: list[dict]) -> dict:
    correct = sum(r["correct"] for r in records)
    scores = {"correct": correct, "total": len(records), "accuracy": correct / len(records) if records else 0.0}
    for key, name in (("tool_calls", "tool_calls"), ("tool_failures", "tool_failures"), ("turns", "turns"),
                      ("reward", "env_reward")):
        values = [r[key] for r in records if key in r]
        if values:  # per episode, with tools
            scores[name] = sum(values) / len(values)
    return scores


def _merge_predictions(rows: list[dict] | None, name: str, path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    path.unlink()
    rows = rows or [{"prompt": r["prompt"], "answer": r.get("answer")} for r in records]
    for row, record in zip(rows, records, strict=True):
        row[f"{name}_completion"], row[f"{name}_correct"] = record["completion"], record["correct"]
        if "trajectory" in record:  # what the tools answered, turn by turn
            row[f"{name}_trajectory"] = record["trajectory"]
    return rows


def _write_outputs(out: Path, report: dict, rows: list[dict], mcq: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if mcq:
        with (out / "predictions.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        (out / "predictions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    # eval.json last: its presence means the predictions beside it are complete.
    write_json_atomic(out / "eval.json", report)


def format_table(report: dict) -> str:
    lines = [f"{'model':<24} {'correct':>8} {'total':>6} {'accuracy':>9}" + "  (tools " + report.get("tools", "off")
             + ")"]
    for name, r in report["models"].items():
        extra = "".join(f"  {key}={r[key]:.2f}" for key in ("tool_calls", "turns", "env_reward") if key in r)
        lines.append(f"{name:<24} {r['correct']:>8} {r['total']:>6} {r['accuracy']:>9.1%}{extra}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.evaluate",
                                     description="Held-out accuracy of a run.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("options", nargs="*", help=f"key=value: {', '.join(OPTIONS)}")
    args = parser.parse_args(argv)
    try:
        report = evaluate_run(args.run_dir, **parse_options(args.options, OPTIONS))
    except RunDirError as err:
        raise SystemExit(str(err)) from None
    if "tasks" in report:
        from pipeline.tools.harness import format_harness_table

        print(format_harness_table(report))
    else:
        print(format_table(report))


if __name__ == "__main__":
    keep_unused_libraries_out(sys.argv[1:])  # before the model libraries load: no bitsandbytes a run did not use
    with reported():  # a user error: one block on stderr, exit 2
        main()
