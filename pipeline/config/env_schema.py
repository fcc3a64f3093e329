"""Schema of the `env` group: the tools and environments GRPO's rollouts may call (conf/env/, none by default).

TRL's GRPOTrainer runs the multi-turn loop itself (`tools=`, `environment_factory=`); this config only says what it
is given and under which limits (pipeline/envs/registry.py builds it, pipeline/envs/limits.py enforces the limits).
`stage.tools` (GRPO) adds your own tools by dotted path on top of the group's. Light: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from pipeline.config.frozen import Schema


@dataclass
class EnvConfig(Schema):
    # Label in run summaries; `none` gives no tools and no environment (single-turn GRPO).
    name: str = MISSING
    # Tools offered in every rollout: a built-in name (calculator, python, search), a dotted path
    # `pkg.module.function` (type hints + Google-style docstring: TRL builds the tool's JSON schema from them), or
    # {name: <built-in>, <option>: ...} (python: timeout_s, memory_mb; search: corpus, k) or {_target_: <factory>, ...}.
    tools: list[Any] = field(default_factory=list)
    # A class TRL makes one instance of per rollout: reset(**row) starts an episode (its text joins the prompt),
    # public methods are tools, get_reward() scores the episode. A built-in name (guess_number), a dotted path, or
    # {_target_: path, <kwarg>: ...}; null = tools only.
    environment: Any = None
    # Several environments in one run, each row picking one by its `environment` column: {name: <as environment>}.
    environments: dict[str, Any] = field(default_factory=dict)
    # Seconds one tool call may take; past it the model reads a timeout error and the call counts as a timeout.
    timeout_s: float | None = 10.0
    # Tokens of one tool result the model reads; longer results are cut, and the cut is said in the result.
    max_tool_output_tokens: int | None = 512
    # Where a call runs: thread (default; a hung call is abandoned at its limit) or process (killed at its limit;
    # module-level functions only, their arguments and result are pickled).
    isolation: str = "thread"
    # Address-space cap of a tool's process in MB (isolation=process only); null = none.
    memory_mb: int | None = None
    # Tool calls one episode may make, over all its turns (several calls in one turn count one each); further calls
    # answer that the limit is reached. Plain tools then run as methods of a per-rollout environment. null = none.
    max_calls_per_episode: int | None = None
    # Assistant turns that call tools, per episode (TRL's max_tool_calling_iterations); null = until
    # stage.max_completion_length runs out.
    max_tool_calling_iterations: int | None = 4
    # The environment writes its own prompt in reset(): train on this many placeholder rows (a seed each, passed to
    # reset) instead of the data group's rows; null = the data rows are the prompts.
    placeholder_rows: int | None = None

    @property
    def active(self) -> bool:
        """Whether the run gives TRL any tool or environment."""
        return bool(self.tools or self.environment is not None or self.environments)
