"""Inside a Slurm allocation: which node this is and where rank 0 listens, from the SLURM_* variables.

A sweep job sent with `hydra/launcher=slurm` (submitit) runs pipeline/run.py once per node (one task per node);
each of those re-launches through the launcher its `hw` profile plans (pipeline.launch.launcher), for the ranks of
its own node. What they must agree on comes from Slurm, the same on every node:

    SLURM_JOB_ID                       the job (an array task has its own); the default port derives from it
    SLURM_NNODES (SLURM_JOB_NUM_NODES)  nodes in the allocation: must equal hw.num_nodes
    SLURM_NODEID                       this node's rank, 0..nodes-1
    SLURM_JOB_NODELIST                 the hosts, compressed (gpu[01-04]); the first runs rank 0
    SLURM_NTASKS                       tasks in the job: one per node (each starts its node's ranks)

MASTER_ADDR, MASTER_PORT and NODE_RANK in the environment still win, as they do for launch/torchrun.sh.
launch/slurm.sbatch (single jobs) does the same in bash. Light imports only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.config.enums import Launcher
from pipeline.config.schema import HwConfig
from pipeline.config.user_errors import UserError

# Lightning's rule: a port from the job id, so two jobs whose rank 0 shares a host do not collide.
PORT_BASE = 15000


class SlurmError(UserError, ValueError):
    """The Slurm allocation does not fit the run's hw profile."""


@dataclass(frozen=True)
class SlurmNode:
    job_id: str
    nodes: int
    node_rank: int
    # the first host of the allocation: where rank 0 listens
    head: str
    tasks: int


def slurm_node(env: Mapping[str, str]) -> SlurmNode | None:
    """This process's place in its Slurm job; None outside Slurm."""
    if not env.get("SLURM_JOB_ID"):
        return None
    nodes = int(env.get("SLURM_NNODES") or env.get("SLURM_JOB_NUM_NODES") or 1)
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
    return SlurmNode(job_id=env["SLURM_JOB_ID"], nodes=nodes, node_rank=int(env.get("SLURM_NODEID") or 0),
                     head=first_host(nodelist) if nodelist else "127.0.0.1",
                     tasks=int(env.get("SLURM_NTASKS") or nodes))


def first_host(nodelist: str) -> str:
    """The first host of a Slurm host list: `gpu[07-09,12],cpu3` -> gpu07, `rack[1-2]-n[01-04]` -> rack1-n01."""
    entry = re.match(r"(?:[^,\[]|\[[^\]]*\])+", nodelist.strip())
    if entry is None:
        raise SlurmError(f"SLURM_JOB_NODELIST={nodelist!r}: not a Slurm host list.")
    # each bracket holds ranges and single numbers: the first host takes the first number of every bracket
    return re.sub(r"\[([^\]\-,]+)[^\]]*\]", r"\1", entry.group(0))


def default_port(job_id: str) -> int:
    digits = re.sub(r"\D", "", job_id)[-4:]
    return PORT_BASE + int(digits or 0)


def rendezvous(node: SlurmNode | None, env: Mapping[str, str], master_addr: str, master_port: int,
               ) -> tuple[str, int, str]:
    """(rank 0's address, its port, this node's rank): the environment, else Slurm's, else the hw profile's."""
    if node is None:
        return (env.get("MASTER_ADDR", master_addr), int(env.get("MASTER_PORT", master_port)),
                env.get("NODE_RANK", "0"))
    return (env.get("MASTER_ADDR", node.head), int(env.get("MASTER_PORT", default_port(node.job_id))),
            env.get("NODE_RANK", str(node.node_rank)))


def check_allocation(node: SlurmNode, hw: HwConfig) -> None:
    """The allocation must be the profile's nodes, one task on each (that task starts the node's ranks)."""
    name, nodes, procs = hw.name, hw.num_nodes, hw.num_processes
    if node.nodes != nodes:
        raise SlurmError(
            f"Slurm job {node.job_id} has {node.nodes} node(s), and hw={name} plans {nodes}. Fix: "
            f"hydra.launcher.nodes={nodes} (sbatch --nodes={nodes}), or hw.num_nodes={node.nodes}.")
    if node.tasks != node.nodes:
        raise SlurmError(
            f"Slurm job {node.job_id} runs {node.tasks} tasks on {node.nodes} node(s); each node needs one task, "
            f"which starts that node's {procs} ranks. Fix: hydra.launcher.tasks_per_node=1.")


def launcher_in_allocation(node: SlurmNode | None, launcher: Launcher) -> Launcher:
    """The deepspeed launcher reaches the other nodes over ssh, but inside an allocation every node already runs
    its own task: torchrun starts each node's ranks, and the Trainer still runs DeepSpeed from the zero profile
    (as launch/slurm.sbatch does)."""
    if node is not None and node.nodes > 1 and launcher == Launcher.deepspeed:
        return Launcher.torchrun
    return launcher
