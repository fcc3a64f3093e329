"""The reward registry (name -> function), the builder that binds config terms, and completion text.

Reward modules register themselves here; `pipeline.rewards` imports them all, so look names up through the
package. Free of torch/transformers/trl: config validation checks reward names before anything heavy loads.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

RewardFunc = Callable[..., list[float | None]]

REWARDS: dict[str, RewardFunc] = {}


class UnknownRewardError(KeyError, ValueError):
    """Raised for a reward name that is not registered."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and wrap it in quotes.
        return str(self.args[0]) if self.args else ""


def register_reward(name: str) -> Callable[[RewardFunc], RewardFunc]:
    """Decorator that registers a reward function under ``name``; duplicate names raise ValueError."""

    def decorator(fn: RewardFunc) -> RewardFunc:
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is already registered (by {REWARDS[name].__module__})")
        REWARDS[name] = fn
        return fn

    return decorator


def reward_names() -> list[str]:
    """Names of all registered rewards, sorted."""
    return sorted(REWARDS)


def get_reward(name: str) -> RewardFunc:
    """The registered reward ``name`` (or a dotted path pkg.module.fn); UnknownRewardError otherwise."""
    if "." in name:
        return _import_reward(name)
    try:
        return REWARDS[name]
    except KeyError:
        known = ", ".join(reward_names())
        raise UnknownRewardError(
            f"unknown reward {name!r}; known rewards: {known}. "
            "Set reward.terms.<term>.function to one of them."
        ) from None


def _import_reward(path: str) -> RewardFunc:
    """A user's reward function by dotted path; it receives completions plus every data column as kwargs."""
    import importlib

    module_name, _, attr = path.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise UnknownRewardError(
            f"reward {path!r} cannot be imported ({e}). Give a dotted path module.function importable from the "
            "directory you run in (or an installed package), or a registered name: " + ", ".join(reward_names())
        ) from None
    if not callable(fn):
        raise UnknownRewardError(f"reward {path!r} is a {type(fn).__name__}, not a function")
    return fn


def completion_text(completion: Any) -> str:
    """Text of one completion, either a plain string or a conversation (list of message dicts)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return _content_text(completion.get("content"))
    if not completion:
        return ""
    return completion_text(completion[-1])


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # Multimodal chat messages carry a list of typed parts; only the text parts matter here.
    return "".join(part.get("text", "") for part in content if part.get("type", "text") == "text")


def build_reward_funcs(terms: Mapping[str, Any]) -> tuple[list[RewardFunc], list[float]]:
    """One bound reward function per term (named after the term) and the matching weights."""
    funcs: list[RewardFunc] = []
    weights: list[float] = []
    for term_name, term in terms.items():
        function = _term_field(term, "_target_", None) or _term_field(term, "function", None) or term_name
        fn = get_reward(function)
        bound = dict(_term_field(term, "kwargs", None) or {})
        _check_kwargs(term_name, function, fn, bound)
        funcs.append(_bind(term_name, fn, bound))
        weights.append(float(_term_field(term, "weight", 1.0)))
    return funcs, weights


def score_completions(funcs: list[RewardFunc], weights: list[float], prompts: list[Any], texts: list[str],
                      columns: Mapping[str, list[Any]]) -> tuple[dict[str, list[float | None]], list[float]]:
    """(per term scores, weighted totals) of completion texts, calling each bound term as TRL's GRPOTrainer does:
    conversational completions (one assistant turn), the prompts, and every data column as keyword arguments.
    A None score (a term that does not apply) counts 0 in the total, as in TRL's nansum."""
    turns = [[{"role": "assistant", "content": text}] for text in texts]
    per_term = {fn.__name__: list(fn(prompts=prompts, completions=turns, **columns)) for fn in funcs}
    totals = [sum(w * (scores[i] or 0.0) for w, scores in zip(weights, per_term.values(), strict=True))
              for i in range(len(texts))]
    return per_term, totals


def _term_field(term: Any, field: str, default: Any) -> Any:
    # Terms are RewardTermConfig dataclasses after Hydra's structured merge, but plain mappings
    # (tests, untyped configs) are accepted too.
    if isinstance(term, Mapping):
        return term.get(field, default)
    return getattr(term, field, default)


def _check_kwargs(term_name: str, function: str, fn: RewardFunc, bound: dict[str, Any]) -> None:
    # Reward functions swallow unknown kwargs (TRL passes every dataset column), so a typo in a
    # config kwarg would otherwise be silently ignored.
    params = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "completions"
    ]
    unknown = sorted(set(bound) - set(params))
    if unknown:
        raise ValueError(
            f"reward.terms.{term_name}.kwargs: reward {function!r} has no parameter(s) "
            f"{', '.join(unknown)}; it accepts: {', '.join(params) or '(none)'}"
        )


def _bind(term_name: str, fn: RewardFunc, bound: dict[str, Any]) -> RewardFunc:
    def reward(*args: Any, **kwargs: Any) -> list[float | None]:
        # Config-bound kwargs win over a dataset column that happens to share the name.
        return fn(*args, **{**kwargs, **bound})

    reward.__name__ = term_name
    reward.__qualname__ = term_name
    return reward
