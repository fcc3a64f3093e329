"""FSDP2 (zero=fsdp2) on 2 CPU ranks over gloo, started as a user starts it: `python pipeline/run.py hw=cpu_2proc
zero=fsdp2` re-launches itself through accelerate, and transformers shards the model over the ranks as it loads.

Each rank reports what it holds from its own DTensor shards; full fine-tuning and LoRA both train and save a final
model (full fine-tuning also its best/, read back by export and evaluate with which=best); the checkpoints are
torch distributed checkpoints (one shard file per rank) that kill -9 + resume=auto,
SIGTERM and a different number of ranks all resume from.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.train.checkpoint.resume import checkpoints, is_complete
from tests.helpers.distributed import RUN, TWO_RANKS, check_two_rank_run, launch
from tests.helpers.distributed import args as two_rank_args
from tests.helpers.resume import STEPS, args_for, assert_same_losses
from tests.helpers.runs import logged, offline_env, run_tool, tiny_model_dir

HELD = re.compile(r"FSDP2 sharded load: this rank holds (\d+) of (\d+) weight elements")


def held_shares(output: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in HELD.findall(output)]


def assert_half_each(output: str) -> None:
    """Both ranks loaded sharded, each holding half of every weight (rows split evenly; the tiny model's rows are
    even, so exactly half)."""
    shares = held_shares(output)
    assert len(shares) == 2, output[-3000:]
    for held, total in shares:
        assert held * 2 == total, shares


# GRPO: generation under FSDP2 runs synced (every rank in every forward); its LoRA merge and prefill levers step aside
@pytest.mark.parametrize(("stage", "peft"), [("sft", "lora"), ("sft", "full"),
                                             pytest.param("grpo", "lora", marks=pytest.mark.slow)])
def test_fsdp2_trains_on_two_ranks_each_holding_half(stage: str, peft: str, tmp_path: Path, model_cache: Path) -> None:
    # full fine-tuning also keeps best/ (eval.every_steps: every rank joins the held-out generation, the weights
    # being sharded), which export and evaluate then read with which=best in one plain process
    evals = ["eval.every_steps=1"] if peft == "full" else []
    overrides = two_rank_args(stage, tmp_path, model_cache, "zero=fsdp2", f"peft={peft}", "stage.save_steps=2", *evals)
    proc = launch([sys.executable, RUN, *overrides], tmp_path, f"fsdp2-{stage}-{peft}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "re-launching 2 processes: accelerate launch --multi_gpu --num_processes 2" in output
    assert_half_each(output)
    (run,) = (tmp_path / stage).iterdir()
    (saved,) = checkpoints(run)
    record = json.loads((saved / "checkpoint_complete.json").read_text())
    # a torch distributed checkpoint: the index and one shard file per rank, listed in the completeness marker
    assert record["layout"] == "fsdp2" and {"fsdp2/.metadata", "fsdp2/__0_0.distcp", "fsdp2/__1_0.distcp"} <= set(
        record["files"])
    if peft == "lora":
        check_two_rank_run(tmp_path, stage, output, "fsdp2", model_cache)
        return
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["world_size"], summary["engine"], summary["steps"]) == (2, "fsdp2", 2)
    assert "rank 0/2 finished 2 optimizer steps" in output and "rank 1/2 finished 2 optimizer steps" in output
    # the gathered full model: every weight whole, and trained away from the base
    from safetensors.torch import load_file

    final = load_file(str(run / "final" / "model.safetensors"))
    base = load_file(str(tiny_model_dir(model_cache) / "model.safetensors"))
    # (the tied LM head is written out too: the gathered state dict names it beside the embedding)
    assert set(base) <= set(final) and all(final[k].shape == base[k].shape for k in base)
    assert any(not (final[k] == base[k]).all() for k in base)
    best = json.loads((run / "best" / "best.json").read_text())
    assert best["step"] in (1, 2) and (run / "best" / "model.safetensors").is_file()
    for tool in ("export", "evaluate"):
        done = run_tool(tool, str(run), "which=best")
        assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "export_best" / "model.safetensors").is_file()
    assert json.loads((run / "eval" / "eval.json").read_text())["models"]["best"]["accuracy"] == pytest.approx(
        best["value"])


# ---- checkpoints: kill -9, SIGTERM, another number of ranks ----------------------------------------------------


def env() -> dict[str, str]:
    found = offline_env(OMP_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "PIPELINE_LAUNCHED", "RUN_ID"):
        found.pop(key, None)
    return found


def fsdp2_command(run_dir: Path, cache: Path, *extra: str) -> list[str]:
    # full fine-tuning unless extra says peft=lora (later overrides win)
    return [sys.executable, RUN, *args_for("sft", run_dir, cache, *TWO_RANKS, "zero=fsdp2", "peft=full", *extra)]


def run(command: list[str], cwd: Path) -> str:
    proc = subprocess.run(command, cwd=cwd, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def start(command: list[str], cwd: Path) -> tuple[subprocess.Popen, Path]:
    log = cwd / "interrupted.log"
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env(), stdout=out, stderr=subprocess.STDOUT, text=True)
    return proc, log


def wait_for(predicate, proc: subprocess.Popen, log: Path, timeout: float = 400) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"run ended before the kill point: {log.read_text()[-3000:]}"
        assert time.time() < deadline, "timed out waiting for the kill point"
        time.sleep(0.01)


def descendants(root: int) -> list[int]:
    """Every process below `root` (torch's elastic agent starts the ranks in sessions of their own, so a process
    group kill would miss them)."""
    parents = {}
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            parents[pid] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def kill_9(proc: subprocess.Popen) -> None:
    """kill -9 of the launch and every rank at once, like a node going away."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=120)


def rank_pids(proc: subprocess.Popen) -> list[int]:
    """PIDs of the run.py ranks (RANK in their environment) below the launch, by rank."""
    found = []
    for pid in descendants(proc.pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (OSError, ProcessLookupError):
            continue
        ranks = [int(e.split(b"=", 1)[1]) for e in environ if e.startswith(b"RANK=")]
        if ranks:
            found.append((ranks[0], pid))
    return [pid for _, pid in sorted(found)]


@pytest.mark.slow  # ~3 launches of 2 ranks; the default suite trains and checkpoints FSDP2 above
@pytest.mark.parametrize("peft", ["full", "lora"])
def test_fsdp2_kill_9_then_resume_equals_uninterrupted(peft: str, tmp_path: Path, model_cache: Path) -> None:
    extra = ("checkpoint.keep=1", f"peft={peft}")
    reference_dir = tmp_path / "uninterrupted"
    run(fsdp2_command(reference_dir, model_cache, *extra), tmp_path)
    reference = logged(reference_dir)
    assert sorted(reference) == list(range(1, STEPS + 1))

    run_dir = tmp_path / "killed"
    command = fsdp2_command(run_dir, model_cache, *extra)
    proc, log = start(command, tmp_path)
    wait_for(lambda: 3 in logged(run_dir), proc, log)
    kill_9(proc)
    (saved,) = checkpoints(run_dir)
    assert saved.name == "checkpoint-2" and is_complete(saved)

    output = run([*command, "resume=auto"], tmp_path)
    assert "resuming from" in output and "FSDP2: model and optimizer shards loaded" in output
    resumed = logged(run_dir)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert_same_losses(resumed, reference, first=3)
    assert [c.name for c in checkpoints(run_dir)] == ["checkpoint-4"]


@pytest.mark.slow
def test_fsdp2_sigterm_to_one_rank_saves_on_both_and_resumes(tmp_path: Path, model_cache: Path) -> None:
    run_dir = tmp_path / "stopped"
    # no periodic checkpoints: the only one is what the signal writes (the DCP save is collective)
    command = fsdp2_command(run_dir, model_cache, "stage.save_steps=0")
    proc, log = start(command, tmp_path)
    wait_for(lambda: 2 in logged(run_dir), proc, log)
    ranks = rank_pids(proc)
    assert len(ranks) == 2, ranks
    os.kill(ranks[1], signal.SIGTERM)
    proc.wait(timeout=300)
    assert "SIGTERM received" in log.read_text()
    (saved,) = checkpoints(run_dir)
    assert is_complete(saved) and not (run_dir / "summary.json").exists()
    output = run([*command, "resume=auto"], tmp_path)
    assert f"resuming from {saved}" in output
    assert sorted(logged(run_dir)) == list(range(1, STEPS + 1)) and (run_dir / "summary.json").exists()


@pytest.mark.slow
def test_fsdp2_checkpoint_of_two_ranks_resumes_on_three(tmp_path: Path, model_cache: Path) -> None:
    """DCP reshards on load: the optimizer state written as 2 shards loads into 3 (a warning says the per-rank
    random streams start anew)."""
    run_dir = tmp_path / "grown"
    batch = ("stage.batch_size=12", "hw.micro_batch=2")  # splits over 2 ranks (3 x 2 each) and 3 (2 x 2 each)
    run(fsdp2_command(run_dir, model_cache, *batch, "max_steps=2"), tmp_path)
    output = run(fsdp2_command(run_dir, model_cache, *batch, "hw.num_processes=3", "resume=auto",
                               "checkpoint.allow_changes=true"), tmp_path)
    assert "written by 2 process(es), resumed with 3" in output
    assert "FSDP2: model and optimizer shards loaded" in output
    assert sorted(logged(run_dir)) == list(range(1, STEPS + 1))

