"""The stage table: the only list of training stages and everything the rest of the code asks about one.

Adding a stage = one entry here, one stage file in pipeline/train/stages/, one option file in conf/stage/.
Looking a name up (`stage_spec`) fails for an unknown name; nothing falls back to a default stage.
Light on purpose (no torch): validation, the launcher and the dry run read it before anything heavy loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pipeline.config.enums import DataFormat
from pipeline.config.stage_schemas import (
    ChainStageConfig,
    DistillStageConfig,
    DPOStageConfig,
    GroupPrefStageConfig,
    GRPOStageConfig,
    KTOStageConfig,
    ORPOStageConfig,
    RLOOStageConfig,
    RMStageConfig,
    SFTStageConfig,
    SimPOStageConfig,
)
from pipeline.config.user_errors import UserError


class RowShape(str, Enum):
    """The columns of one training row as the stage's trainer takes it (data converters produce these)."""

    completion = "completion"  # prompt + completion (SFT)
    preference = "preference"  # prompt + chosen + rejected (DPO)
    answer = "answer"  # prompt + answer; the answer goes to the rewards (GRPO) and the held-out accuracy
    ranked_group = "ranked_group"  # prompt + chosen + rejected[] (group preference)
    labeled = "labeled"  # prompt + completion + label (bool: desirable or not; KTO's unpaired preference)


@dataclass(frozen=True)
class Stage:
    name: str
    # Schema of the `stage` group node; option files start with `defaults: [<option_base>]`.
    schema: type
    # "module:function" run as function(plan); imported only when the stage runs (it pulls in torch and TRL).
    runner: str
    # Data formats it trains on, in auto-detection order.
    formats: tuple[DataFormat, ...] = ()
    rows: RowShape | None = None
    # Columns a local file's first row must have when the format is detected (unless an accepted format fits).
    columns: frozenset[str] = frozenset()
    # Trains on reward.terms (and needs at least one).
    rewards: bool = False
    # The stage key that bounds a training sequence's tokens, and the prompt tokens assumed on top of it.
    length_key: str = "max_length"
    assumed_prompt_tokens: int = 0
    # Training rows over the length key are counted (or dropped) before training. Not for GRPO, whose rows are
    # prompts (the key bounds what it generates), nor group_pref, which cuts and reports its own.
    checks_row_length: bool = True
    # The Trainer counts input tokens (GRPO's batches hold no input_ids: it counts its own).
    counts_tokens: bool = True
    # Sequences per row in one forward pass (DPO: chosen and rejected together) and whether it samples
    # completions while training (GRPO: the KV cache of a rank's share): the memory estimate reads both.
    sequences_per_row: int = 1
    generates: bool = False
    # Runs tools and environments (env group, stage.tools) in its rollouts: GRPO only (TRL's RLOOTrainer has no
    # multi-turn loop).
    tools: bool = False
    # Its trainer can compute the training loss on held-out rows of the training shape (eval.every_steps logs
    # eval/loss, and checkpoint.best_metric falls back to it when the data has no answers).
    evaluates_loss: bool = False
    # May run as a step of a chain (`stage.stages`); a chain entry runs other stages instead of training.
    chainable: bool = False
    chain: bool = False
    # The TRL config dataclass ("module:Class") its trainer takes: `stage.trl.<field>` is checked against its
    # fields (read from the installed source, pipeline/config/trl_fields.py); None for stages with no TRL config.
    trl_config: str | None = None
    # Trains a generating policy (causal LM). False: a reward model (sequence classification head), which has no
    # held-out generation accuracy and is not the init_from of the next step of a chain.
    policy: bool = True

    @property
    def option_base(self) -> str:
        return "base_chain" if self.chain else f"base_{self.name}"


_SFT_FORMATS = (
    DataFormat.messages, DataFormat.sharegpt, DataFormat.alpaca, DataFormat.mcq, DataFormat.s1k, DataFormat.gsm8k,
    DataFormat.scored_groups, DataFormat.prompt_completion, DataFormat.prompt_answer, DataFormat.llamafactory_dpo,
)
_CHAIN_RUNNER = "pipeline.train.stages.chain:run_chain"
_PAIRS = (DataFormat.preference, DataFormat.llamafactory_dpo, DataFormat.scored_groups, DataFormat.sharegpt)
_PAIR_COLUMNS = frozenset({"prompt", "chosen", "rejected"})
_PROMPTS = (DataFormat.prompt_answer, DataFormat.mcq, DataFormat.s1k, DataFormat.gsm8k)  # GRPO, RLOO, distill
_PROMPT_COLUMNS = frozenset({"prompt", "answer"})

STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("sft", SFTStageConfig, "pipeline.train.stages.sft:run_sft", _SFT_FORMATS, RowShape.completion,
          evaluates_loss=True, chainable=True, trl_config="trl.trainer.sft_config:SFTConfig"),
    Stage("dpo", DPOStageConfig, "pipeline.train.stages.dpo:run_dpo", _PAIRS, RowShape.preference,
          columns=_PAIR_COLUMNS, sequences_per_row=2, evaluates_loss=True, chainable=True,
          trl_config="trl.trainer.dpo_config:DPOConfig"),
    Stage("grpo", GRPOStageConfig, "pipeline.train.stages.grpo:run_grpo", _PROMPTS, RowShape.answer,
          columns=_PROMPT_COLUMNS, rewards=True, length_key="max_completion_length",
          assumed_prompt_tokens=256, checks_row_length=False, counts_tokens=False, generates=True, chainable=True,
          tools=True, trl_config="trl.trainer.grpo_config:GRPOConfig"),
    Stage("rloo", RLOOStageConfig, "pipeline.train.stages.rloo:run_rloo", _PROMPTS, RowShape.answer,
          columns=_PROMPT_COLUMNS, rewards=True, length_key="max_completion_length", assumed_prompt_tokens=256,
          checks_row_length=False, counts_tokens=False, generates=True, chainable=True,
          trl_config="trl.trainer.rloo_config:RLOOConfig"),
    # on-policy distillation: GRPO's prompts, a frozen teacher's next-token distributions instead of rewards
    Stage("distill", DistillStageConfig, "pipeline.train.stages.distill:run_distill", _PROMPTS, RowShape.answer,
          columns=_PROMPT_COLUMNS, length_key="max_completion_length", assumed_prompt_tokens=256,
          checks_row_length=False, counts_tokens=False, generates=True, chainable=True,
          trl_config="trl.trainer.distillation_config:DistillationConfig"),
    Stage("group_pref", GroupPrefStageConfig, "pipeline.train.stages.group_pref:run_group_pref",
          (DataFormat.scored_groups,), RowShape.ranked_group, columns=frozenset({"prompt", "responses", "scores"}),
          checks_row_length=False, trl_config="transformers.training_args:TrainingArguments"),
    Stage("kto", KTOStageConfig, "pipeline.train.stages.kto:run_kto", (DataFormat.unpaired,), RowShape.labeled,
          columns=frozenset({"prompt", "completion", "label"}), chainable=True,
          trl_config="trl.trainer.kto_config:KTOConfig"),
    Stage("orpo", ORPOStageConfig, "pipeline.train.stages.orpo:run_orpo", _PAIRS, RowShape.preference,
          columns=_PAIR_COLUMNS, sequences_per_row=2, chainable=True,
          trl_config="trl.experimental.orpo.orpo_config:ORPOConfig"),
    Stage("simpo", SimPOStageConfig, "pipeline.train.stages.simpo:run_simpo", _PAIRS, RowShape.preference,
          columns=_PAIR_COLUMNS, sequences_per_row=2, chainable=True,
          trl_config="trl.experimental.cpo.cpo_config:CPOConfig"),
    Stage("rm", RMStageConfig, "pipeline.train.stages.rm:run_rm", _PAIRS, RowShape.preference,
          columns=_PAIR_COLUMNS, sequences_per_row=2, chainable=True, policy=False,
          trl_config="trl.trainer.reward_config:RewardConfig"),
    Stage("sft_then_grpo", ChainStageConfig, _CHAIN_RUNNER, chain=True),
    Stage("sft_then_dpo", ChainStageConfig, _CHAIN_RUNNER, chain=True),
    # any sequence of chainable stages: stage=chain stage.stages=[sft,rm,grpo]
    Stage("chain", ChainStageConfig, _CHAIN_RUNNER, chain=True),
)}
CHAINABLE = tuple(name for name, s in STAGES.items() if s.chainable)


class UnknownStageError(UserError, KeyError, ValueError):
    def __str__(self) -> str:
        return str(self.args[0])


def stage_spec(name: str) -> Stage:
    """The table entry of stage `name`; UnknownStageError names the known ones."""
    try:
        return STAGES[name]
    except KeyError:
        raise UnknownStageError(f"stage.name={name} is not one of {', '.join(STAGES)}.") from None


def stage_schemas() -> dict[str, type]:
    """ConfigStore entries of the `stage` group: option base name -> schema."""
    return {s.option_base: s.schema for s in STAGES.values()}
