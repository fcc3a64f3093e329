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

from pipeline.argv import strip_launcher_args  # noqa: E402
from pipeline.config import register_configs  # noqa: E402

strip_launcher_args(sys.argv)
register_configs()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # Cross-field checks run here, before torch is imported; the stages import it.
    from pipeline.validation import to_run_config

    run_cfg = to_run_config(cfg)
    from hydra.core.hydra_config import HydraConfig

    from pipeline.stages import run_stage

    # Hydra's runtime dir is output_dir for a single run and the job's own subdir in a --multirun sweep.
    run_stage(run_cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
