"""`python pipeline/run.py --help`: Hydra's help template (conf/config.yaml: hydra.help.template) filled by the
`pipeline_help` resolver with the config groups a user picks from and a few common commands.

Hydra's own `$APP_CONFIG_GROUPS` lists ConfigStore's schema nodes (base_model, base_hw, ...) as if they were
options; here the options are the YAML files of conf/<group>/, which is what `group=option` selects.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf"
# stage_data is chosen for the user (`${stage}_${data}`): listed as a note, not as something to pick
AUTOMATIC = {"stage_data": "picked for you: the stage's tuned values for the data set, when a file exists"}
COMMANDS = (
    ("python pipeline/run.py", "the embedded default: GRPO + LoRA on SmolLM2-135M, arithmetic, CPU"),
    ("python pipeline/run.py stage=sft model=tiny max_steps=3", "any group option, any key (a 3-step smoke run)"),
    ("python pipeline/run.py experiment=gsm8k_grpo_smol", "a published recipe (conf/experiment/)"),
    ("python pipeline/run.py resume=auto output_dir=RUN", "continue a stopped run from its last complete checkpoint"),
    ("python pipeline/run.py dry_run=true hw=single_4090", "the composed plan, launch command and memory estimate"),
    ("python pipeline/run.py --cfg job", "every key of the composed config, with its value"),
    ("python -m pipeline.tools.chat RUN", "talk to a trained model (also: evaluate, serve, export)"),
)


def group_options(conf: Path = CONF) -> dict[str, list[str]]:
    """{group: its option names}, from conf/<group>/*.yaml (Hydra's own groups excluded)."""
    return {d.name: sorted(p.stem for p in d.glob("*.yaml"))
            for d in sorted(conf.iterdir()) if d.is_dir() and d.name != "hydra"}


def help_text(conf: Path = CONF) -> str:
    width = max(len(c) for c, _ in COMMANDS)
    lines = ["python pipeline/run.py [group=option ...] [key=value ...]", "",
             "Post-training (SFT, DPO, KTO, ORPO, SimPO, reward models, GRPO) over TRL, one Hydra config per run.",
             "", "== Config groups (group=option) =="]
    for group, names in group_options(conf).items():
        lines.append(f"{group}: {AUTOMATIC[group]}" if group in AUTOMATIC else f"{group}: {', '.join(names)}")
    lines += ["", "== Common commands =="]
    lines += [f"  {command.ljust(width)}  # {what}" for command, what in COMMANDS]
    lines += ["", "Any key: group.key=value (stage.learning_rate=1e-4). `--cfg job` shows them all; "
              "`--hydra-help` shows Hydra's own flags.", ""]
    return "\n".join(lines)


def register_help() -> None:
    # replace=True: tests and sweeps call register_configs() more than once per process
    OmegaConf.register_new_resolver("pipeline_help", lambda: help_text(), replace=True)
