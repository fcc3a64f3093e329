"""Checkpoints and resume with 2 CPU ranks (gloo) through the deepspeed launcher, as a user types it.

kill -9 of the whole launch between two checkpoints, then `resume=auto`: every step after the resume point logs the
same loss and grad norm as the uninterrupted run, bit for bit (fp32; SFT under ZeRO-2, GRPO with LoRA under ZeRO-3).
A kill inside a DeepSpeed checkpoint write leaves a folder resume=auto skips; SIGTERM to one rank makes both save;
keep-last-N deletes whole DeepSpeed checkpoints; quantized bases train with two processes (they used to hang), QLoRA
under ZeRO-3 exactly as under ZeRO-2.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.launch.launcher import free_port
from pipeline.train.checkpoint.resume import checkpoints, is_complete
from tests.helpers.distributed import TWO_RANKS, check_two_rank_run
from tests.helpers.distributed import args as two_rank_args
from tests.helpers.resume import STEPS, args_for, assert_same_losses, wait_for
from tests.helpers.runs import REPO, logged

RUN = str(REPO / "pipeline" / "run.py")

# DeepSpeed's CPU all-reduce extension is built once, before the first of these launches
pytestmark = pytest.mark.usefixtures("deepspeed_ops")


def deepspeed(stage: str, run_dir: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(free_port()),
            RUN, *args_for(stage, run_dir, cache, *TWO_RANKS, *extra)]


def env() -> dict[str, str]:
    from tests.helpers.runs import offline_env

    found = offline_env(OMP_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "PIPELINE_LAUNCHED", "RUN_ID"):
        found.pop(key, None)
    return found


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, cwd=cwd, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def start(command: list[str], cwd: Path) -> subprocess.Popen:
    # A session of its own: kill -9 reaches the launcher and both ranks at once, like a node going away.
    log = cwd / "interrupted.log"
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env(), stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    proc.log = log
    return proc


def kill_all(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    os.killpg(proc.pid, sig)
    proc.wait(timeout=120)


def ranks_of(proc: subprocess.Popen) -> list[int]:
    """PIDs of the rank processes (children of the launcher's per-node agent) with their RANK, sorted by rank."""
    found = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if os.getpgid(pid) != proc.pid:
                continue
        except (OSError, ProcessLookupError):
            continue
        ranks = [int(e.split(b"=", 1)[1]) for e in environ if e.startswith(b"RANK=")]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if ranks and b"run.py" in cmdline and b"deepspeed.launcher" not in cmdline:
            found.append((ranks[0], pid))
    return [pid for _, pid in sorted(found)]


def marker(path: Path) -> dict:
    return json.loads((path / "checkpoint_complete.json").read_text())


# Kept out of the default suite's time (-m slow): 83-99 s each; the default suite keeps SIGTERM to one rank (save on
# both, resume) and single-process kill -9 / resume equality (tests/test_resume.py).
@pytest.mark.parametrize(("stage", "zero", "quant"), [
    pytest.param("sft", "zero2", "none", marks=pytest.mark.slow),
    pytest.param("grpo", "zero3", "none", marks=pytest.mark.slow),
    pytest.param("dpo", "zero3", "none", marks=pytest.mark.slow),  # policy + reference under ZeRO-3
    pytest.param("sft", "zero3", "nf4", marks=pytest.mark.slow),  # QLoRA: the 4-bit base partitioned at engine start
])
def test_deepspeed_kill_9_then_resume_equals_uninterrupted(stage, zero, quant, tmp_path, model_cache) -> None:
    extra = (f"zero={zero}", f"quant={quant}", "checkpoint.keep=1")
    reference_dir = tmp_path / "uninterrupted"
    run(deepspeed(stage, reference_dir, model_cache, *extra), tmp_path)
    reference = logged(reference_dir)
    assert sorted(reference) == list(range(1, STEPS + 1))

    run_dir = tmp_path / "killed"
    proc = start(deepspeed(stage, run_dir, model_cache, *extra), tmp_path)
    wait_for(lambda: 3 in logged(run_dir), proc)
    kill_all(proc)
    (saved,) = checkpoints(run_dir)
    record = marker(saved)
    assert saved.name == "checkpoint-2" and record["world_size"] == 2 and record["layout"] == "deepspeed"
    # every rank's ZeRO shard is listed, with the engine's model states
    shards = [name for name in record["files"] if name.startswith("global_step2/")]
    assert {0, 1} <= {int(n.split("zero_pp_rank_")[1][0]) for n in shards if "optim_states" in n}
    assert {"rng_state_0.pth", "rng_state_1.pth", "latest", "scheduler.pt"} <= set(record["files"])

    done = run(deepspeed(stage, run_dir, model_cache, *extra, "resume=auto"), tmp_path)
    assert "resuming from" in done.stdout + done.stderr
    resumed = logged(run_dir)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert_same_losses(resumed, reference, first=3)
    # keep=1: checkpoint-2 went as a whole (its global_step2/ shards included); checkpoint-4 is complete
    assert [c.name for c in checkpoints(run_dir)] == ["checkpoint-4"] and is_complete(run_dir / "checkpoints" /
                                                                                       "checkpoint-4")
    assert json.loads((run_dir / "summary.json").read_text())["engine"] == f"deepspeed-{zero}"


@pytest.mark.slow  # the single-process version runs by default (tests/test_resume.py)
def test_deepspeed_kill_inside_a_checkpoint_write_resumes_from_the_previous_one(tmp_path, model_cache) -> None:
    # full fine-tuning: weights and optimizer shards make the write long enough to land a kill inside it
    run_dir = tmp_path / "run"
    command = deepspeed("sft", run_dir, model_cache, "zero=zero2", "peft=full")
    proc = start(command, tmp_path)
    partial = run_dir / "checkpoints" / "checkpoint-4"
    wait_for(partial.exists, proc, poll=0.0005)
    kill_all(proc)
    assert partial.exists() and not is_complete(partial), "the kill missed the write window"
    assert is_complete(run_dir / "checkpoints" / "checkpoint-2")

    done = run([*command, "resume=auto"], tmp_path)
    output = done.stdout + done.stderr
    assert "removing incomplete checkpoint" in output and "checkpoint-2 (step 2)" in output
    assert sorted(logged(run_dir)) == list(range(1, STEPS + 1))
    assert [(c.name, is_complete(c)) for c in checkpoints(run_dir)] == [("checkpoint-2", True),
                                                                          ("checkpoint-4", True)]


# slow (~57 s): the one-process SIGTERM test and the 2-rank kill -9 resume (test_tools_scale) stay in the default suite
@pytest.mark.slow
def test_sigterm_to_one_rank_saves_on_both_and_resumes(tmp_path, model_cache) -> None:
    run_dir = tmp_path / "stopped"
    # no periodic checkpoints: the only one is what the signal writes (ZeRO-3: the save itself is collective)
    # no samples: the greedy generation each step would gather ZeRO-3's shards for nothing this test reads
    command = deepspeed("sft", run_dir, model_cache, "zero=zero3", "stage.save_steps=0", "logging.samples_every=0")
    proc = start(command, tmp_path)
    wait_for(lambda: 2 in logged(run_dir), proc)
    ranks = ranks_of(proc)
    assert len(ranks) == 2, ranks
    os.kill(ranks[1], signal.SIGTERM)  # as a scheduler that signals one task; rank 0 learns of it at the step end
    proc.wait(timeout=300)
    text = proc.log.read_text()
    assert "SIGTERM received" in text and "resume=auto" in text
    (saved,) = checkpoints(run_dir)
    assert is_complete(saved) and marker(saved)["world_size"] == 2
    assert not (run_dir / "final").exists() and not (run_dir / "summary.json").exists()

    done = run([*command, "resume=auto"], tmp_path)
    assert f"resuming from {saved}" in done.stdout + done.stderr
    assert sorted(logged(run_dir)) == list(range(1, STEPS + 1)) and (run_dir / "summary.json").exists()


@pytest.mark.parametrize(("stage", "quant", "zero"), [
    pytest.param("sft", "nf4", "none", marks=pytest.mark.slow),  # SFT's nf4 path runs by default under ZeRO-2
    ("grpo", "nf4", "none"),
    # int8 takes the same path (the held-out evaluation's no-grad forward); kept out of the default suite's time
    pytest.param("sft", "int8", "none", marks=pytest.mark.slow),
    pytest.param("grpo", "int8", "none", marks=pytest.mark.slow),
])
def test_quantized_base_with_two_processes_trains_and_saves(stage, quant, zero, tmp_path, model_cache) -> None:
    """These hung in DDP's first broadcast: rank 0's held-out evaluation had repacked its 4-bit weights."""
    command = [sys.executable, RUN, *two_rank_args(stage, tmp_path, model_cache, f"quant={quant}", f"zero={zero}",
                                                 "hw.collective_timeout_s=120")]
    proc = subprocess.run(command, cwd=tmp_path, env=dict(env(), RUN_ID=f"{stage}-{quant}"), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    engine = "ddp" if zero == "none" else f"deepspeed-{zero}"
    summary = check_two_rank_run(tmp_path, stage, proc.stdout + proc.stderr, engine, model_cache)
    assert summary["quant"] == quant


@pytest.mark.slow
def test_a_chain_killed_in_its_second_stage_resumes_there_under_deepspeed(tmp_path, model_cache) -> None:
    run_dir = tmp_path / "chain"
    command = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port",
               str(free_port()), RUN, "stage=sft_then_grpo", "model=tiny", f"max_steps={STEPS}", *TWO_RANKS,
               "zero=zero2", "data.arithmetic.num_train=64", "data.arithmetic.num_eval=8", "stage.sft.batch_size=8",
               "stage.grpo.batch_size=8", "stage.grpo.num_generations=4", "stage.grpo.max_completion_length=8",
               "reward=shaped", "stage.sft.save_steps=2", "stage.grpo.save_steps=2", "stage.sft.eval_max_new_tokens=4",
               "stage.grpo.eval_max_new_tokens=4", "hw.eval_batch=8", f"output_dir={run_dir}",
               f"paths.cache_dir={model_cache}"]
    proc = start(command, tmp_path)
    second = run_dir / "2_grpo"
    wait_for(lambda: 3 in logged(second), proc, timeout=600)
    kill_all(proc)
    assert (run_dir / "1_sft" / "summary.json").exists() and not (second / "summary.json").exists()

    done = run([*command, "resume=auto"], tmp_path)
    output = done.stdout + done.stderr
    assert "sft already finished" in output and f"resuming from {second / 'checkpoints' / 'checkpoint-2'}" in output
    assert sorted(logged(second)) == list(range(1, STEPS + 1))
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2 * STEPS


# slow (~51 s): a quantized base on 2 ranks (DDP) stays in the default suite
@pytest.mark.slow
def test_qlora_under_zero3_trains_as_under_zero2_with_the_base_partitioned(tmp_path, model_cache) -> None:
    """transformers loads a 4-bit base whole on each rank (never under zero.Init); DeepSpeed's ZeRO-3 engine then
    partitions it. Same batches, same LoRA init: the losses match ZeRO-2's (hw=dual_3090's QLoRA engine) exactly."""
    found = {}
    for zero in ("zero2", "zero3"):
        root = tmp_path / zero
        command = [sys.executable, RUN, *two_rank_args("sft", root, model_cache, "quant=nf4", f"zero={zero}",
                                                       "hw.collective_timeout_s=120")]
        proc = subprocess.run(command, cwd=tmp_path, env=dict(env(), RUN_ID=f"qlora-{zero}"), capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        output = proc.stdout + proc.stderr
        summary = check_two_rank_run(root, "sft", output, f"deepspeed-{zero}", model_cache)
        assert summary["quant"] == "nf4"
        found[zero] = (logged(root / "sft" / f"qlora-{zero}"), output)
    (zero2, _), (zero3, output) = found["zero2"], found["zero3"]
    shares = re.findall(r"ZeRO-3 partitioned the quantized base as its engine started: this rank holds (\d+) of (\d+)",
                        output)
    assert len(shares) == 2 and all(abs(int(held) / int(whole) - 0.5) < 0.01 for held, whole in shares), shares
    assert sorted(zero3) == sorted(zero2) == [1, 2]
    for step in (1, 2):
        assert zero3[step]["loss"] == pytest.approx(zero2[step]["loss"], rel=1e-6), step
        assert zero3[step]["grad_norm"] == pytest.approx(zero2[step]["grad_norm"], rel=1e-5), step
