"""Schemas of the `logging` group: trackers, completions shown, and the training-health warnings' thresholds.

Light (no torch): imported by `run.py` before anything heavy, through pipeline.config.schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config.frozen import Schema


@dataclass
class HealthConfig(Schema):
    """When a training signal looks unhealthy (the failure modes of axolotl's training-stability guide: RL, SFT,
    preference pairs), one warning line naming the metric, its value and the usual fix, once per run, and `health/*`
    scalars (pipeline/train/observe/health.py, health_supervised.py)."""

    # false: no warnings and no health/* scalars.
    enabled: bool = True
    # Mean token entropy (`entropy`) below this: the policy has collapsed onto a few tokens and stops exploring.
    entropy_min: float = 0.05
    # KL to the reference (`kl`, logged when stage.beta > 0) above this: the policy is running away from it.
    kl_max: float = 1.0
    # Share of tokens whose ratio was clipped (`clip_ratio/region_mean`) above this: steps too large for the clip.
    clip_ratio_max: float = 0.2
    # Share of completions cut at stage.max_completion_length (`completions/clipped_ratio`) above this for
    # truncated_steps logged steps in a row (a base model rambles for its first steps, then learns to stop).
    truncated_max: float = 0.5
    truncated_steps: int = 5
    # Held-out accuracy (`eval/accuracy`, needs eval.every_steps) this far below its best while the training
    # reward is above what it was then: the reward is being gamed.
    accuracy_drop: float = 0.05
    # A reward term whose batch std (`rewards/<term>/std`) is 0 for this many logged steps in a row never varies.
    constant_term_steps: int = 5
    # ---- SFT and every stage without rewards
    # The mean loss of the last loss_window logged steps not loss_min_drop (a fraction) below the first window's.
    loss_window: int = 10
    loss_min_drop: float = 0.01
    # grad_norm above grad_spike_factor x the median of the logged steps before it (from grad_spike_after steps on).
    grad_spike_factor: float = 10.0
    grad_spike_after: int = 5
    # Eval loss this fraction above its best while the training loss is below what it was then: overfitting.
    eval_rise: float = 0.05
    # ---- preference pairs (DPO, ORPO, SimPO)
    # rewards/margins below half its best, once the best passed this.
    margin_min: float = 0.1
    # logps/chosen this many nats below its first logged value: the chosen answers get less likely too.
    displacement_nats: float = 5.0
    # rewards/accuracies within chance_band of 0.5 for chance_steps logged steps in a row.
    chance_band: float = 0.05
    chance_steps: int = 10


@dataclass
class LoggingConfig(Schema):
    # Trackers for TRL's report_to: tensorboard always (event files in the run dir), wandb opt-in.
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    # Python log level of the root logger and the pipeline's own messages: DEBUG, INFO, WARNING, ERROR.
    level: str = "INFO"
    wandb_project: str = "pipeline"
    # online | offline: offline writes to the run dir only; the key comes from WANDB_API_KEY, never config.
    wandb_mode: str = "offline"
    # Every N optimizer steps, generated completions (prompt, completion, each reward) go to TensorBoard as text
    # and to <run>/samples/completions.jsonl; 0 turns it off.
    samples_every: int = 5
    # Completions shown per sample event (the first ones of the latest generation batch).
    samples_shown: int = 4
    # Training-health warnings and health/* scalars (every stage; the signs by stage family): thresholds above.
    health: HealthConfig = field(default_factory=HealthConfig)
