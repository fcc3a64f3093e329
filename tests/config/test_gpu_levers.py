"""The CUDA-only levers: each is refused on CPU by validation, naming the reason and the fix; accepted on a GPU
profile (whether the GPU has what it needs is checked at load time). No lever is measured here: no GPU."""

from __future__ import annotations

import re

import pytest

from pipeline.config.checks import ConfigError, to_run_config
from tests.helpers.runs import compose_config


@pytest.mark.parametrize(("override", "reason"), [
    ("model.attn_implementation=flash_attention_2", "needs CUDA"),
    ("model.attn_implementation=flex_attention", "needs CUDA"),
    ("model.attn_implementation=fast", "use one of sdpa, eager, flash_attention_2, flex_attention"),
    ("hw.liger_kernel=true", "needs CUDA (Liger's kernels are Triton GPU kernels)"),
    ("hw.tf32=true", "needs an Ampere or newer CUDA GPU"),
    ("hw.continuous_batching=true", "is a CUDA path"),
])
def test_each_gpu_lever_is_refused_on_cpu_with_its_reason(override: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(reason)):
        to_run_config(compose_config(["hw=cpu", override]))


def test_gpu_levers_pass_validation_on_a_gpu_profile_and_reach_the_trainer_arguments(tmp_path) -> None:
    from pipeline.config.plan import resolve_plan
    from pipeline.train.stages.trl_args import training_args

    cfg = to_run_config(compose_config(["hw=single_a100_80g", "hw.tf32=true", "hw.continuous_batching=true",
                                        "model.attn_implementation=eager"]))
    args = training_args(resolve_plan(cfg, tmp_path))
    assert args["tf32"] is True and args["use_liger_kernel"] is False


def test_continuous_batching_is_refused_for_a_stage_that_does_not_generate() -> None:
    with pytest.raises(ConfigError, match="stage=sft does not generate"):
        to_run_config(compose_config(["hw=single_a100_80g", "stage=sft", "hw.continuous_batching=true"]))
