"""The reward registry (name -> function, plus term kinds built from their fields), the checks of a term's fields,
and completion text.

Reward modules register themselves here; `pipeline.rewards` imports them all, so look names up through the
package. Free of torch/transformers/trl: config validation checks reward names before anything heavy loads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.config.user_errors import UserError

RewardFunc = Callable[..., list[float | None]]

REWARDS: dict[str, RewardFunc] = {}


class UnknownRewardError(UserError, KeyError, ValueError):
    """Raised for a reward name that is not registered."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and wrap it in quotes.
        return str(self.args[0]) if self.args else ""


def register_reward(name: str) -> Callable[[RewardFunc], RewardFunc]:
    """Decorator that registers a reward function under ``name``; duplicate names raise ValueError."""

    def decorator(fn: RewardFunc) -> RewardFunc:
        if name in REWARDS or name in KINDS:
            owner = REWARDS[name].__module__ if name in REWARDS else "a term kind"
            raise ValueError(f"reward {name!r} is already registered (by {owner})")
        REWARDS[name] = fn
        return fn

    return decorator


def reward_names() -> list[str]:
    """Names of all registered rewards and term kinds, sorted."""
    return sorted([*REWARDS, *KINDS])


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


# ---- kinds: terms built from their own fields (an HTTP judge, a reward model) rather than a plain function ------


@dataclass(frozen=True)
class TermKind:
    """A term kind: `build(term_name, term)` returns the scoring callable; `check(term_name, term)` returns the
    problems of its fields (run by config validation before anything loads); `fields` are the kind-only term
    fields it reads and `required` those it cannot do without."""

    build: Callable[[str, Any], RewardFunc]
    check: Callable[[str, Any], list[str]]
    fields: tuple[str, ...]
    required: tuple[str, ...]
    example: str


KINDS: dict[str, TermKind] = {}
# Term fields that only a kind reads; on any other term they would be silently ignored, so they are refused.
KIND_FIELDS = ("model", "url", "api_key_env", "prompt", "score_regex", "max_score", "timeout_s", "max_concurrency",
               "retries", "batch_size", "max_length")


def register_kind(name: str, kind: TermKind) -> None:
    if name in REWARDS or name in KINDS:
        raise ValueError(f"reward {name!r} is already registered")
    KINDS[name] = kind


def term_function(term_name: str, term: Any) -> str:
    """The reward a term names: its _target_, else its function, else the term's own key."""
    return term_field(term, "_target_", None) or term_field(term, "function", None) or term_name


def term_problems(term_name: str, term: Any, produced: frozenset[str] = frozenset()) -> list[str]:
    """What is wrong with a term's kind-only fields (a judge without url, a url on a plain function), each with the
    override that fixes it; the reward name itself is checked by get_reward. `produced`: directories an earlier step
    of the same chain will write (a `chain:rm` reward model), taken as present."""
    function = term_function(term_name, term)
    kind = KINDS.get(function)
    used = kind.fields if kind else ()
    stray = [f for f in KIND_FIELDS if f not in used and term_field(term, f, None) is not None]
    problems = [
        f"reward.terms.{term_name}.{f} is not read by reward {function!r} (only by "
        f"{', '.join(k for k, v in sorted(KINDS.items()) if f in v.fields)} terms): remove it, or set "
        f"reward.terms.{term_name}.function to that kind." for f in stray
    ]
    if kind is None:
        return problems
    missing = [f for f in kind.required if not term_field(term, f, None)]
    if missing:
        return [*problems, f"reward.terms.{term_name} ({function}) needs {' and '.join(missing)}: "
                           f"{kind.example.format(term=term_name)}"]
    if term_field(term, "model", None) in produced:
        return problems  # written by an earlier chain step; the loader names a bad directory when it runs
    return [*problems, *kind.check(term_name, term)]


def term_field(term: Any, field: str, default: Any) -> Any:
    """A field of a term: RewardTermConfig dataclasses after Hydra's structured merge, or plain mappings (tests,
    untyped configs); a missing or null field is ``default``."""
    value = term.get(field, default) if isinstance(term, Mapping) else getattr(term, field, default)
    return default if value is None else value
