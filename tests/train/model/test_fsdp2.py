"""FSDP2 loading helpers in one gloo process (a world of one still makes every weight a DTensor): a checkpoint's
whole tensors load into the shards, tied weights included; tools that load an FSDP2 run back get a plain model;
a generation's unsharded weights are put back before an optimizer or checkpoint sees them."""

from __future__ import annotations

import pytest
import torch

from pipeline.config.checks import to_run_config
from pipeline.train.model.fsdp2 import accept_full_state_dicts, fsdp2_load_kwargs, fsdp2_share
from pipeline.train.runtime.fsdp2 import reshard
from tests.helpers.runs import compose_config
from tests.helpers.tiny_models import tiny_config


@pytest.fixture
def one_rank_group():
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _sharded_tiny() -> torch.nn.Module:
    from torch.distributed.fsdp import fully_shard
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(0)
    config = tiny_config(128)
    config.tie_word_embeddings = True
    model = Qwen3ForCausalLM(config)
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def test_whole_tensors_load_into_the_shards_tied_head_included(one_rank_group) -> None:
    model = _sharded_tiny()
    whole = {k: torch.randn_like(v.full_tensor()) for k, v in model.state_dict().items()}
    whole["lm_head.weight"] = whole["model.embed_tokens.weight"]
    with pytest.raises(RuntimeError, match="mixed torch.Tensor and DTensor"):
        model.load_state_dict(whole, strict=False)  # what the Trainer's resume did before
    accept_full_state_dicts(model)
    model.load_state_dict(whole, strict=False)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k].full_tensor(), whole[k]) for k in whole)
    held, total = fsdp2_share(model)
    assert held == total == sum(p.numel() for p in model.parameters())  # one rank holds everything


def test_generation_leaves_whole_weights_that_reshard_puts_back(one_rank_group) -> None:
    from torch.distributed.tensor import DTensor

    model = _sharded_tiny()
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))  # the root group is not resharded after a forward
    assert not all(isinstance(p, DTensor) for p in model.parameters())
    reshard(model)
    assert all(isinstance(p, DTensor) for p in model.parameters())


def test_outside_a_process_group_an_fsdp2_run_loads_plain() -> None:
    """export / evaluate load an FSDP2 run's base in one process: no sharding asked of from_pretrained."""
    cfg = to_run_config(compose_config(["model=tiny", "zero=fsdp2", "hw=cpu_2proc"]))
    assert fsdp2_load_kwargs(cfg) == {}
