"""Model building under a process group: a model converted after the group started is refused, never left empty."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.launch.launcher import free_port
from tests.helpers.runs import REPO, offline_env


@pytest.mark.e2e  # a 2-rank launch (torch.distributed.run)
def test_a_model_converted_after_the_process_group_started_is_refused_not_left_empty(tmp_path: Path) -> None:
    """Once a process group runs, transformers' save_pretrained writes only on rank 0: rank 1 converting the random
    model must fail loudly (prepare() converts before the group starts) instead of publishing an empty folder."""
    script = tmp_path / "convert.py"
    script.write_text(textwrap.dedent("""
        import sys
        import torch.distributed as dist
        from omegaconf import OmegaConf
        from pipeline.train.model.build import model_dir
        from tests.helpers.runs import compose_config

        dist.init_process_group("gloo")
        model = OmegaConf.to_object(compose_config(["model=tiny"])).model
        if dist.get_rank() == 1:
            try:
                model_dir(model, sys.argv[1])
                print("rank 1 converted")
            except RuntimeError as err:
                print("rank 1 refused:", err)
        dist.barrier()
    """))
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(script), str(cache)]
    proc = subprocess.run(command, cwd=REPO, env=offline_env(OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "rank 1 refused: model=tiny: converting it into" in output and "wrote nothing" in output, output[-3000:]
    published = [d for d in cache.glob("tiny-*") if d.is_dir() and not d.name.endswith(".partial")]
    assert published == [], f"an incomplete model folder was published: {published}"
