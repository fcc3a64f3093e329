"""What a run shows while and after it trains: TensorBoard scalars and completions as text, samples/*.jsonl,
metrics.jsonl, plots/*.png and summary.json; the on-demand plot command. Real GRPO and SFT runs on the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipeline.train.observe.plots import series
from tests.helpers.runs import TINY, offline_env, run_pipeline

PNG = b"\x89PNG\r\n\x1a\n"


def events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


def texts(acc: EventAccumulator, tag: str) -> dict[int, str]:
    return {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors(tag)}


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("grpo_monitoring")
    run_dir = tmp / "run"
    proc = run_pipeline(
        [*TINY, "max_steps=3", "stage=grpo", "stage.batch_size=8", "stage.num_generations=4",
         "stage.max_completion_length=8", "reward=shaped", "stage.beta=0.05", "logging.samples_every=2",
         "logging.samples_shown=3", f"output_dir={run_dir}", f"paths.cache_dir={tmp / 'cache'}"],
        cwd=tmp, OMP_NUM_THREADS="1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_tensorboard_has_every_training_scalar(grpo_run: Path) -> None:
    tags = set(events(grpo_run).Tags()["scalars"])
    expected = {
        "loss", "learning_rate", "grad_norm", "reward", "reward_std", "rewards/correctness/mean",
        "rewards/length/mean", "kl", "entropy", "completions/mean_length", "completions/min_length",
        "completions/max_length", "completions/clipped_ratio", "perf/samples_per_s", "perf/peak_memory_mb",
    }
    assert {f"train/{t}" for t in expected} <= tags, sorted({f"train/{t}" for t in expected} - tags)


def test_completions_are_tensorboard_text_and_jsonl_every_n_steps(grpo_run: Path) -> None:
    shown = texts(events(grpo_run), "completions/text_summary")
    # samples_every=2 over 3 steps: step 2 only
    assert sorted(shown) == [2]
    table = shown[2]
    assert table.startswith("| prompt | completion | correctness | length |")
    assert table.count("\n") == 2 + 3 and "What is" in table

    lines = [json.loads(x) for x in (grpo_run / "samples" / "completions.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and {x["step"] for x in lines} == {2}
    for line in lines:
        assert line["prompt"].startswith("What is") and isinstance(line["completion"], str)
        assert set(line["rewards"]) == {"correctness", "length"} and line["advantage"] is not None


def test_plots_summary_and_metrics_file(grpo_run: Path) -> None:
    names = {p.name for p in (grpo_run / "plots").glob("*.png")}
    assert names == {"loss.png", "reward.png", "completion_length.png", "loss_vs_reward.png", "overview.png"}
    assert all((grpo_run / "plots" / n).read_bytes().startswith(PNG) for n in names)
    curves = series([json.loads(x) for x in (grpo_run / "metrics.jsonl").read_text().splitlines()])
    assert curves["loss"][0] == [1, 2, 3]
    summary = json.loads((grpo_run / "summary.json").read_text())
    assert summary["best"]["reward"] == max(curves["reward"][1])
    assert summary["metrics"]["loss"] == curves["loss"][1][-1]


def test_plot_command_on_demand(grpo_run: Path, tmp_path: Path) -> None:
    for png in (grpo_run / "plots").glob("*.png"):
        png.unlink()
    proc = subprocess.run([sys.executable, "-m", "pipeline.tools.plot", str(grpo_run)], env=offline_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((grpo_run / "plots").glob("*.png"))) == 5
    assert json.loads((grpo_run / "summary.json").read_text())["finished"] is True

    bad = subprocess.run([sys.executable, "-m", "pipeline.tools.plot", str(tmp_path)], env=offline_env(),
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "metrics.jsonl not found" in bad.stderr


def test_sft_samples_are_greedy_completions_of_heldout_prompts(tmp_path: Path, model_cache: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_pipeline([*TINY, "stage=sft", "stage.batch_size=8", "logging.samples_every=1", "logging.samples_shown=2",
                         f"output_dir={run_dir}", f"paths.cache_dir={model_cache}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in (run_dir / "samples" / "completions.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 1, 2, 2]
    assert all(set(x["rewards"]) == {"correct"} for x in lines)
    assert sorted(texts(events(run_dir), "completions/text_summary")) == [1, 2]
    tags = set(events(run_dir).Tags()["scalars"])
    assert {"train/perf/tokens_per_s", "train/perf/samples_per_s", "train/perf/peak_memory_mb"} <= tags
