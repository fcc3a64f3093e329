"""Launching: the accelerate / deepspeed / torchrun command for an `hw` profile, the self re-launch, the dry run.

`python pipeline/run.py hw=dual_3090` wants two processes but is one: run.py hands its overrides to `relaunch`,
which exports one RUN_ID, pins output_dir, and runs the profile's launcher on the same script and overrides. The
launcher's ranks see WORLD_SIZE and run the stage. Typed launches (`deepspeed --num_gpus 2 pipeline/run.py ...`,
`torchrun ...`, `accelerate launch ...`) start inside a launcher and never re-launch.

Light imports only (no torch): this runs in every process before the stage, and in dry runs.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from pipeline.config.derived import REPO
from pipeline.config.enums import Launcher
from pipeline.config.plan import RunPlan
from pipeline.launch.memory import memory_report
from pipeline.launch.slurm import check_allocation, launcher_in_allocation, rendezvous, slurm_node

SCRIPT = REPO / "pipeline" / "run.py"
# Set in the children of a re-launch: a launcher that starts a process without rank variables must not loop.
LAUNCHED_ENV = "PIPELINE_LAUNCHED"
# The friendly command a person types, and the module this interpreter runs for it (PATH may lack the venv).
MODULES = {
    "accelerate launch": "accelerate.commands.launch",
    "deepspeed": "deepspeed.launcher.runner",
    "torchrun": "torch.distributed.run",
}


# ---- commands --------------------------------------------------------------------------------------------------


def script_path() -> str:
    """pipeline/run.py as typed from the repo root, absolute from anywhere else."""
    relative = os.path.relpath(SCRIPT)
    return str(SCRIPT) if relative.startswith("..") else relative


def launch_command(plan: RunPlan, overrides: list[str], port: int | None = None) -> list[str]:
    """The command a person would type to start this run on all ranks (the head is the friendly launcher name)."""
    hw = plan.cfg.hw
    # inside a Slurm allocation (a sweep job sent by hydra/launcher=slurm) the node's place comes from SLURM_*
    slurm = slurm_node(os.environ)
    addr, env_port, node_rank = rendezvous(slurm, os.environ, hw.master_addr, hw.master_port)
    port = port or env_port
    launcher = launcher_in_allocation(slurm, hw.launcher)
    script = script_path()
    if launcher == Launcher.deepspeed:
        head = ["deepspeed"]
        if hw.hostfile:
            head += ["--hostfile", hw.hostfile, "--num_nodes", str(hw.num_nodes)]
        head += ["--num_gpus", str(hw.num_processes), "--master_port", str(port)]
    elif launcher == Launcher.torchrun:
        head = ["torchrun", "--nnodes", str(hw.num_nodes), "--nproc_per_node", str(hw.num_processes),
                "--node_rank", node_rank, "--master_addr", addr, "--master_port", str(port)]
    else:
        head = ["accelerate", "launch", "--multi_gpu", "--num_processes", str(plan.world_size),
                "--num_machines", str(hw.num_nodes), "--machine_rank", node_rank,
                "--main_process_ip", addr, "--main_process_port", str(port)]
    return [*head, script, *overrides]


def executable(command: list[str]) -> list[str]:
    """Run the launcher as a module of this interpreter: the venv's bin/ need not be on PATH."""
    for name, module in MODULES.items():
        words = name.split()
        if command[: len(words)] == words:
            return [sys.executable, "-m", module, *command[len(words) :]]
    raise ValueError(f"unknown launcher in {command[:2]}")


def child_overrides(overrides: list[str], run_dir: Path) -> list[str]:
    """The job's own overrides with output_dir pinned, so every rank (and every sweep job) writes one dir."""
    return [o for o in overrides if not o.lstrip("+~").startswith("output_dir=")] + [f"output_dir={run_dir}"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def needs_relaunch(plan: RunPlan) -> bool:
    if plan.world_size <= 1 or plan.launched:
        return False
    if os.environ.get(LAUNCHED_ENV):
        hw = plan.cfg.hw
        raise RuntimeError(
            f"hw={hw.name} wants {plan.world_size} processes, and {hw.launcher.value} started this one "
            "without rank variables (WORLD_SIZE). Fix: check the launcher's flags, or type the launch yourself."
        )
    return True


def relaunch(plan: RunPlan, overrides: list[str]) -> None:
    """Start all ranks through the profile's launcher and wait; raises when any rank fails."""
    cfg = plan.cfg
    slurm = slurm_node(os.environ)
    if slurm is not None:
        check_allocation(slurm, cfg.hw)
        print(f"Slurm job {slurm.job_id}: node {slurm.node_rank} of {slurm.nodes}, rank 0 on {slurm.head}", flush=True)
    # One machine: any free port, so concurrent runs on one host do not collide; several: the agreed one.
    port = free_port() if cfg.hw.num_nodes == 1 and "MASTER_PORT" not in os.environ else None
    # .hydra/ of this run (or sweep job) is already written by this process, with the overrides as typed
    command = launch_command(plan, [*child_overrides(overrides, plan.run_dir), "hydra.output_subdir=null"], port)
    env = dict(os.environ, RUN_ID=cfg.run_id, **{LAUNCHED_ENV: "1"})
    # One CPU thread per rank unless the profile says otherwise: ranks would fight over the same cores.
    env.setdefault("OMP_NUM_THREADS", str(cfg.hw.torch_threads or 1))
    print(f"re-launching {plan.world_size} processes: {shlex.join(command)}", flush=True)
    proc = subprocess.run(executable(command), env=env, check=False)
    if proc.returncode:
        # the ranks have printed their own error (a user error's block, or a traceback); keep the launcher's code
        print(f"{command[0]} exited with {proc.returncode}: see the ranks' output above.", file=sys.stderr)
        raise SystemExit(proc.returncode)


def single_process_env(plan: RunPlan) -> None:
    """DeepSpeed in one process with no launcher wants MPI; rank variables for a world of one replace it."""
    if plan.cfg.zero.stage == 0 or plan.launched:
        return
    port = free_port()
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        os.environ.setdefault(key, value)


# ---- entry: dry run, re-launch, or run here -------------------------------------------------------------------


def dispatch(composed: object, plan: RunPlan, overrides: list[str]) -> bool:
    """True when this process is done (dry run printed, or all ranks ran through the launcher)."""
    if plan.cfg.dry_run:
        print(dry_run_report(composed, plan, overrides), flush=True)
        return True
    if needs_relaunch(plan):
        relaunch(plan, overrides)
        return True
    single_process_env(plan)
    return False


def dry_run_report(composed: object, plan: RunPlan, overrides: list[str]) -> str:
    """The composed config, the exact command that would run, and the per-GPU memory estimate."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith("dry_run=")]
    if plan.world_size > 1 and not plan.launched:
        command = f"RUN_ID={plan.cfg.run_id} " + shlex.join(launch_command(plan, child_overrides(kept, plan.run_dir)))
    else:
        where = "this launcher's rank" if plan.launched else "one process"
        command = shlex.join(["python", script_path(), *kept]) + f"  # {where}, no re-launch"
    return "\n".join([
        "# ---- composed config", OmegaConf.to_yaml(composed, resolve=True).rstrip(),
        "# ---- launch command", command,
        "# ---- memory", memory_report(plan),
    ])
