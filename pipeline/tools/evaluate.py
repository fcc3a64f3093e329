"""Held-out accuracy: greedy, batched generation scored with the stage's answer extraction; and the CLI that
measures a finished run, alone or side by side with its base model or another run.

    python -m pipeline.tools.evaluate outputs/grpo/RUN                  # the tuned model on the run's held-out split
    python -m pipeline.tools.evaluate outputs/grpo/RUN compare=base     # base vs tuned, one table
    python -m pipeline.tools.evaluate outputs/grpo/RUN compare=outputs/grpo/OTHER limit=50 max_new_tokens=32

Writes <run>/eval/eval.json and the predictions per problem (predictions.csv for MCQ data, else .jsonl).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pipeline.rewards.answer import is_correct


@dataclass
class Accuracy:
    correct: int
    total: int

    @property
    def value(self) -> float:
        return self.correct / self.total if self.total else 0.0


@torch.no_grad()
def heldout_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Dataset,
    *,
    max_new_tokens: int,
    batch_size: int,
    predictions_path: Path | None = None,
    score: Callable[[str, str], bool] = is_correct,
) -> Accuracy:
    """Fraction of `problems` ({prompt: messages, answer}) whose greedy completion holds the right answer."""
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    # Left padding keeps every prompt's last token adjacent to the tokens generated after it.
    tokenizer.padding_side = "left"
    records = []
    try:
        starts = range(0, len(problems), batch_size)
        for start in tqdm(starts, desc="evaluate", unit="batch", disable=len(starts) < 2):
            rows = problems[start : start + batch_size]
            completions = generate_greedy(model, tokenizer, rows["prompt"], max_new_tokens)
            for prompt, gold, text in zip(rows["prompt"], rows["answer"], completions, strict=True):
                records.append({"prompt": prompt[-1]["content"], "answer": gold, "completion": text,
                                "correct": bool(score(text, gold))})
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    if predictions_path is not None:
        predictions_path.parent.mkdir(parents=True, exist_ok=True)
        predictions_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return Accuracy(sum(r["correct"] for r in records), len(records))


def generate_greedy(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int) -> list[str]:
    """Greedy completions of chat prompts; leaves the model's train/eval mode and padding side as they were."""
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    # Left padding keeps every prompt's last token adjacent to the tokens generated after it.
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
            )
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)


# ---- CLI: python -m pipeline.tools.evaluate RUN_DIR [compare=base|RUN_DIR] [limit=N] ... ---------------------

OPTIONS = {"compare": str, "limit": int, "max_new_tokens": int, "batch_size": int, "eval_path": str, "out": str}


def is_mcq(data_format: str, golds: list[str]) -> bool:
    """MCQ data gets a CSV of predictions (the format its recipes submit); is_correct already reads letters."""
    return data_format == "mcq" or all(str(g).strip().upper() in ("A", "B", "C", "D") for g in golds)


def evaluate_run(run_dir: Path, **opts) -> dict:
    """Measure the run's tuned model (and `compare`) on its held-out split; write eval.json + predictions."""
    from dataclasses import replace

    from pipeline.data import load_stage_data
    from pipeline.tools.tuned import load_tuned, load_untuned, run_config

    cfg = run_config(run_dir)
    if opts.get("eval_path"):
        cfg = replace(cfg, data=replace(cfg.data, eval_path=opts["eval_path"], eval_split=None, eval_size=0))
    problems = load_stage_data(cfg.data, cfg.stage.name, cfg.seed).eval_prompts
    if problems is None or not len(problems):
        raise SystemExit(f"{run_dir}: data={cfg.data.name} has no held-out rows with answers. Fix: "
                         "eval_path=FILE (prompt/answer rows), or train with data.eval_size=N or data.eval_path.")
    if opts.get("limit"):
        problems = problems.select(range(min(opts["limit"], len(problems))))
    compare = opts.get("compare")
    loaders = {"tuned": lambda: load_tuned(run_dir, cfg)}
    if compare == "base":
        loaders = {"base": lambda: load_untuned(run_dir, cfg), **loaders}
    elif compare:
        loaders[Path(compare).name] = lambda: load_tuned(Path(compare))
    out = Path(opts.get("out") or run_dir / "eval")
    results, rows = {}, None
    for name, load in loaders.items():
        model, tokenizer = load()
        path = out / f".{name}.jsonl"
        acc = heldout_accuracy(model, tokenizer, problems, predictions_path=path,
                               max_new_tokens=opts.get("max_new_tokens") or cfg.stage.eval_max_new_tokens,
                               batch_size=opts.get("batch_size") or cfg.hw.eval_batch)
        del model
        results[name] = {"correct": acc.correct, "total": acc.total, "accuracy": acc.value}
        rows = _merge_predictions(rows, name, path)
    report = {"run_dir": str(run_dir), "data": cfg.data.name, "problems": len(problems), "models": results}
    _write_outputs(out, report, rows, mcq=is_mcq(getattr(cfg.data.format, "value", ""), problems["answer"]))
    return report


def _merge_predictions(rows: list[dict] | None, name: str, path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    path.unlink()
    rows = rows or [{"prompt": r["prompt"], "answer": r["answer"]} for r in records]
    for row, record in zip(rows, records, strict=True):
        row[f"{name}_completion"], row[f"{name}_correct"] = record["completion"], record["correct"]
    return rows


def _write_outputs(out: Path, report: dict, rows: list[dict], mcq: bool) -> None:
    import csv

    from pipeline.train.monitoring import write_json_atomic

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
    lines = [f"{'model':<24} {'correct':>8} {'total':>6} {'accuracy':>9}"]
    for name, r in report["models"].items():
        lines.append(f"{name:<24} {r['correct']:>8} {r['total']:>6} {r['accuracy']:>9.1%}")
    return "\n".join(lines)


def parse_options(pairs: list[str]) -> dict:
    opts = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in OPTIONS:
            raise SystemExit(f"unknown option {pair!r}: use key=value with key one of {', '.join(OPTIONS)}.")
        try:
            opts[key] = OPTIONS[key](value)
        except ValueError:
            raise SystemExit(f"{key}={value!r}: expected {OPTIONS[key].__name__}.") from None
    return opts


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.evaluate",
                                     description="Held-out accuracy of a run.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("options", nargs="*", help=f"key=value: {', '.join(OPTIONS)}")
    args = parser.parse_args(argv)
    from pipeline.tools.tuned import RunDirError

    try:
        report = evaluate_run(args.run_dir, **parse_options(args.options))
    except RunDirError as err:
        raise SystemExit(str(err)) from None
    print(format_table(report))


if __name__ == "__main__":
    main()
