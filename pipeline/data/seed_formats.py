"""Converters for the formats the seed write-ups use, into the same stage rows as `formats.py`.

    sharegpt          {conversations: [{from: human|gpt|system|function_call|observation, value}], tools?,
                       chosen?/rejected? turn objects}                                 -> sft, dpo
    llamafactory_dpo  {instruction, input?, output: [chosen, rejected]}               -> dpo (sft: chosen)
    gsm8k             {question, answer: "... #### 42"}                               -> grpo (gold 42), sft
    s1k               {question, solution, <thinking trajectory>, <attempt>}          -> grpo (gold: \\boxed{}), sft
    mcq               {question, option_A..option_D, correct_answer: A-D, reasoning}  -> grpo (gold letter), sft
    scored_groups     {prompt, responses: [...], scores: [...]}                       -> group_pref, dpo, sft

Each converter takes (row, view, data) and returns the view's row or raises BadRow (the caller adds where).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pipeline.data.rows as f
from pipeline.config.enums import DataFormat
from pipeline.config.stage_table import RowShape
from pipeline.data.errors import BadRow
from pipeline.data.llamafactory import entry_converter
from pipeline.data.registry import parse_entry
from pipeline.rewards.answer import extract_boxed

if TYPE_CHECKING:
    from pipeline.config.data_schema import DataConfig

LETTERS = ("A", "B", "C", "D")
# speaker -> LLaMA-Factory's default tag
_SHAREGPT_ROLES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt", "system": "system",
                   "function_call": "function_call", "observation": "observation", "tool": "observation"}
_SHAREGPT_ENTRY = parse_entry("sharegpt", {"formatting": "sharegpt", "file_name": "-", "columns": {
    "messages": "conversations", "system": "system", "tools": "tools", "chosen": "chosen", "rejected": "rejected"}},
    Path("."))
# s1K-1.1 ships two teachers' traces; s1K (1.0) a list under thinking_trajectories.
_TRAJECTORIES = ("deepseek_thinking_trajectory", "gemini_thinking_trajectory", "thinking_trajectories")
_ATTEMPTS = ("deepseek_attempt", "gemini_attempt", "attempt")


def _sharegpt(row: dict[str, Any], view: RowShape, data: DataConfig) -> dict[str, Any]:
    """LLaMA-Factory's sharegpt layout with its default columns and tags (role/content turns accepted too):
    multi-turn chats, function_call/observation turns with a tools column, chosen/rejected turn objects."""
    turns = f._value(row, "conversations")
    if not isinstance(turns, list):
        raise f._wrong_type("conversations", f"expected a list of turns, got a {type(turns).__name__}",
                            "use [{from: human|gpt|system, value: text}, ...]")
    normal = []
    for i, turn in enumerate(turns, 1):
        if not isinstance(turn, dict):
            raise f._wrong_type("conversations", f"turn {i} is not an object", "use {from, value} objects")
        speaker, text = turn.get("from", turn.get("role")), turn.get("value", turn.get("content"))
        if speaker not in _SHAREGPT_ROLES:
            raise BadRow("unknown speaker in field 'conversations'", "conversations",
                         f"turn {i} has speaker {speaker!r}", f"use one of {sorted(_SHAREGPT_ROLES)}")
        normal.append({"from": _SHAREGPT_ROLES[speaker], "value": text})
    return entry_converter(_SHAREGPT_ENTRY, view, data)({**row, "conversations": normal})


def _llamafactory_dpo(row: dict[str, Any], view: RowShape, data: DataConfig) -> dict[str, Any]:
    output = f._value(row, "output")
    if not isinstance(output, list) or len(output) != 2 or not all(isinstance(o, str) for o in output):
        raise f._wrong_type("output", "expected [chosen, rejected] (two strings)",
                            "write output as a list of the preferred then the rejected answer")
    pair = {"chosen": f._require_text(output[0], "output", "the chosen answer"),
            "rejected": f._require_text(output[1], "output", "the rejected answer")}
    prompt = f._alpaca_prompt(row, data)
    if view == RowShape.preference:
        return {"prompt": prompt, **{k: [{"role": "assistant", "content": v}] for k, v in pair.items()}}
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": pair["chosen"]}]}


def _gsm8k(row: dict[str, Any], view: RowShape, data: DataConfig) -> dict[str, Any]:
    solution = f._text(row, "answer")
    if "####" not in solution:
        raise BadRow("no '#### answer' in field 'answer'", "answer", "the answer has no '#### <number>' line",
                     "end the answer with '#### <final answer>' (GSM8K style) or use format prompt_answer")
    prompt = f._user_prompt(f._text(row, "question"), row, data)
    if view == RowShape.completion:
        return {"prompt": prompt, "completion": [{"role": "assistant", "content": solution}]}
    return {"prompt": prompt, "answer": solution.rsplit("####", 1)[1].strip()}


def _s1k(row: dict[str, Any], view: RowShape, data: DataConfig) -> dict[str, Any]:
    solution = f._text(row, "solution")
    prompt = f._user_prompt(f._text(row, "question"), row, data)
    if view != RowShape.completion:
        # The solution is a worked proof; its \boxed{} (when present) is what a completion must match.
        return {"prompt": prompt, "answer": extract_boxed(solution) or solution.strip()}
    thinking = _first(row, _TRAJECTORIES)
    attempt = _first(row, _ATTEMPTS) or solution
    text = f"<think>\n{thinking}\n</think>\n\n{attempt}" if thinking else attempt
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": text}]}


def _first(row: dict[str, Any], fields: tuple[str, ...]) -> str | None:
    for name in fields:
        value = row.get(name)
        if isinstance(value, list):
            value = "\n\n".join(str(v) for v in value)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def mcq_prompt_text(row: dict[str, Any]) -> str:
    question = f._text(row, "question")
    options = [f"{x}. {f._text(row, f'option_{x}')}" for x in LETTERS]
    return "\n".join([question, *options])


def _mcq(row: dict[str, Any], view: RowShape, data: DataConfig) -> dict[str, Any]:
    prompt = f._user_prompt(mcq_prompt_text(row), row, data)
    letter = f._text(row, "correct_answer").strip().upper()
    if letter not in LETTERS:
        raise BadRow("correct_answer not A-D", "correct_answer", f"the answer is {letter!r}, not one of A-D",
                     "give the letter of the right option (A, B, C or D), or drop the row")
    extra = {"id": str(row["id"])} if row.get("id") not in (None, "") else {}
    if view != RowShape.completion:
        return {"prompt": prompt, "answer": letter, **extra}
    reasoning = (row.get("reasoning") or "").strip()
    text = f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{letter}\n</answer>" if reasoning else letter
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": text}]}


def ranked_group(row: dict[str, Any]) -> tuple[str, list[str]]:
    """(chosen, rejected): the top-scored response, and those scored strictly lower, best first."""
    responses, scores = f._value(row, "responses"), f._value(row, "scores")
    if not isinstance(responses, list) or not isinstance(scores, list) or len(responses) != len(scores):
        raise f._wrong_type("responses", "responses and scores must be lists of the same length",
                            "give one score per response")
    if not all(isinstance(s, int | float) and not isinstance(s, bool) for s in scores):
        raise f._wrong_type("scores", "scores must be numbers", "use e.g. 1.0 / 0.5 / 0.0")
    texts = [f._require_text(r, "responses", f"response {i}") for i, r in enumerate(responses, 1)]
    ranked = sorted(zip(scores, range(len(texts)), texts, strict=True), key=lambda t: (-t[0], t[1]))
    top = ranked[0][0]
    rejected = [text for score, _, text in ranked if score < top]
    if not rejected:
        raise BadRow("no lower-scored response in group", "scores", "every response has the top score",
                     "give at least one response a lower score, or drop the row")
    return ranked[0][2], rejected


def _scored_groups(row: dict[str, Any], view: RowShape, data: DataConfig) -> dict[str, Any]:
    chosen, rejected = ranked_group(row)
    prompt = f._prompt(row, data)
    if view == RowShape.ranked_group:
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    reply = [{"role": "assistant", "content": chosen}]
    if view == RowShape.preference:
        # One pair per group: the clearest contrast (best vs worst); stage=group_pref uses every response.
        return {"prompt": prompt, "chosen": reply, "rejected": [{"role": "assistant", "content": rejected[-1]}]}
    return {"prompt": prompt, "completion": reply}


CONVERTERS: dict[DataFormat, Callable[[dict[str, Any], RowShape, DataConfig], dict[str, Any]]] = {
    DataFormat.sharegpt: _sharegpt,
    DataFormat.llamafactory_dpo: _llamafactory_dpo,
    DataFormat.gsm8k: _gsm8k,
    DataFormat.s1k: _s1k,
    DataFormat.mcq: _mcq,
    DataFormat.scored_groups: _scored_groups,
}
