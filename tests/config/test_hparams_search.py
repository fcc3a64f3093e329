"""conf/hparams_search/: each option composes into an Optuna study whose every searched key exists, with the
direction the objective needs."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline.config.checks import to_run_config
from pipeline.config.schema import register_configs
from tests.helpers.runs import CONF, compose_config

STUDIES = {"grpo_optuna": "grpo", "dpo_optuna": "dpo"}


def _compose(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_every_option_is_tested() -> None:
    assert sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml")) == sorted(STUDIES)


@pytest.mark.parametrize(("option", "stage"), STUDIES.items())
def test_study_composes_with_optuna_and_searches_real_keys(option: str, stage: str) -> None:
    cfg = _compose([f"hparams_search={option}", f"stage={stage}", "model=tiny"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    # accuracy-like objectives: higher is better, and the sweeper's direction follows sweep.mode
    assert sweeper.direction == "maximize"
    assert OmegaConf.select(cfg, "sweep.mode") is None and cfg.eval.every_steps > 0
    for key in sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, f"{option} searches {key}, which the {stage} config lacks"
    # the job's own config validates (every rule) with the study's settings
    run_cfg = to_run_config(compose_config([f"hparams_search={option}", f"stage={stage}", "model=tiny"]))
    assert run_cfg.checkpoint.best_metric.startswith("eval/")


def test_direction_follows_the_mode_and_a_loss_objective() -> None:
    cfg = _compose(["hparams_search=grpo_optuna", "sweep.objective=train_loss"])
    assert cfg.hydra.sweeper.direction == "minimize"
    assert _compose(["hparams_search=grpo_optuna", "sweep.mode=min"]).hydra.sweeper.direction == "minimize"


def test_unknown_sweep_keys_and_modes_are_refused_at_compose_time() -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="objectiv"):
        _compose(["sweep.objectiv=train_loss"])
    with pytest.raises(ConfigCompositionException, match="mode"):
        _compose(["sweep.mode=lowest"])
