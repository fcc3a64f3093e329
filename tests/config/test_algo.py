"""algo= presets, names checked before anything loads, stage.trl pass-through, and chains of any length."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from pipeline.config.argv import open_trl_keys
from pipeline.config.checks import ConfigError, to_run_config
from pipeline.config.derived import chain_steps
from pipeline.config.enums import GRPOLoss, ImportanceSampling, RewardScaling
from tests.helpers.runs import compose_config

# preset -> (loss_type, beta, epsilon, epsilon_high, scale_rewards, importance_sampling_level), the papers' values
PRESETS = {
    "grpo": (GRPOLoss.grpo, 0.04, 0.2, None, RewardScaling.group, ImportanceSampling.token),
    "dapo": (GRPOLoss.dapo, 0.0, 0.2, 0.28, RewardScaling.group, ImportanceSampling.token),
    "dr_grpo": (GRPOLoss.dr_grpo, 0.0, 0.2, None, RewardScaling.none, ImportanceSampling.token),
    "gspo": (GRPOLoss.grpo, 0.0, 3e-4, 4e-4, RewardScaling.group, ImportanceSampling.sequence),
    "cispo": (GRPOLoss.cispo, 0.0, 0.2, 5.0, RewardScaling.group, ImportanceSampling.token),
}


def _run_config(*overrides: str):
    return to_run_config(compose_config(["model=tiny", *overrides]))


@pytest.mark.parametrize("algo", sorted(PRESETS))
def test_algo_preset_sets_the_papers_loss_knobs(algo: str) -> None:
    s = _run_config(f"algo={algo}").stage
    got = (s.loss_type, s.beta, s.epsilon, s.epsilon_high, s.scale_rewards, s.importance_sampling_level)
    assert got == PRESETS[algo]
    assert s.mask_truncated_completions is (algo == "dapo")  # DAPO's overlong filtering


def test_algo_preset_applies_to_the_grpo_step_of_a_chain() -> None:
    cfg = _run_config("stage=sft_then_grpo", "+algo@stage.grpo=gspo")
    assert cfg.stage.grpo.importance_sampling_level == ImportanceSampling.sequence


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["stage.loss_type=bogus"], "expected one of [grpo, dr_grpo, dapo, bnpo, cispo, sapo, luspo, vespo]"),
        (["stage.scale_rewards=std"], "expected one of [group, batch, none]"),
        (["stage.importance_sampling_level=seq"], "expected one of [token, sequence]"),
        (["stage=dpo", "stage.loss_type=dpo"], "expected one of [sigmoid, hinge, ipo,"),
        (["stage=kto", "stage.loss_type=sigmoid"], "expected one of [kto, apo_zero_unpaired]"),
    ],
)
def test_loss_names_fail_at_compose_time_listing_the_valid_ones(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(overrides)
    assert message in str(err.value.__cause__)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["stage.lr_scheduler=cosin"], "stage.lr_scheduler=cosin is not a transformers SchedulerType (did you mean "
                                       "cosine?): use one of linear, cosine,"),
        (["stage=dpo", "stage.optim=adamw_torh"], "stage.optim=adamw_torh is not a transformers OptimizerNames (did "
                                                  "you mean adamw_torch?)"),
        (["++stage.trl.detla=1.5"], "stage.trl.detla: GRPOConfig (TRL installed here) has no field detla. Did you "
                                    "mean delta"),
        (["stage=kto", "++stage.trl.desirable_wieght=2"], "KTOConfig (TRL installed here) has no field "
                                                          "desirable_wieght. Did you mean desirable_weight"),
        (["++stage.trl.beta=0.1"], "stage.trl.beta: set by our key stage.beta; use stage.beta=0.1 instead."),
        (["stage=sft", "++stage.trl.bf16=true"], "stage.trl.bf16: set by our key hw.precision"),
        (["stage=rm", "++stage.trl.per_device_train_batch_size=4"], "set by our key stage.batch_size (global) and "
                                                                    "hw.micro_batch"),
        (["stage=kto", "hw.micro_batch=1"], "stage=kto with a micro-batch of 1 row"),
        (["stage=rm", "eval.every_steps=5"], "a reward model generates no answers to score"),
    ],
)
def test_names_are_checked_before_anything_loads(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _run_config(*overrides)
    assert message in str(err.value)


def test_stage_trl_passes_any_other_field_of_the_stages_trl_config() -> None:
    cfg = _run_config("++stage.trl.delta=1.5", "++stage.trl.top_entropy_quantile=0.2")
    assert cfg.stage.trl == {"delta": 1.5, "top_entropy_quantile": 0.2}
    # group_pref's trainer takes plain TrainingArguments: their fields pass too
    assert _run_config("stage=group_pref", "++stage.trl.dataloader_num_workers=2").stage.trl


def test_stage_trl_keys_on_the_command_line_need_no_plus() -> None:
    argv = ["run.py", "stage.trl.delta=1.5", "stage.grpo.trl.delta=2", "+stage.trl.x=1", "stage.beta=0.1"]
    open_trl_keys(argv)
    assert argv == ["run.py", "++stage.trl.delta=1.5", "++stage.grpo.trl.delta=2", "+stage.trl.x=1", "stage.beta=0.1"]


def test_chain_of_any_length_links_policies_and_resolves_chain_refs(tmp_path: Path) -> None:
    cfg = _run_config("stage=chain", "stage.stages=[sft,rm,grpo]", "+reward.terms.correctness.kwargs.model=chain:rm",
                      f"output_dir={tmp_path}")
    sft, rm, grpo = chain_steps(cfg)
    assert [s.stage.name for s in (sft, rm, grpo)] == ["sft", "rm", "grpo"]
    # the reward model starts from the SFT result, and GRPO from the SFT policy, not from the reward model
    assert rm.init_from == grpo.init_from == str(tmp_path / "1_sft" / "final")
    assert grpo.reward.terms["correctness"].kwargs["model"] == str(tmp_path / "2_rm" / "final")
    # a step that runs before the reward model keeps the reference (it cannot be using it)
    assert sft.reward.terms["correctness"].kwargs["model"] == "chain:rm"


def test_chain_ref_to_a_step_not_in_the_chain_is_refused() -> None:
    cfg = compose_config(["model=tiny", "stage=chain", "stage.stages=[sft,grpo]",
                          "+reward.terms.correctness.kwargs.model=chain:rm"])
    with pytest.raises(ValueError, match=r"chain:rm in step 1 \(sft\): no step named rm in stage.stages=\['sft', "
                                         r"'grpo'\]; refer to one of chain:sft, chain:grpo"):
        to_run_config(cfg)


def test_two_stage_chains_keep_working(tmp_path: Path) -> None:
    for name, second in (("sft_then_grpo", "grpo"), ("sft_then_dpo", "dpo")):
        first, then = chain_steps(_run_config(f"stage={name}", f"output_dir={tmp_path}"))
        assert (first.stage.name, then.stage.name) == ("sft", second)
        assert then.init_from == str(tmp_path / "1_sft" / "final")
