"""Two gloo processes on the CPU through every way a user starts them; each run dir is read back.

The self re-launch (`python pipeline/run.py hw=cpu_2proc`), the typed `deepspeed` launcher (ZeRO-2 and ZeRO-3, SFT,
GRPO and RLOO with LoRA), a typed `accelerate launch`, and a two-"node" torchrun (node ranks 0 and 1 on 127.0.0.1).
Every run must show: world size 2 in the trainer, both ranks finishing their steps, one run dir, artefacts written
by rank 0 only, and a final adapter that is non-empty, trained and loadable (ZeRO-3 + LoRA can save empty ones).
A 2x2 Hydra multirun then checks per-job run dirs and the sweep summary.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from pipeline.launch.launcher import free_port
from tests.helpers.distributed import RUN, STAGE_ARGS, args, check_two_rank_run, launch
from tests.helpers.runs import REPO, TINY, offline_env

# DeepSpeed's CPU all-reduce extension is built once, before the first of these launches
pytestmark = pytest.mark.usefixtures("deepspeed_ops")


def test_plain_python_relaunches_itself_through_accelerate(tmp_path: Path, model_cache: Path) -> None:
    """hw=dual_3090's path on CPU: accelerate starts the ranks, the Trainer brings in DeepSpeed from the JSON."""
    proc = launch([sys.executable, RUN, *args("grpo", tmp_path, model_cache, "zero=zero2")], tmp_path, "relaunch")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    output = proc.stdout + proc.stderr
    assert "re-launching 2 processes: accelerate launch --multi_gpu --num_processes 2" in output
    check_two_rank_run(tmp_path, "grpo", output, "deepspeed-zero2", model_cache)


# the matrix: ZeRO-2 and ZeRO-3, each with SFT and GRPO (LoRA), through the deepspeed launcher
# ZeRO-2 through the launcher is in -m slow (the default suite's time); QLoRA under ZeRO-2 runs by default
# (tests/test_resume_distributed.py)
@pytest.mark.parametrize(("zero", "stage"), [pytest.param("zero2", "sft", marks=pytest.mark.slow),
                                             pytest.param("zero2", "grpo", marks=pytest.mark.slow),
                                             # RLOO's rollouts and reference model (beta 0.05) on 2 ranks
                                             pytest.param("zero2", "rloo", marks=pytest.mark.slow),
                                             # SFT under ZeRO-3 through this launcher runs by default in
                                             # test_resume_distributed.py (SIGTERM to one rank, then resume)
                                             pytest.param("zero3", "sft", marks=pytest.mark.slow),
                                             ("zero3", "grpo")])
def test_deepspeed_launcher(zero: str, stage: str, tmp_path: Path, model_cache: Path) -> None:
    overrides = args(stage, tmp_path, model_cache, f"zero={zero}")
    if (zero, stage) == ("zero3", "sft"):
        # the multi-node script with the shipped one-host hostfile: `deepspeed --hostfile hostfiles/localhost ...`
        command = ["bash", str(REPO / "launch" / "deepspeed.sh"), *overrides]
    else:
        command = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port",
                   str(free_port()), RUN, *overrides]
    # a one-machine hostfile needs no sshd: --no_ssh_check and an explicit master address
    proc = launch(command, tmp_path, f"ds-{zero}-{stage}", HOSTFILE=str(REPO / "hostfiles" / "localhost"),
                  MASTER_ADDR="127.0.0.1", DS_FLAGS="--no_ssh_check", MASTER_PORT=str(free_port()),
                  PYTHON=sys.executable)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    output = proc.stdout + proc.stderr
    # the launcher appended --local_rank to each rank's argv, and Hydra never saw it
    assert "--local_rank=" in output and "unrecognized arguments" not in output
    if zero == "zero3":
        # the DeepSpeed config was live before from_pretrained: each rank loaded only its shard
        assert output.count("ZeRO-3 sharded load: this rank holds") == 2, output[-3000:]
    check_two_rank_run(tmp_path, stage, output, f"deepspeed-{zero}", model_cache)


@pytest.mark.slow
@pytest.mark.parametrize(("zero", "stage", "engine"), [
    ("zero2_offload", "sft", "deepspeed-zero2+offload-optimizer"),
    ("zero3_offload", "grpo", "deepspeed-zero3+offload-optimizer-param"),
])
def test_deepspeed_offload_profiles(zero: str, stage: str, engine: str, tmp_path: Path, model_cache: Path) -> None:
    """DeepSpeed's CPU Adam takes the step (JIT-built once, ~1-2 min, then cached): an extra, not in the default run."""
    command = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port",
               str(free_port()), RUN, *args(stage, tmp_path, model_cache, f"zero={zero}")]
    proc = launch(command, tmp_path, f"ds-{zero}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    check_two_rank_run(tmp_path, stage, proc.stdout + proc.stderr, engine, model_cache)


def test_accelerate_launch_as_typed(tmp_path: Path, model_cache: Path) -> None:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--main_process_port",
               str(free_port()), RUN, *args("sft", tmp_path, model_cache)]
    proc = launch(command, tmp_path, "accelerate")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    check_two_rank_run(tmp_path, "sft", proc.stdout + proc.stderr, "ddp", model_cache)


@pytest.mark.slow  # the same accelerate path as the two tests above, through launch/accelerate.sh
def test_accelerate_multinode_script_on_one_machine(tmp_path: Path, model_cache: Path) -> None:
    proc = launch(["bash", str(REPO / "launch" / "accelerate.sh"), *args("grpo", tmp_path, model_cache)], tmp_path,
                  "accelerate-script", NUM_PROCESSES="2", MASTER_PORT=str(free_port()), PYTHON=sys.executable)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    check_two_rank_run(tmp_path, "grpo", proc.stdout + proc.stderr, "ddp", model_cache)


def test_torchrun_two_nodes_on_localhost(tmp_path: Path, model_cache: Path) -> None:
    """Node 0 is typed as in the README; node 1 goes through launch/torchrun.sh with the same values in env."""
    port = str(free_port())
    overrides = args("sft", tmp_path, model_cache, "hw.num_processes=1", "hw.num_nodes=2")
    typed = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", "0",
             "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", port, RUN, *overrides]
    script = ["bash", str(REPO / "launch" / "torchrun.sh"), *overrides]
    script_env = {"NNODES": "2", "NODE_RANK": "1", "NPROC_PER_NODE": "1", "MASTER_ADDR": "127.0.0.1",
                  "MASTER_PORT": port, "PYTHON": sys.executable}
    nodes = []
    for command, extra in ((typed, {}), (script, script_env)):
        env = offline_env(RUN_ID="torchrun", OMP_NUM_THREADS="1", **extra)
        nodes.append(subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "rank 1/2 finished" in outputs[1] and "rank 0/2 finished" in outputs[0]
    check_two_rank_run(tmp_path, "sft", "".join(outputs), "ddp", model_cache)


def test_multirun_2x2_gives_four_run_dirs_and_a_sweep_summary(tmp_path: Path, model_cache: Path) -> None:
    command = [sys.executable, RUN, "-m", "peft=lora,full", "quant=none,nf4", *STAGE_ARGS["sft"], *TINY,
               f"paths.output_root={tmp_path}", f"paths.cache_dir={model_cache}"]
    proc = launch(command, tmp_path, "sweep")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    sweep = tmp_path / "multirun" / "sweep"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == ["0", "1", "2", "3"]
    rows = json.loads((sweep / "sweep_summary.json").read_text())
    by_overrides = {" ".join(r["swept"]): r for r in rows}
    assert set(by_overrides) == {"peft=lora quant=none", "peft=lora quant=nf4", "peft=full quant=none",
                                 "peft=full quant=nf4"}
    # 4-bit weights cannot be fully fine-tuned: that job is refused with the fix, the sweep goes on
    refused = by_overrides["peft=full quant=nf4"]
    assert refused["status"] == "refused" and "Set peft=lora" in refused["reason"]
    for name in ("peft=lora quant=none", "peft=lora quant=nf4", "peft=full quant=none"):
        row = by_overrides[name]
        assert row["status"] == "done" and row["steps"] == 2 and row["metrics"]["train_loss"] > 0
        assert Path(row["dir"], "final").is_dir()
    table = (sweep / "sweep_summary.md").read_text()
    assert table.startswith("| job | swept | status | objective | loss |") and table.count("| done |") == 3


@pytest.mark.slow  # the re-launch and the sweep are each in the default suite; this is their combination
def test_multirun_jobs_each_go_through_the_profile_s_launcher(tmp_path: Path, model_cache: Path) -> None:
    command = [sys.executable, RUN, "-m", "stage.learning_rate=1e-4,1e-3", *args("sft", tmp_path, model_cache)]
    proc = launch(command, tmp_path, "sweep2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    output = proc.stdout + proc.stderr
    assert output.count("re-launching 2 processes: accelerate launch") == 2
    assert output.count("rank 1/2 finished 2 optimizer steps") == 2
    sweep = tmp_path / "multirun" / "sweep2"
    rows = json.loads((sweep / "sweep_summary.json").read_text())
    assert [(r["swept"], r["status"], r["world_size"]) for r in rows] == [
        (["stage.learning_rate=0.0001"], "done", 2), (["stage.learning_rate=0.001"], "done", 2)]
    for job in ("0", "1"):
        assert json.loads((sweep / job / "summary.json").read_text())["engine"] == "ddp"


# slow (~40 s): ZeRO-3 GRPO through the deepspeed launcher stays in the default suite
@pytest.mark.slow
def test_zero3_chain_merges_the_sft_adapter_into_sharded_weights_and_trains_dpo(tmp_path: Path,
                                                                                model_cache: Path) -> None:
    """sft_then_dpo under ZeRO-3 with LoRA: both steps load sharded; DPO starts from the SFT adapter merged into the
    partitioned base one gathered layer at a time (modeling.merge_adapter), then trains and saves its own adapter."""
    run_dir = tmp_path / "chain"
    overrides = ["stage=sft_then_dpo", "model=tiny", "max_steps=2", "hw=cpu_2proc", "hw.micro_batch=2", "zero=zero3",
                 "peft=lora",
                 "data=jsonl", f"data.path={REPO / 'tests' / 'fixtures' / 'data' / 'preference.jsonl'}",
                 "stage.sft.batch_size=4", "stage.sft.max_length=128", "stage.sft.eval_max_new_tokens=4",
                 "stage.dpo.batch_size=4", "stage.dpo.max_length=128", f"output_dir={run_dir}",
                 f"paths.cache_dir={model_cache}"]
    command = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port",
               str(free_port()), RUN, *overrides]
    proc = launch(command, tmp_path, "ds-zero3-chain")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    # 2 ranks x 2 steps loaded shards; DPO's start merged the SFT adapter on both ranks
    assert output.count("ZeRO-3 sharded load: this rank holds") == 4
    assert output.count("LoRA adapter merged into") == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [s["engine"] for s in summary["stages"]] == ["deepspeed-zero3", "deepspeed-zero3"]
    adapter = load_file(str(run_dir / "2_dpo" / "final" / "adapter_model.safetensors"))
    assert adapter and all(t.numel() > 0 for t in adapter.values())
