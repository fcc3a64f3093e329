"""Launching: the accelerate / deepspeed / torchrun command for an `hw` profile, hostfiles, and the self re-launch.

`python pipeline/run.py hw=dual_3090` wants two processes but is one: run.py hands its overrides to `relaunch`,
which exports one RUN_ID, pins output_dir, and runs the profile's launcher on the same script and overrides. The
launcher's ranks see WORLD_SIZE and run the stage. Typed launches (`deepspeed --num_gpus 2 pipeline/run.py ...`,
`torchrun ...`, `accelerate launch ...`) start inside a launcher and never re-launch.

Light imports only (no torch): this runs before validation, and in dry runs.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

from pipeline.config.schema import Launcher, RunConfig

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "pipeline" / "run.py"
# Set in the children of a re-launch: a launcher that starts a process without rank variables must not loop.
LAUNCHED_ENV = "PIPELINE_LAUNCHED"
# The friendly command a person types, and the module this interpreter runs for it (PATH may lack the venv).
MODULES = {
    "accelerate launch": "accelerate.commands.launch",
    "deepspeed": "deepspeed.launcher.runner",
    "torchrun": "torch.distributed.run",
}
HOST_LINE = re.compile(r"^(?P<host>[^\s=]+)\s+slots=(?P<slots>\d+)$")


class HostfileError(ValueError):
    """A hostfile that is missing or has a line DeepSpeed would reject or misread."""


def world_size(cfg: RunConfig) -> int:
    return cfg.hw.num_processes * cfg.hw.num_nodes


def inside_launcher() -> bool:
    # torchrun, accelerate launch and the deepspeed launcher all export WORLD_SIZE to every rank.
    return "WORLD_SIZE" in os.environ


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def rank_argv(argv: list[str]) -> None:
    """Ranks other than 0 neither rewrite .hydra/ nor append to run.log: they log to the console only."""
    if rank() != 0:
        argv.extend(["hydra.output_subdir=null", "hydra/job_logging=stdout"])


# ---- hostfiles -------------------------------------------------------------------------------------------------


def resolve(path: str) -> Path:
    """Relative paths name files in the repo (hostfiles/, ds_configs/) unless they exist from the cwd."""
    p = Path(path)
    return p if p.is_absolute() or p.exists() else REPO / p


def ds_config_path(cfg: RunConfig) -> Path | None:
    """The DeepSpeed JSON of the zero profile: a name in ds_configs/, or a path; None for zero=none."""
    if not cfg.zero.stage or not cfg.zero.config_file:
        return None
    name = cfg.zero.config_file
    return resolve(name) if "/" in name else REPO / "ds_configs" / name


def parse_hostfile(path: str) -> list[tuple[str, int]]:
    """`host slots=N` lines -> [(host, N)]; comments and blank lines skipped; errors name file:line and the fix."""
    file = resolve(path)
    if not file.is_file():
        raise HostfileError(
            f"hw.hostfile={path}: no such file ({file}). Fix: create it with one 'host slots=N' line per "
            "node (see hostfiles/README.md), or set hw.hostfile=null for one machine."
        )
    hosts: list[tuple[str, int]] = []
    for n, raw in enumerate(file.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = HOST_LINE.match(line)
        if not match or int(match["slots"]) <= 0:
            raise HostfileError(
                f"{file}:{n}: '{raw.strip()}' is not '<host> slots=<N>' with N >= 1. "
                "Fix the line, e.g. '10.0.0.1 slots=8'."
            )
        if match["host"] in {h for h, _ in hosts}:
            raise HostfileError(f"{file}:{n}: host '{match['host']}' is listed twice. Fix: one line per machine.")
        hosts.append((match["host"], int(match["slots"])))
    if not hosts:
        raise HostfileError(f"{file}: no 'host slots=N' lines. Fix: add one line per node.")
    return hosts


def hostfile_problems(cfg: RunConfig) -> list[str]:
    """The hostfile must exist, parse, and describe exactly hw.num_nodes x hw.num_processes."""
    hw = cfg.hw
    if not hw.hostfile:
        return []
    try:
        hosts = parse_hostfile(hw.hostfile)
    except HostfileError as err:
        return [str(err)]
    slots = sorted({s for _, s in hosts})
    if len(hosts) != hw.num_nodes or slots != [hw.num_processes]:
        listed = ", ".join(f"{h} slots={s}" for h, s in hosts)
        return [
            f"hw.hostfile={hw.hostfile} lists {listed} but hw={hw.name} wants {hw.num_nodes} node(s) x "
            f"{hw.num_processes} processes: fix the file, or set hw.num_nodes={len(hosts)} "
            f"hw.num_processes={slots[0]}."
        ]
    return []


def launched_world_problems(cfg: RunConfig) -> list[str]:
    """A typed launch (`deepspeed --num_gpus 4 ...`) must agree with the hw profile the batch split assumes."""
    if not inside_launcher() or int(os.environ["WORLD_SIZE"]) == world_size(cfg):
        return []
    actual = int(os.environ["WORLD_SIZE"])
    return [
        f"the launcher started {actual} processes but hw={cfg.hw.name} says {cfg.hw.num_nodes} node(s) x "
        f"{cfg.hw.num_processes} = {world_size(cfg)}; the batch split needs them equal. Fix: pass "
        f"hw.num_processes={actual // cfg.hw.num_nodes} (per node) or pick a matching hw profile."
    ]


# ---- commands --------------------------------------------------------------------------------------------------


def script_path() -> str:
    """pipeline/run.py as typed from the repo root, absolute from anywhere else."""
    relative = os.path.relpath(SCRIPT)
    return str(SCRIPT) if relative.startswith("..") else relative


def launch_command(cfg: RunConfig, overrides: list[str], port: int | None = None) -> list[str]:
    """The command a person would type to start this run on all ranks (the head is the friendly launcher name)."""
    hw = cfg.hw
    addr = os.environ.get("MASTER_ADDR", hw.master_addr)
    port = port or int(os.environ.get("MASTER_PORT", hw.master_port))
    node_rank = os.environ.get("NODE_RANK", "0")
    script = script_path()
    if hw.launcher == Launcher.deepspeed:
        head = ["deepspeed"]
        if hw.hostfile:
            head += ["--hostfile", hw.hostfile, "--num_nodes", str(hw.num_nodes)]
        head += ["--num_gpus", str(hw.num_processes), "--master_port", str(port)]
    elif hw.launcher == Launcher.torchrun:
        head = ["torchrun", "--nnodes", str(hw.num_nodes), "--nproc_per_node", str(hw.num_processes),
                "--node_rank", node_rank, "--master_addr", addr, "--master_port", str(port)]
    else:
        head = ["accelerate", "launch", "--multi_gpu", "--num_processes", str(world_size(cfg)),
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


def needs_relaunch(cfg: RunConfig) -> bool:
    if world_size(cfg) <= 1 or inside_launcher():
        return False
    if os.environ.get(LAUNCHED_ENV):
        raise RuntimeError(
            f"hw={cfg.hw.name} wants {world_size(cfg)} processes, and {cfg.hw.launcher.value} started this one "
            "without rank variables (WORLD_SIZE). Fix: check the launcher's flags, or type the launch yourself."
        )
    return True


def relaunch(cfg: RunConfig, overrides: list[str], run_dir: Path) -> None:
    """Start all ranks through the profile's launcher and wait; raises when any rank fails."""
    # One machine: any free port, so concurrent runs on one host do not collide; several: the agreed one.
    port = free_port() if cfg.hw.num_nodes == 1 and "MASTER_PORT" not in os.environ else None
    # .hydra/ of this run (or sweep job) is already written by this process, with the overrides as typed
    command = launch_command(cfg, [*child_overrides(overrides, run_dir), "hydra.output_subdir=null"], port)
    env = dict(os.environ, RUN_ID=cfg.run_id, **{LAUNCHED_ENV: "1"})
    # One CPU thread per rank unless the profile says otherwise: ranks would fight over the same cores.
    env.setdefault("OMP_NUM_THREADS", str(cfg.hw.torch_threads or 1))
    print(f"re-launching {world_size(cfg)} processes: {shlex.join(command)}", flush=True)
    proc = subprocess.run(executable(command), env=env, check=False)
    if proc.returncode:
        raise SystemExit(f"{command[0]} exited with {proc.returncode}: see the ranks' output above.")


def single_process_env(cfg: RunConfig) -> None:
    """DeepSpeed in one process with no launcher wants MPI; rank variables for a world of one replace it."""
    if cfg.zero.stage == 0 or inside_launcher():
        return
    port = free_port()
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        os.environ.setdefault(key, value)


# ---- entry: dry run, re-launch, or run here -------------------------------------------------------------------


def dispatch(composed: object, cfg: RunConfig, overrides: list[str], run_dir: Path) -> bool:
    """True when this process is done (dry run printed, or all ranks ran through the launcher)."""
    if cfg.dry_run:
        print(dry_run_report(composed, cfg, overrides, run_dir), flush=True)
        return True
    if needs_relaunch(cfg):
        relaunch(cfg, overrides, run_dir)
        return True
    single_process_env(cfg)
    return False


def dry_run_report(composed: object, cfg: RunConfig, overrides: list[str], run_dir: Path) -> str:
    """The composed config, the exact command that would run, and the per-GPU memory estimate."""
    from omegaconf import OmegaConf

    from pipeline.launch.memory import estimate

    kept = [o for o in overrides if not o.lstrip("+~").startswith("dry_run=")]
    if world_size(cfg) > 1 and not inside_launcher():
        command = f"RUN_ID={cfg.run_id} " + shlex.join(launch_command(cfg, child_overrides(kept, run_dir)))
    else:
        where = "this launcher's rank" if inside_launcher() else "one process"
        command = shlex.join(["python", script_path(), *kept]) + f"  # {where}, no re-launch"
    try:
        memory = estimate(cfg).report(cfg)
    except ValueError as err:
        memory = f"per-GPU memory estimate unavailable: {err}"
    return "\n".join([
        "# ---- composed config", OmegaConf.to_yaml(composed, resolve=True).rstrip(),
        "# ---- launch command", command,
        "# ---- memory", memory,
    ])
