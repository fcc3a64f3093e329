"""Typed schema of the data group (data=...): one training source, a registry entry, or a mix of sources; held-out
rows, formats, column renames, prompts, bad-row policy. Part of pipeline/config/schema.py's RunConfig."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING, DictConfig

from pipeline.config.enums import DataFormat, OnBadRow, TrainOn
from pipeline.config.frozen import Schema


@dataclass
class ArithmeticConfig(Schema):
    # Built-in data set: "What is a + b?" problems generated from `seed`; eval problems never appear in train.
    # Training problems: the default job sees ~120 of them (30 steps x 4 prompts).
    num_train: int = 2000
    # Held-out problems for accuracy before/after (+-5 points of sampling error at 100).
    num_eval: int = 100
    # Operators drawn uniformly: any of + - *; addition learns fastest on CPU, "-" makes a harder mix.
    ops: list[str] = field(default_factory=lambda: ["+"])
    low: int = 10
    high: int = 99
    # The second operand's range; null = low / high (e.g. 100..999 x 10..99 for the calculator recipe).
    low_b: int | None = None
    high_b: int | None = None
    # SFT rows become calculator tool-use demonstrations: the assistant calls calculate("a op b"), reads the result
    # and answers with it (trained on every assistant turn); held-out rows and the other stages' rows are unchanged.
    tool_demos: bool = False
    seed: int = 1234


@dataclass
class GuessNumberDemoConfig(Schema):
    # builtin:guess_number: SFT demonstrations of the guess_number game (pipeline/envs/guess_number.py) played by
    # bisection against the game itself, so each reads exactly as a rollout that found the number (rules from
    # reset(), the game's own replies as tool turns). The range and guesses should be the env's (the recipe
    # interpolates them from env.environment).
    num_train: int = 128
    low: int = 1
    high: int = 100
    max_guesses: int = 7
    seed: int = 1234


@dataclass
class MixSourceConfig(Schema):
    # Exactly one: a local file or hub name (as data.path), or an entry of data.dataset_dir/dataset_info.json.
    path: str | None = None
    dataset: str | None = None
    # Rows taken: weight x the source's rows (0.5 = a seeded half, 2 = every row twice), or exactly num_samples;
    # neither = every row once (a registry entry's own num_samples when it has one).
    weight: float | None = None
    num_samples: int | None = None
    # For `path`: hub split/subset and column renames, as data.split / data.subset / data.columns.
    split: str = "train"
    subset: str | None = None
    columns: dict[str, str] = field(default_factory=lambda: DictConfig({}, flags={"struct": False}))


@dataclass
class DataConfig(Schema):
    name: str = MISSING
    # "builtin:arithmetic" / "builtin:guess_number" (generated in code), a local .json/.jsonl/.csv file, or a
    # `datasets` hub name (unused with `dataset`).
    path: str = MISSING
    # LLaMA-Factory registry: entries of <dataset_dir>/dataset_info.json, comma-separated ("a,b"); several are
    # interleaved with the seed. Set, it replaces path/format/columns.
    dataset: str | None = None
    dataset_dir: str = "data"
    # Several sources of any kind in one training set, interleaved with the seed; set, it replaces path/dataset:
    # [{path: a.jsonl, weight: 0.5}, {dataset: identity, num_samples: 100}, {path: org/set, split: train}].
    mix: list[MixSourceConfig] = field(default_factory=list)
    # Hub config name (e.g. "main" for gsm8k).
    subset: str | None = None
    split: str = "train"
    # Held-out data: a separate file/hub split, else `eval_size` rows split off the training data.
    eval_path: str | None = None
    eval_split: str | None = None
    eval_size: int = 0
    format: DataFormat = DataFormat.auto
    # Rename source columns to the ones the format expects, e.g. {question: prompt}. Not a struct node, so that
    # `data.columns={question: prompt}` on the command line can add names Hydra's struct mode would refuse.
    columns: dict[str, str] = field(default_factory=lambda: DictConfig({}, flags={"struct": False}))
    # Prepended as a system turn to every prompt; null keeps the chat template's own default.
    system_prompt: str | None = None
    # Python format string applied to the prompt text, e.g. "{prompt}\nAnswer with just the number.".
    prompt_template: str = "{prompt}"
    # SFT on multi-turn chats: loss on every assistant reply, or on the last one only (the others are context).
    train_on: TrainOn = TrainOn.all_assistant
    # Use only the first N training rows (smoke tests, quick looks).
    limit: int | None = None
    # error: stop after reading the whole source, listing its first 20 bad rows (file:line, field, fix) and the
    # count of the rest; skip: drop bad rows and report how many per reason.
    on_bad_row: OnBadRow = OnBadRow.error
    # Text encoding of local files (utf-8 accepts a BOM); e.g. latin-1, cp1252, utf-16, gb18030.
    encoding: str = "utf-8"
    # For a .json file that is one object holding the rows under a key ({"data": [...]}): that key.
    json_key: str | None = None
    arithmetic: ArithmeticConfig = field(default_factory=ArithmeticConfig)
    guess_number: GuessNumberDemoConfig = field(default_factory=GuessNumberDemoConfig)
    # Example turns ([{role, content}, ...]) put between the system prompt and each question (one-shot prompts).
    few_shot: list[dict[str, str]] = field(default_factory=list)
    # File name in the run dir for held-out predictions as CSV (id,answer; MCQ letters); null = none.
    predictions_file: str | None = None
