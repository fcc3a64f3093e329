"""Evaluation during training (eval.every_steps), the kept best/ model, and which=best in the tools.

One real 3-step GRPO run of the tiny model evaluates after every step; the run dir is read back. SFT without
answers keeps the lowest eval loss; DPO logs eval loss beside accuracy; 2-rank runs under -m slow."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers.distributed import RUN
from tests.helpers.runs import TINY, run_pipeline, run_tool

GRPO = ["stage=grpo", "stage.batch_size=8", "stage.num_generations=4", "stage.max_completion_length=8",
        "reward=shaped", "max_steps=3"]


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    tmp = tmp_path_factory.mktemp("evaltrain")
    run_dir = tmp / "run"
    # Every step is checkpointed too, so best/ can be compared with the checkpoint of the step it claims.
    proc = run_pipeline([*TINY, *GRPO, "eval.every_steps=1", "eval.samples=2", "stage.save_steps=1",
                         "checkpoint.keep=0", f"output_dir={run_dir}", f"paths.cache_dir={model_cache}"], cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "held-out problems x (1 greedy + 2 sampled) x 4 new tokens" in proc.stdout + proc.stderr
    return run_dir


def test_eval_metrics_go_to_metrics_jsonl_and_tensorboard(evaluated_run: Path) -> None:
    rows = [json.loads(line) for line in (evaluated_run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [1, 2, 3]
    for r in evals:
        assert {"eval/pass@2", "eval/maj@2", "eval/correctness", "eval/length", "eval/reward"} <= set(r)
        assert r["eval/pass@2"] >= r["eval/maj@2"] - 1e-9 and 0 <= r["eval/accuracy"] <= 1
        # the weighted total of the reward terms (shaped: correctness x1 + length x0.1)
        assert r["eval/reward"] == pytest.approx(r["eval/correctness"] + 0.1 * r["eval/length"])
    # GRPO's own training metrics are still logged at every step (the eval log must not swallow them).
    assert [r["step"] for r in rows if "rewards/correctness/mean" in r and "loss" in r] == [1, 2, 3]

    events = EventAccumulator(str(evaluated_run / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("eval/accuracy")}
    assert logged == pytest.approx({r["step"]: r["eval/accuracy"] for r in evals})
    assert len(events.Scalars("eval/pass@2")) == 3 and len(events.Scalars("train/loss")) == 3


def test_best_holds_the_step_summary_names(evaluated_run: Path) -> None:
    summary = json.loads((evaluated_run / "summary.json").read_text())
    best = summary["best_checkpoint"]
    assert best == json.loads((evaluated_run / "best" / "best.json").read_text())
    # default metric with held-out answers: greedy accuracy, higher is better; the first step reaching the max
    assert best["metric"] == "eval/accuracy"
    rows = [json.loads(line) for line in (evaluated_run / "metrics.jsonl").read_text().splitlines()]
    values = {r["step"]: r["eval/accuracy"] for r in rows if "eval/accuracy" in r}
    assert best["value"] == max(values.values()) and best["step"] == min(s for s, v in values.items()
                                                                         if v == best["value"])
    assert not (evaluated_run / "best.partial").exists()
    kept = load_file(str(evaluated_run / "best" / "adapter_model.safetensors"))
    step = load_file(str(evaluated_run / "checkpoints" / f"checkpoint-{best['step']}" / "adapter_model.safetensors"))
    final = load_file(str(evaluated_run / "final" / "adapter_model.safetensors"))
    assert kept.keys() == step.keys() and all((kept[k] == step[k]).all() for k in kept)
    if best["step"] != summary["steps"]:
        assert any((kept[k] != final[k]).any() for k in kept), "best/ holds the final adapter, not its step's"


def test_which_best_loads_best_in_evaluate_and_export(evaluated_run: Path) -> None:
    proc = run_tool("evaluate", str(evaluated_run), "which=best")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((evaluated_run / "eval" / "eval.json").read_text())
    best = json.loads((evaluated_run / "best" / "best.json").read_text())
    # Re-measured from disk with the same greedy settings: the value logged during training.
    assert report["which"] == "best" and report["models"]["best"]["accuracy"] == pytest.approx(best["value"])
    proc = run_tool("export", str(evaluated_run), "which=best")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (evaluated_run / "export_best" / "model.safetensors").is_file()


def test_run_exports_as_gguf_through_the_cli(evaluated_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "gguf"
    proc = run_tool("export", str(evaluated_run), "format=gguf", f"out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from gguf import GGUFReader

    merged = load_file(str(out / "model.safetensors"))
    reader = GGUFReader(str(out / "model.gguf"))  # ~15 s: the 49k-token vocabulary is parsed field by field
    shapes = {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}
    # The tiny run is qwen3 (tied, head_dim 16): every merged tensor is in the file under its GGUF name and shape.
    # transformers cannot load it back (its loader assumes qwen3's head_dim 128; pipeline/tools/gguf_export.py).
    assert len(shapes) == len(merged)
    assert shapes["token_embd.weight"] == tuple(merged["model.embed_tokens.weight"].shape)
    assert shapes["blk.0.attn_q_norm.weight"] == (16,)
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "qwen3"
    assert "tokenizer.chat_template" in reader.fields


def test_which_best_without_best_names_the_fix(evaluated_run: Path, tmp_path: Path) -> None:
    from pipeline.tools.evaluate import evaluate_run
    from pipeline.tools.export import export_run
    from pipeline.tools.tuned import RunDirError

    shutil.copy(evaluated_run / "config.yaml", tmp_path / "config.yaml")
    (tmp_path / "final").mkdir()
    proc = run_tool("evaluate", str(tmp_path), "which=best")
    assert proc.returncode == 2 and "kept no best model" in proc.stderr and "eval.every_steps=N" in proc.stderr
    with pytest.raises(RunDirError, match="kept no best model. Fix: train with eval.every_steps=N"):
        export_run(tmp_path, which="best")
    with pytest.raises(RunDirError, match="which=last: use which=final"):
        evaluate_run(tmp_path, which="last")


@pytest.mark.slow
def test_sample_scored_groups_then_train_group_pref_and_dpo(evaluated_run: Path, tmp_path: Path,
                                                            model_cache: Path) -> None:
    """The offline loop: sample n completions per prompt from a finished run, score them with reward terms, and
    train stage=group_pref and stage=dpo on the file as written."""
    groups = tmp_path / "groups.jsonl"
    # ~6 random tokens are ~25-45 characters: around the length term's target of 32, so scores differ in a group
    proc = run_tool("sample", str(evaluated_run), "n=4", "reward=shaped", "limit=8", "max_new_tokens=6",
                f"out={groups}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    rows = [json.loads(line) for line in groups.read_text().splitlines()]
    assert report["groups"] == len(rows) >= 2 and report["groups"] + report["dropped_ties"] == 8
    for row in rows:
        assert row["prompt"][-1]["role"] == "user" and len(row["responses"]) == len(row["scores"]) == 4
        assert len(set(row["scores"])) > 1
    # The scores are the GRPO reward terms' weighted sum: recompute one group with the registry.
    from pipeline.rewards import build_reward_funcs, score_completions
    from pipeline.tools.sample import reward_option

    funcs, weights = build_reward_funcs(reward_option("shaped").terms)
    # the built-in arithmetic prompt: "What is a + b? ..."
    a, op, b = rows[0]["prompt"][-1]["content"].split("?")[0].removeprefix("What is ").split()
    assert op == "+"
    answer = str(int(a) + int(b))
    _, totals = score_completions(funcs, weights, [rows[0]["prompt"]] * 4, rows[0]["responses"],
                                  {"answer": [answer] * 4})
    assert totals == pytest.approx(rows[0]["scores"])

    for stage in ("group_pref", "dpo"):
        run_dir = tmp_path / stage
        proc = run_pipeline([f"stage={stage}", "model=tiny", "data=jsonl", f"data.path={groups}", "max_steps=2",
                             "stage.batch_size=2", "stage.max_length=64", f"output_dir={run_dir}",
                             f"paths.cache_dir={model_cache}"], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-4000:]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["steps"] == 2 and math.isfinite(summary["metrics"]["train_loss"])


@pytest.mark.slow
@pytest.mark.usefixtures("deepspeed_ops")
def test_eval_and_best_under_zero3_on_two_ranks(tmp_path: Path, model_cache: Path) -> None:
    """ZeRO-3 partitions the weights: every rank must join the evaluation's generation and best/'s gather, or the
    run hangs. Two CPU ranks (accelerate relaunch, gloo), 2 steps, evaluating after each."""
    from tests.helpers.distributed import TWO_RANKS, launch

    proc = launch([sys.executable, RUN, *TINY, *GRPO[:-1],
                   "max_steps=2", *TWO_RANKS, "zero=zero3", "eval.every_steps=1", "eval.samples=2",
                   f"paths.output_root={tmp_path}", f"paths.cache_dir={model_cache}"], tmp_path, "z3eval")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    run_dir = tmp_path / "grpo" / "z3eval"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["engine"] == "deepspeed-zero3" and summary["world_size"] == 2
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval/pass@2" in r] == [1, 2]
    kept = load_file(str(run_dir / "best" / "adapter_model.safetensors"))
    # the ZeRO-3 + LoRA trap (peft #453): a gathered save with empty tensors
    assert kept and all(t.numel() > 0 for t in kept.values())
    assert summary["best_checkpoint"] == json.loads((run_dir / "best" / "best.json").read_text())


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_sft_without_answers_evaluates_loss_and_keeps_the_lowest(tmp_path: Path, model_cache: Path) -> None:
    """Chat rows have no gold answer: the held-out rows (data.eval_size) give eval/loss, which picks best/."""
    rows = [{"prompt": f"Say {word}.", "completion": f"{word} {word}."} for word in
            ("red", "blue", "green", "amber", "teal", "plum", "rose", "sand", "mint", "gold", "jade", "ruby")]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "run"
    proc = run_pipeline([*TINY, "stage=sft", "data=jsonl", f"data.path={data}", "data.eval_size=4",
                         "stage.batch_size=4", "max_steps=3", "stage.learning_rate=1e-3", "eval.every_steps=1",
                         "stage.save_steps=1", "checkpoint.keep=0", f"output_dir={run_dir}",
                         f"paths.cache_dir={model_cache}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "evaluating the loss every 1 steps on 4 held-out rows" in proc.stdout + proc.stderr
    losses = {r["step"]: r["eval/loss"] for r in _metrics(run_dir) if "eval/loss" in r}
    assert sorted(losses) == [1, 2, 3] and all(math.isfinite(v) for v in losses.values())
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    assert {e.step: e.value for e in events.Scalars("eval/loss")} == pytest.approx(losses)
    # the training log of every step survives the evaluation's own log
    assert len(events.Scalars("train/loss")) == 3

    best = json.loads((run_dir / "summary.json").read_text())["best_checkpoint"]
    assert best == json.loads((run_dir / "best" / "best.json").read_text())
    assert best["metric"] == "eval/loss" and best["value"] == min(losses.values())
    assert best["step"] == min(step for step, value in losses.items() if value == best["value"])
    kept = load_file(str(run_dir / "best" / "adapter_model.safetensors"))
    step = load_file(str(run_dir / "checkpoints" / f"checkpoint-{best['step']}" / "adapter_model.safetensors"))
    assert kept.keys() == step.keys() and all((kept[k] == step[k]).all() for k in kept)


def test_dpo_logs_eval_loss_beside_accuracy(tmp_path: Path, model_cache: Path) -> None:
    """Arithmetic pairs have answers too: both the DPO eval loss (and its reward accuracy) and the greedy accuracy
    are logged; checkpoint.best_metric may name any of them."""
    run_dir = tmp_path / "run"
    proc = run_pipeline([*TINY, "stage=dpo", "stage.batch_size=4", "eval.every_steps=2", "eval.limit=4",
                         "checkpoint.best_metric=eval/rewards/accuracies", f"output_dir={run_dir}",
                         f"paths.cache_dir={model_cache}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    evals = [r for r in _metrics(run_dir) if "eval/loss" in r or "eval/accuracy" in r]
    assert {r["step"] for r in evals} == {2}
    merged = {k: v for r in evals for k, v in r.items()}
    assert {"eval/loss", "eval/rewards/accuracies", "eval/accuracy"} <= set(merged)
    best = json.loads((run_dir / "summary.json").read_text())["best_checkpoint"]
    assert best["metric"] == "eval/rewards/accuracies" and best["value"] == merged["eval/rewards/accuracies"]


@pytest.mark.slow
@pytest.mark.parametrize("zero", ["none", "zero2"])
def test_eval_loss_and_best_on_two_ranks(tmp_path: Path, model_cache: Path, zero: str) -> None:
    """evaluate() shards the held-out rows over the ranks and gathers the loss: both ranks must call it (and both
    join best/'s save), or the run hangs until the collective time-out."""
    from tests.helpers.distributed import TWO_RANKS, launch

    proc = launch([sys.executable, RUN, *TINY, "stage=sft",
                   "stage.batch_size=8", *TWO_RANKS, f"zero={zero}", "eval.every_steps=1", "eval.limit=8",
                   "checkpoint.best_metric=eval/loss", "hw.collective_timeout_s=120",
                   f"paths.output_root={tmp_path}", f"paths.cache_dir={model_cache}"], tmp_path, "ddpeval")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    run_dir = tmp_path / "sft" / "ddpeval"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    losses = {r["step"]: r["eval/loss"] for r in _metrics(run_dir) if "eval/loss" in r}
    assert sorted(losses) == [1, 2]
    assert summary["best_checkpoint"]["value"] == min(losses.values())
    assert (run_dir / "best" / "adapter_model.safetensors").is_file()
