"""Entry point: compose the config with Hydra, validate it, run the chosen stage.

    python pipeline/run.py                                   # embedded default: GRPO + LoRA, SmolLM2, CPU
    python pipeline/run.py stage=sft model=tiny max_steps=3  # any group option, any key
    python pipeline/run.py --cfg job                         # print the composed config, load nothing
"""

import sys
from pathlib import Path

# Running this file puts pipeline/ itself on sys.path, where our module names (evaluate, data...) would shadow
# installed packages of the same name; the repo root is what belongs there.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pipeline.config.argv import strip_launcher_args  # noqa: E402
from pipeline.config.schema import register_configs  # noqa: E402
from pipeline.config.secrets import refuse_secret_overrides  # noqa: E402
from pipeline.launch.launcher import dispatch, rank_argv  # noqa: E402

strip_launcher_args(sys.argv)
refuse_secret_overrides(sys.argv)
rank_argv(sys.argv)
register_configs()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # Cross-field checks run here, before torch is imported; the stages import it.
    from hydra.core.hydra_config import HydraConfig

    from pipeline.config.checks import to_run_config
    from pipeline.launch.sweep import refused_in_sweep

    # Hydra's runtime dir is output_dir for a single run and the job's own subdir in a --multirun sweep.
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        run_cfg = to_run_config(cfg)
    except ValueError as err:
        if refused_in_sweep(err, run_dir):  # a sweep records the refusal and goes on to its next job
            return
        raise
    # A dry run prints and stops; a multi-process profile started plainly re-launches through its launcher.
    if dispatch(cfg, run_cfg, list(hydra_cfg.overrides.task), run_dir):
        return
    from pipeline.train.stages import run_stage

    run_stage(run_cfg, run_dir)


if __name__ == "__main__":
    main()
