"""Launch commands, hostfiles, rank argv fix-ups, dry runs and the per-GPU memory estimate (no processes started)."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config.argv import rank_argv
from pipeline.config.checks import to_run_config
from pipeline.config.hostfile import HostfileError, hostfile_problems, parse_hostfile
from pipeline.config.plan import RunPlan, plan_run
from pipeline.launch.launcher import child_overrides, executable, launch_command
from pipeline.launch.memory import estimate, lora_params, model_shapes
from tests.conftest import REPO, compose_config, offline_env


def typed(overrides: list[str]) -> RunPlan:
    return plan_run(compose_config(overrides), Path("/tmp/run"))


@pytest.fixture
def no_launcher_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)


# ---- hostfiles -------------------------------------------------------------------------------------------------


def test_shipped_hostfiles_parse() -> None:
    assert parse_hostfile("hostfiles/localhost") == [("localhost", 2)]
    assert parse_hostfile("hostfiles/two_nodes") == [("10.0.0.1", 8), ("10.0.0.2", 8)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("node1 slots=8\nnode2 slots=eight\n", ":2: 'node2 slots=eight' is not '<host> slots=<N>'"),
        ("node1 slots=0\n", ":1: 'node1 slots=0' is not '<host> slots=<N>' with N >= 1"),
        ("node1 gpus=8\n", ":1: 'node1 gpus=8'"),
        ("node1 slots=8\n# spare\nnode1 slots=8\n", ":3: host 'node1' is listed twice"),
        ("# nothing yet\n\n", "no 'host slots=N' lines"),
    ],
)
def test_bad_hostfile_lines_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "hosts"
    file.write_text(text)
    with pytest.raises(HostfileError) as err:
        parse_hostfile(str(file))
    assert message in str(err.value) and str(file) in str(err.value)


def test_missing_hostfile_is_refused_before_anything_loads(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"hw.hostfile=.*nope: no such file .* one 'host slots=N' line per node"):
        typed(["hw=2x8xh100", f"hw.hostfile={tmp_path}/nope"])


def test_hostfile_must_match_the_profile(tmp_path: Path) -> None:
    file = tmp_path / "hosts"
    file.write_text("a slots=8\nb slots=8\nc slots=8\n")
    cfg = compose_config(["hw=2x8xh100", f"hw.hostfile={file}"])
    with pytest.raises(ValueError, match="wants 2 node.* x 8 processes.*hw.num_nodes=3 hw.num_processes=8"):
        to_run_config(cfg)
    file.write_text("a slots=8\nb slots=8\n")
    assert hostfile_problems(typed(["hw=2x8xh100", f"hw.hostfile={file}"]).cfg) == []


# ---- commands --------------------------------------------------------------------------------------------------


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


# ---- memory estimate -------------------------------------------------------------------------------------------


def test_lora_count_matches_peft_for_qwen2_5_1_5b() -> None:
    shapes = model_shapes(typed(["model=qwen2.5_1.5b_instruct"]).cfg.model)
    assert round(shapes.params / 1e6) == 1544  # Qwen2.5-1.5B: 1.54B with tied embeddings
    # peft's print_trainable_parameters for r=16 on all linear layers of Qwen2.5-1.5B
    assert lora_params(shapes, 16, "all-linear") == 18_464_768
    assert lora_params(shapes, 16, ["q_proj", "v_proj"]) == 28 * 16 * ((1536 + 1536) + (1536 + 256))


def test_zero_stages_shrink_what_each_gpu_holds() -> None:
    base = ["model=qwen2.5_1.5b_instruct", "peft=full", "hw=8xh100"]
    parts = {z: estimate(typed([*base, f"zero={z}"])).parts for z in ("none", "zero1", "zero2", "zero3",
                                                                        "zero3_offload")}
    assert parts["zero1"]["optimizer"] == pytest.approx(parts["none"]["optimizer"] * 12 / 4 / 8)
    assert parts["zero2"]["gradients"] == pytest.approx(parts["none"]["gradients"] / 8)
    assert parts["zero3"]["weights"] == pytest.approx(parts["none"]["weights"] / 8)
    assert parts["zero3_offload"]["weights"] == 0 and parts["zero3_offload"]["optimizer"] == 0
    # bf16 weights: 2 bytes per parameter
    assert parts["none"]["weights"] == pytest.approx(1.544e9 * 2 / 2**30, rel=1e-3)


def test_quantized_weights_are_smaller_but_embeddings_stay_16_bit() -> None:
    none, nf4 = (estimate(typed(["model=qwen2.5_1.5b_instruct", "hw=single_4090", f"quant={q}"]))
                 for q in ("none", "nf4"))
    assert nf4.parts["weights"] < none.parts["weights"] / 2.5
    embedding_gib = 151936 * 1536 * 2 / 2**30
    assert nf4.parts["weights"] > embedding_gib


def run_dry(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "pipeline" / "run.py"), "dry_run=true", *args],
        capture_output=True, text=True, env=offline_env(RUN_ID="dry"), cwd=REPO, timeout=180,
    )


def test_dry_run_8xh100_prints_config_command_and_memory(tmp_path: Path) -> None:
    proc = run_dry(["hw=8xh100", "model=qwen2.5_1.5b_instruct", f"paths.output_root={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "# ---- composed config" in out and "name: 8xh100" in out and "name: zero2" in out
    (command,) = [line for line in out.splitlines() if line.startswith("RUN_ID=dry ")]
    assert command.startswith("RUN_ID=dry deepspeed --num_gpus 8 --master_port 29500 pipeline/run.py ")
    assert "hw=8xh100" in command and f"output_dir={tmp_path}/grpo/dry" in command and " dry_run=" not in command
    assert "1.544B params" in out and "18.46M trainable (lora)" in out and "zero=zero2, world size 8" in out
    assert "of 80 GiB (hw=8xh100)" in out and "WARNING" not in out
    # nothing was trained: no run artefacts besides Hydra's own record
    assert not list(tmp_path.rglob("summary.json"))


def test_dry_run_2x8xh100_uses_hostfile_zero3_and_warns_when_too_big(tmp_path: Path) -> None:
    proc = run_dry(["hw=2x8xh100", "model=qwen3_1.7b", "peft=full", "zero=zero1", "stage.max_completion_length=16384",
                    "hw.micro_batch=2", f"paths.output_root={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert ("RUN_ID=dry deepspeed --hostfile hostfiles/two_nodes --num_nodes 2 --num_gpus 8 --master_port 29500 "
            "pipeline/run.py") in out
    assert "zero=zero1, world size 16" in out
    assert "WARNING: the estimate" in out and "exceeds hw.memory_gb=80" in out
    fits = run_dry(["hw=2x8xh100", "model=qwen3_1.7b", f"paths.output_root={tmp_path}"])
    assert "zero=zero3, world size 16" in fits.stdout and "WARNING" not in fits.stdout


def test_deepspeed_local_rank_argument_never_reaches_hydra(tmp_path: Path) -> None:
    proc = run_dry(["hw=cpu", "model=tiny", "--local_rank=0", f"paths.output_root={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "# one process, no re-launch" in proc.stdout


def test_a_lock_left_by_a_killed_extension_build_is_named_before_the_ranks_wait_on_it(tmp_path, monkeypatch,
                                                                                     caplog) -> None:
    from pipeline.train.runtime.distributed import STALE_BUILD_LOCK_S, warn_stale_build_locks

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    old, fresh = tmp_path / "deepspeed_shm_comm" / "lock", tmp_path / "py311_cpu" / "cpu_adam" / "lock"
    for lock in (old, fresh):
        lock.parent.mkdir(parents=True)
        lock.touch()
    an_hour_ago = time.time() - 2 * STALE_BUILD_LOCK_S
    os.utime(old, (an_hour_ago, an_hour_ago))
    with caplog.at_level(logging.WARNING):
        assert warn_stale_build_locks() == [str(old)]  # a build in progress (fresh lock) is left alone
    assert f"{old} is 60 min old" in caplog.text and "delete that file" in caplog.text
