"""Two gloo processes on the CPU: the settings of a 2-rank tiny run, a launch as a user types it, and the checks
every 2-process run must pass."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from safetensors.torch import load_file

from tests.helpers.runs import REPO, TINY, adapter_loads_onto_the_base, offline_env

RUN = str(REPO / "pipeline" / "run.py")
STAGE_ARGS = {
    "sft": ["stage=sft", "stage.batch_size=8"],
    # a dense reward, so a random model still gets non-zero advantages and LoRA B moves
    "grpo": ["stage=grpo", "stage.batch_size=8", "stage.num_generations=4", "stage.max_completion_length=8",
             "reward=shaped"],
    "rloo": ["stage=rloo", "stage.batch_size=8", "stage.num_generations=4", "stage.max_completion_length=8",
             "reward=shaped"],
}
# 2 ranks x micro-batch 4 = the global batch of 8: one micro-batch per rank per step
TWO_RANKS = ["hw=cpu_2proc", "hw.micro_batch=4"]


def args(stage: str, root: Path, cache: Path, *extra: str) -> list[str]:
    return [*STAGE_ARGS[stage], *TINY, *TWO_RANKS, f"paths.output_root={root}", f"paths.cache_dir={cache}", *extra]


def launch(command: list[str], cwd: Path, run_id: str, **extra: str) -> subprocess.CompletedProcess:
    env = offline_env(RUN_ID=run_id, OMP_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "PIPELINE_LAUNCHED"):
        env.pop(key, None)
    env.update(extra)
    timeout = 600
    started = time.time()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode == 0:
        # DeepSpeed's CPU all-reduce never unlinks its per-rank /dev/shm buffers: the run must (66 MiB of RAM each)
        left = [p.name for p in Path("/dev/shm").glob("deepspeed_allreduce_buffer_*") if p.stat().st_mtime >= started]
        ports = launch_ports(command, proc.stdout + proc.stderr, extra)
        if ports:  # a buffer's name ends in _<port>_<rank>: another launch running beside this one is not ours
            left = [name for name in left if name.rsplit("_", 2)[-2] in ports]
        assert not left, f"/dev/shm buffers outlived the run: {left}"
    return proc


def launch_ports(command: list[str], output: str, env: dict[str, str]) -> set[str]:
    """The rendezvous ports this launch used: given on its command line or in its env, or picked by run.py's
    re-launch (said in its first line)."""
    ports = {command[i + 1] for i, arg in enumerate(command[:-1]) if arg in ("--master_port", "--main_process_port")}
    ports |= {env["MASTER_PORT"]} if "MASTER_PORT" in env else set()
    return ports | set(re.findall(r"--main_process_port (\d+)", output))


def check_two_rank_run(root: Path, stage: str, output: str, engine: str, cache: Path, heldout: bool = True) -> dict:
    """The assertions every 2-process run must pass; returns summary.json. `heldout=False`: a run whose environment
    writes its own prompts (placeholder rows) has no held-out problems after training."""
    runs = [p for p in (root / stage).iterdir() if p.is_dir()]
    assert len(runs) == 1, f"one run dir expected (shared RUN_ID), found {runs}"
    run = runs[0]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["world_size"], summary["engine"], summary["steps"]) == (2, engine, 2)
    # both ranks trained their 2 optimizer steps; only rank 0 writes the log file
    assert "rank 0/2 finished 2 optimizer steps" in output and "rank 1/2 finished 2 optimizer steps" in output
    log_file = (run / "run.log").read_text()
    assert "rank 0/2 finished" in log_file and "rank 1/2" not in log_file
    # rank-0-only artefacts: one TensorBoard event file, one held-out record per phase, no half-saved model
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1
    if heldout:
        assert (run / "samples" / "eval_after.jsonl").read_text().count("\n") == 8
    assert (run / ".hydra" / "config.yaml").exists() and not (run / "final.partial").exists()
    adapter = load_file(str(run / "final" / "adapter_model.safetensors"))
    assert adapter and all(t.numel() > 0 for t in adapter.values()), "empty adapter tensors (ZeRO-3 + LoRA trap)"
    assert any(t.abs().max() > 0 for k, t in adapter.items() if "lora_B" in k), "the adapter never trained"
    adapter_loads_onto_the_base(run / "final", cache)
    return summary
