"""Inside a Slurm allocation: SLURM_* parsed into this node's place, the rendezvous every node agrees on, the
allocation checked against the hw profile, and the launch command each node's task runs (no processes started)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from pipeline.config.enums import Launcher
from pipeline.config.plan import plan_run
from pipeline.config.user_errors import is_user_error
from pipeline.launch.launcher import launch_command
from pipeline.launch.slurm import (
    SlurmError,
    SlurmNode,
    check_allocation,
    default_port,
    first_host,
    launcher_in_allocation,
    rendezvous,
    slurm_node,
)
from tests.helpers.runs import compose_config

# what srun sets for the second task of a two-node job (an array task's own job id)
NODE_1 = {"SLURM_JOB_ID": "812345", "SLURM_NNODES": "2", "SLURM_NODEID": "1", "SLURM_NTASKS": "2",
          "SLURM_JOB_NODELIST": "gpu[07-08]"}


@pytest.mark.parametrize(("nodelist", "head"), [
    ("gpu07", "gpu07"),
    ("gpu[07-09,12]", "gpu07"),
    ("gpu[12,3-4],cpu1", "gpu12"),
    ("rack[1-2]-n[01-04]", "rack1-n01"),
    ("a1,b[2-3]", "a1"),
    ("10.0.0.5", "10.0.0.5"),
])
def test_first_host_of_a_compressed_host_list(nodelist: str, head: str) -> None:
    assert first_host(nodelist) == head


def test_the_node_s_place_comes_from_slurm_variables() -> None:
    assert slurm_node({}) is None  # not in Slurm: nothing changes
    assert slurm_node(NODE_1) == SlurmNode(job_id="812345", nodes=2, node_rank=1, head="gpu07", tasks=2)
    # an sbatch script without srun: one node, rank 0, the job's only task
    alone = slurm_node({"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "1", "SLURM_NODELIST": "n3"})
    assert alone == SlurmNode(job_id="7", nodes=1, node_rank=0, head="n3", tasks=1)


def test_every_node_agrees_on_the_rendezvous_and_the_environment_wins() -> None:
    node = slurm_node(NODE_1)
    # port from the job id: two jobs whose rank 0 shares a host do not collide; the same on both nodes
    assert rendezvous(node, {}, "127.0.0.1", 29500) == ("gpu07", 15000 + 2345, "1")
    assert default_port("812345") == default_port("812345") != default_port("812346")
    set_by_user = {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29600", "NODE_RANK": "0"}
    assert rendezvous(node, set_by_user, "127.0.0.1", 29500) == ("10.0.0.1", 29600, "0")
    assert rendezvous(None, {}, "127.0.0.1", 29500) == ("127.0.0.1", 29500, "0")


def test_allocation_must_match_the_profile() -> None:
    hw = plan_run(compose_config(["hw=2x8xh100"]), Path("/tmp/run")).cfg.hw
    check_allocation(slurm_node(NODE_1), hw)
    with pytest.raises(SlurmError, match=r"has 1 node\(s\), and hw=2x8xh100 plans 2. Fix: hydra.launcher.nodes=2"):
        check_allocation(slurm_node({**NODE_1, "SLURM_NNODES": "1", "SLURM_NTASKS": "1"}), hw)
    # submitit's usual one-task-per-GPU layout would start every node's ranks 8 times
    with pytest.raises(SlurmError, match="Fix: hydra.launcher.tasks_per_node=1") as err:
        check_allocation(slurm_node({**NODE_1, "SLURM_NTASKS": "16"}), hw)
    assert is_user_error(err.value)


def test_deepspeed_becomes_torchrun_across_nodes_only() -> None:
    two, one = slurm_node(NODE_1), slurm_node({**NODE_1, "SLURM_NNODES": "1", "SLURM_NODEID": "0"})
    assert launcher_in_allocation(two, Launcher.deepspeed) == Launcher.torchrun
    assert launcher_in_allocation(one, Launcher.deepspeed) == Launcher.deepspeed
    assert launcher_in_allocation(two, Launcher.accelerate) == Launcher.accelerate
    assert launcher_in_allocation(None, Launcher.deepspeed) == Launcher.deepspeed


@pytest.fixture
def node_1(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in NODE_1.items():
        monkeypatch.setenv(key, value)


def test_each_node_s_task_runs_the_profile_s_launcher_for_its_ranks(node_1: None) -> None:
    plan = plan_run(compose_config(["hw=2x8xh100"]), Path("/tmp/run"))
    # hw=2x8xh100 plans the deepspeed launcher over ssh; in the allocation each node starts its 8 ranks itself
    assert shlex.join(launch_command(plan, ["hw=2x8xh100"])).startswith(
        "torchrun --nnodes 2 --nproc_per_node 8 --node_rank 1 --master_addr gpu07 --master_port 17345 ")
    accelerate = plan_run(compose_config(["hw=2x8xh100", "hw.launcher=accelerate"]), Path("/tmp/run"))
    assert shlex.join(launch_command(accelerate, [])).startswith(
        "accelerate launch --multi_gpu --num_processes 16 --num_machines 2 --machine_rank 1 "
        "--main_process_ip gpu07 --main_process_port 17345 ")


def test_slurm_option_file_takes_nodes_and_gpus_from_the_profile() -> None:
    from hydra import compose, initialize_config_dir

    from pipeline.config.schema import register_configs
    from tests.helpers.runs import CONF

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        # a key the plugin's schema lacks would fail here: the option file only sets submitit_slurm's own keys
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm", "hw=2x8xh100"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 8, 1)
    assert str(launcher.submitit_folder).endswith("/.submitit/%j")
