"""The completeness marker knows every layout the Trainer writes, and resume refuses what cannot load.

Folders are laid out file by file as the Trainer writes them (names from transformers' and DeepSpeed's savers);
tests/e2e/test_resume_distributed.py checks the same against real 2-rank DeepSpeed runs.
"""

from __future__ import annotations

import json
import logging

import pytest

from pipeline.train.checkpoint.resume import CheckpointError, check_checkpoint, mark_complete, rotate
from tests.helpers.checkpoints import COMMON, deepspeed_checkpoint, lay_out


@pytest.mark.parametrize("zero3", [False, True])
def test_a_whole_deepspeed_checkpoint_is_marked_with_every_rank_s_shards(tmp_path, zero3) -> None:
    path = deepspeed_checkpoint(tmp_path, zero3=zero3)
    mark_complete(path, world_size=2)
    record = json.loads((path / "checkpoint_complete.json").read_text())
    assert (record["layout"], record["world_size"], record["step"]) == ("deepspeed", 2, 2)
    assert "global_step2/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt" in record["files"]
    check_checkpoint(path, world_size=2)


def test_a_missing_rank_shard_or_rng_state_is_named_and_nothing_is_marked(tmp_path) -> None:
    path = deepspeed_checkpoint(tmp_path)
    (path / "global_step2" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    (path / "rng_state_1.pth").unlink()
    with pytest.raises(CheckpointError, match=r"rng_state_1.pth.*rank 1's optimizer shard"):
        mark_complete(path, world_size=2)
    assert not (path / "checkpoint_complete.json").exists()


def test_zero3_full_weights_may_live_only_in_the_shards(tmp_path) -> None:
    path = deepspeed_checkpoint(tmp_path, zero3=True)
    (path / "adapter_model.safetensors").unlink()
    mark_complete(path, world_size=2)  # the engine's model-state shards hold the weights
    (path / "checkpoint_complete.json").unlink()
    for shard in (path / "global_step2").glob("*model_states.pt"):
        shard.unlink()
    with pytest.raises(CheckpointError, match="model_states.pt, model or adapter weights"):
        mark_complete(path, world_size=2)


def test_plain_and_ddp_layouts(tmp_path) -> None:
    single = lay_out(tmp_path / "a", [*COMMON, "optimizer.pt", "rng_state.pth"])
    mark_complete(single)
    ddp = lay_out(tmp_path / "b", [*COMMON, "optimizer.pt", "rng_state_0.pth"])
    with pytest.raises(CheckpointError, match="rng_state_1.pth"):
        mark_complete(ddp, world_size=2)
    with pytest.raises(CheckpointError, match="optimizer.pt"):
        mark_complete(lay_out(tmp_path / "c", [*COMMON, "rng_state.pth"]))


def test_a_deepspeed_checkpoint_is_refused_by_another_number_of_ranks(tmp_path) -> None:
    path = deepspeed_checkpoint(tmp_path)
    mark_complete(path, world_size=2)
    with pytest.raises(CheckpointError, match=r"written by 2 processes and this run has 1.*Fix: resume with 2"):
        check_checkpoint(path, world_size=1)


def test_a_ddp_checkpoint_loads_into_another_number_of_ranks_with_a_warning(tmp_path, caplog) -> None:
    path = lay_out(tmp_path / "checkpoint-2", [*COMMON, "optimizer.pt", "rng_state_0.pth", "rng_state_1.pth"])
    mark_complete(path, world_size=2)
    with caplog.at_level(logging.WARNING):
        check_checkpoint(path, world_size=1)
    assert "written by 2 process(es), resumed with 1" in caplog.text
    # a marker written before it recorded the world size: counted from the per-rank RNG files
    record = json.loads((path / "checkpoint_complete.json").read_text())
    del record["world_size"]
    (path / "checkpoint_complete.json").write_text(json.dumps(record))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        check_checkpoint(path, world_size=1)
    assert "written by 2 process(es)" in caplog.text


def test_rotation_deletes_whole_deepspeed_checkpoints(tmp_path) -> None:
    for step in (2, 4, 6):
        mark_complete(deepspeed_checkpoint(tmp_path, step), world_size=2)
    rotate(tmp_path, keep=1)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-6"]


def _fsdp2_checkpoint(root, ranks: int = 2):
    # as checkpoint/fsdp2.py and the Trainer (save_only_model) write it
    path = root / "checkpoints" / "checkpoint-2"
    return lay_out(path, [*COMMON, *(f"rng_state_{r}.pth" for r in range(ranks)), "fsdp2/.metadata",
                          *(f"fsdp2/__{r}_0.distcp" for r in range(ranks))])


def test_an_fsdp2_checkpoint_lists_every_rank_s_shard_and_needs_no_optimizer_pt(tmp_path) -> None:
    path = _fsdp2_checkpoint(tmp_path)
    mark_complete(path, world_size=2)
    record = json.loads((path / "checkpoint_complete.json").read_text())
    assert record["layout"] == "fsdp2" and {"fsdp2/__0_0.distcp", "fsdp2/__1_0.distcp"} <= set(record["files"])
    check_checkpoint(path, world_size=2)


def test_an_fsdp2_checkpoint_missing_a_rank_s_shard_is_not_marked(tmp_path) -> None:
    path = _fsdp2_checkpoint(tmp_path)
    (path / "fsdp2" / "__1_0.distcp").unlink()
    with pytest.raises(CheckpointError, match=r"fsdp2/__1_0.distcp \(rank 1's shards\)"):
        mark_complete(path, world_size=2)
    assert not (path / "checkpoint_complete.json").exists()


def test_an_fsdp2_checkpoint_resumes_on_another_number_of_ranks_with_a_warning(tmp_path, caplog) -> None:
    """DCP reshards on load (tests/e2e/test_fsdp2.py resumes 2 ranks' checkpoint on 3)."""
    path = _fsdp2_checkpoint(tmp_path)
    mark_complete(path, world_size=2)
    with caplog.at_level(logging.WARNING):
        check_checkpoint(path, world_size=3)
    assert "written by 2 process(es), resumed with 3" in caplog.text
