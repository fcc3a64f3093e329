"""Built-in SFT demonstrations of the guess_number game: each row is one game played by bisection against the
game itself (pipeline/envs/guess_number.py), so a row reads exactly as a GRPO rollout that found the number: the
prompt is the rules reset() writes into the placeholder row's empty user message, every move a `guess` call whose
tool turn is the game's own reply, then a one-line answer. SmolLM2-135M never calls the tool on its own (GRPO's
rewards are then all 0 and nothing is learned): these rows are the warm start of
experiment=guess_number_sft_then_grpo_smol.
"""

from __future__ import annotations

import json
import random
from typing import Any

from pipeline.config.data_schema import GuessNumberDemoConfig
from pipeline.config.stage_table import RowShape, Stage
from pipeline.data.errors import DataError

SOURCE = "builtin:guess_number"


def game_demo_rows(cfg: GuessNumberDemoConfig, stage: Stage) -> list[dict[str, Any]]:
    """`cfg.num_train` demonstrations, secrets drawn from `cfg.seed`; SFT rows only (GRPO plays the game)."""
    if stage.rows != RowShape.completion:
        raise DataError(SOURCE, f"stage {stage.name} cannot train on game demonstrations",
                        "use it for stage=sft (a GRPO step plays the game itself: env=guess_number)", "path")
    if cfg.num_train < 1:
        raise DataError(SOURCE, f"guess_number.num_train={cfg.num_train} makes no rows", "set it to 1 or more",
                        "guess_number.num_train")
    from transformers.utils import get_json_schema

    from pipeline.envs.guess_number import GuessNumber

    game = GuessNumber(low=cfg.low, high=cfg.high, max_guesses=cfg.max_guesses)
    # the schema GRPO's rollouts render for the environment's tool (TRL reads it off the bound method)
    tools = json.dumps([get_json_schema(game.guess)])
    rng = random.Random(cfg.seed)
    return [{"prompt": [{"role": "user", "content": game.reset(seed=rng.getrandbits(32))}], "tools": tools,
             "completion": bisection(game)} for _ in range(cfg.num_train)]


def bisection(game: Any) -> list[dict[str, Any]]:
    """The assistant and tool turns of one game played by halving [low, high] after each hint: the middle of the
    range the game's last reply states. A move is the call alone (no text before it): the first token of a reply
    then is the one the template's tool prompt already makes likely, where a text line had to be learned first."""
    low, high, turns = game.low, game.high, []
    while not game.solved and len(game.guesses) < game.max_guesses:
        number = (low + high) // 2
        call = {"type": "function", "function": {"name": "guess", "arguments": {"number": number}}}
        reply = game.guess(number)
        turns += [{"role": "assistant", "content": "", "tool_calls": [call]},
                  {"role": "tool", "name": "guess", "content": reply}]
        low, high = (number + 1, high) if reply.startswith("higher") else (low, number - 1)
    said = f"The number is {game.guesses[-1]}." if game.solved else "I did not find the number."
    return turns + [{"role": "assistant", "content": said}]
