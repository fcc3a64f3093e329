"""Entry point: compose the config with Hydra, resolve it into a run plan, launch or run the planned stage.

    python pipeline/run.py                                   # embedded default: GRPO + LoRA, SmolLM2, CPU
    python pipeline/run.py stage=sft model=tiny max_steps=3  # any group option, any key
    python pipeline/run.py --cfg job                         # print the composed config, load nothing
    python pipeline/run.py hparams_search=grpo_optuna        # an Optuna study over lr, beta, num_generations
"""

import sys
from pathlib import Path

# Running this file puts pipeline/ itself on sys.path, where our module names (evaluate, data...) would shadow
# installed packages of the same name; the repo root is what belongs there.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pipeline.config.argv import fix_up_argv  # noqa: E402
from pipeline.config.logs import apply_log_level  # noqa: E402
from pipeline.config.option_names import fill_option_names  # noqa: E402
from pipeline.config.plan import RunPlan, plan_run  # noqa: E402
from pipeline.config.schema import register_configs  # noqa: E402
from pipeline.config.unused_libraries import hide_unused_libraries  # noqa: E402
from pipeline.config.user_errors import RUN_HINT, reported  # noqa: E402
from pipeline.launch.launcher import dispatch  # noqa: E402
from pipeline.launch.sweep import in_sweep, name_job, refused_in_sweep, run_job  # noqa: E402


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()  # its runtime dir: output_dir for a single run, the job's subdir in a sweep
    with reported(debug=str(cfg.logging.level).lower() == "debug", hint=RUN_HINT):  # caught here, before Hydra
        fill_option_names(cfg, hydra_cfg.runtime.choices)  # a user's option file may leave name: ???
        name_job(cfg, hydra_cfg)  # a sweep's job: a run id of its own
        try:
            plan = plan_run(cfg, Path(hydra_cfg.runtime.output_dir))  # checks every rule before torch is imported
        except ValueError as err:
            if refused_in_sweep(err, Path(hydra_cfg.runtime.output_dir)):  # the sweep records it, goes on
                return None
            raise
        apply_log_level(plan.cfg.logging)
        return run_job(plan, lambda: run(cfg, plan, list(hydra_cfg.overrides.task)))  # a sweep: its objective


def run(cfg: DictConfig, plan: RunPlan, overrides: list[str]) -> None:
    # A dry run prints and stops; a multi-process profile started plainly re-launches through its launcher.
    if not dispatch(cfg, plan, overrides):
        hide_unused_libraries(plan, sweep=in_sweep())  # before TRL: no deepspeed/bitsandbytes a run does not use
        # a missing file or a bad row fails now, not after torch and TRL have loaded (a game writes its own rows)
        if not plan.steps and plan.cfg.env.placeholder_rows is None:
            from pipeline.data.early import load_early

            load_early(plan.cfg.data, plan.cfg.stage.name, plan.cfg.seed)
        from pipeline.train.stages import run_stage  # why: torch and TRL load only when a stage really runs
        run_stage(plan)


if __name__ == "__main__":
    # refused overrides and compose errors (unknown option, typo'd key) come before main's body: reported here
    with reported(sys.argv, hint=RUN_HINT):
        fix_up_argv(sys.argv)
        register_configs()
        main()
