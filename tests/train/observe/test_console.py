"""pipeline/train/observe/console.py: the step line, durations and the end-of-run block, from dicts."""

from __future__ import annotations

from pathlib import Path

from pipeline.train.observe.console import duration, end_block, step_line


def test_step_line_shows_what_the_stage_logs_in_order() -> None:
    logs = {"loss": 0.04123, "reward": 0.25, "rewards/correctness/mean": 0.5, "rewards/format/mean": 0.0,
            "kl": 0.0012, "entropy": 1.234, "grad_norm": 3.0, "completions/clipped_ratio": 1.0}
    line = step_line(logs, 3, 30, 3.04, 81, 704.4)
    assert line == ("step 3/30 | loss 0.04123 | reward 0.250 (correctness 0.500, format 0.000) | kl 0.0012 | "
                    "entropy 1.23 | 3.04 s/step | ETA 1m21s | 704 tok/s")
    sft = step_line({"loss": 2.5, "mean_token_accuracy": 0.41}, 1, 0, None, None, None)
    assert sft == "step 1 | loss 2.5 | token acc 0.410"
    assert "pref acc 0.750 | margin 0.3" in step_line({"loss": 0.6, "rewards/accuracies": 0.75,
                                                      "rewards/margins": 0.3}, 1, 2, None, None, None)


def test_durations() -> None:
    assert (duration(9.6), duration(81), duration(3 * 3600 + 120)) == ("10s", "1m21s", "3h02m")


def test_end_block_says_what_improved_where_the_model_is_and_what_next(tmp_path: Path) -> None:
    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    (final / "adapter_config.json").write_text("{}")
    summary = {"stage": "grpo", "steps": 37, "wall_time_s": 895.0, "seconds_per_step": 23.0, "model": "smollm2_135m",
               "accuracy_before": 0.16, "accuracy_after": 0.54, "eval_problems": 100, "final_dir": str(final)}
    history = [{"step": 1, "reward": 0.1, "loss": 0.0}, {"step": 37, "reward": 0.6}, {"train_runtime": 1.0}]
    block = end_block(summary, history, generates=True)
    assert block.splitlines()[:4] == [
        "== grpo finished: 37 steps in 14m55s (23.00 s/step) ==",
        "held-out accuracy: 16.0% -> 54.0% (+38.0 points, 100 problems)",
        "reward: 0.1 (step 1) -> 0.6 (step 37)",
        f"model: {final} (LoRA adapter on smollm2_135m; run dir {final.parent})",
    ]
    assert f"python -m pipeline.tools.chat {final.parent}" in block
    assert f"python -m pipeline.tools.evaluate {final.parent}" in block
    # a chain's SFT step without the chain's tools has no held-out measure of its own: no evaluate line for it
    warm_start = end_block({**summary, "accuracy_before": None}, history, generates=True, evaluates=False)
    assert "tools.evaluate" not in warm_start and "tools.chat" in warm_start
    # a reward model does not generate: only export is offered
    quiet = end_block({**summary, "accuracy_before": None}, [], generates=False)
    assert "held-out" not in quiet and "tools.chat" not in quiet and "tools.export" in quiet
