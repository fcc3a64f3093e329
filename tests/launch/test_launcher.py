"""Launch commands and rank argv fix-ups: deepspeed, torchrun and accelerate commands, one pinned output dir, rank-0
files and logs, the launched world against the profile (no processes started)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from pipeline.config.argv import rank_argv
from pipeline.config.plan import RunPlan, plan_run
from pipeline.launch.launcher import child_overrides, executable, launch_command
from tests.helpers.runs import compose_config


def typed(overrides: list[str]) -> RunPlan:
    return plan_run(compose_config(overrides), Path("/tmp/run"))


@pytest.fixture
def no_launcher_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "SLURM_JOB_ID"):
        monkeypatch.delenv(key, raising=False)


def test_deepspeed_single_node_command(no_launcher_env: None) -> None:
    cfg = typed(["hw=8xh100", "stage=sft", "model=qwen2.5_1.5b_instruct"])
    command = launch_command(cfg, ["hw=8xh100", "stage=sft"])
    assert command[:6] == ["deepspeed", "--num_gpus", "8", "--master_port", "29500", "pipeline/run.py"]
    assert command[-2:] == ["hw=8xh100", "stage=sft"]


def test_deepspeed_two_node_command_uses_the_hostfile(no_launcher_env: None) -> None:
    cfg = typed(["hw=2x8xh100"])
    assert launch_command(cfg, ["hw=2x8xh100"], port=29601)[:9] == [
        "deepspeed", "--hostfile", "hostfiles/two_nodes", "--num_nodes", "2", "--num_gpus", "8",
        "--master_port", "29601",
    ]


def test_torchrun_and_accelerate_commands_carry_node_rank(monkeypatch: pytest.MonkeyPatch, no_launcher_env) -> None:
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    torchrun = launch_command(typed(["hw=2x8xh100", "hw.launcher=torchrun"]), [])
    assert shlex.join(torchrun).startswith(
        "torchrun --nnodes 2 --nproc_per_node 8 --node_rank 1 --master_addr 10.0.0.1 --master_port 29500 "
    )
    accelerate = launch_command(typed(["hw=2x8xh100", "hw.launcher=accelerate"]), [])
    # accelerate counts processes over all machines
    assert shlex.join(accelerate).startswith(
        "accelerate launch --multi_gpu --num_processes 16 --num_machines 2 --machine_rank 1 "
        "--main_process_ip 10.0.0.1 --main_process_port 29500 "
    )


def test_commands_run_as_modules_of_this_interpreter() -> None:
    assert executable(["accelerate", "launch", "--multi_gpu", "x.py"]) == [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "x.py"]
    assert executable(["deepspeed", "x.py"])[1:3] == ["-m", "deepspeed.launcher.runner"]
    assert executable(["torchrun", "x.py"])[1:3] == ["-m", "torch.distributed.run"]


def test_children_get_one_pinned_output_dir() -> None:
    assert child_overrides(["stage=sft", "output_dir=/a"], Path("/runs/x")) == ["stage=sft", "output_dir=/runs/x"]


def test_non_zero_ranks_leave_hydra_files_and_run_log_to_rank_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["run.py", "stage=sft"]
    monkeypatch.setenv("RANK", "0")
    rank_argv(argv)
    assert argv == ["run.py", "stage=sft"]
    monkeypatch.setenv("RANK", "1")
    rank_argv(argv)
    assert argv[-2:] == ["hydra.output_subdir=null", "hydra/job_logging=stdout"]


def test_launched_world_must_match_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ValueError, match="the launcher started 4 processes but hw=cpu_2proc says 1 node.* = 2"):
        typed(["hw=cpu_2proc"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert typed(["hw=cpu_2proc"]).cfg.hw.num_processes == 2
