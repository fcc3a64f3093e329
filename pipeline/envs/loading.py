"""Finding what a config names: a dotted path imported with a message that says the fix, a tool's JSON schema
(the check TRL would make at its first rollout, made before anything loads), `pkg:` paths to shipped files, and the
placeholder rows of environments that write their own prompts. Light: transformers' schema builder imports no torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any


class AgentSpecError(ValueError):
    """A tool or environment that cannot be built; the message names it and the fix."""


def resolve_path(location: str) -> Path:
    """`pkg:NAME/sub/file` -> that file inside installed package NAME (never imported); anything else as a path."""
    if not location.startswith("pkg:"):
        return Path(location).expanduser()
    package, _, sub = location[4:].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AgentSpecError(f"{location}: package {package!r} is not installed")
    return Path(spec.submodule_search_locations[0]) / sub


def import_path(path: str, what: str = "object") -> Any:
    """``pkg.module.name`` (or ``pkg.module.obj.attr``): the longest importable module, then attributes."""
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and (module_name + ".").startswith(e.name + "."):
                continue  # this prefix is not a module: try a shorter one
            raise AgentSpecError(f"{what} {path}: importing {module_name} needs the missing module {e.name!r}. "
                                 f"Fix: install it") from None
        except ImportError as e:
            raise AgentSpecError(f"{what} {path}: importing {module_name} failed: {e}") from None
        try:
            for attribute in parts[split:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            raise AgentSpecError(f"{what} {path}: module {module_name} has no {'.'.join(parts[split:])}. Fix: check "
                                 f"the name (python -c 'import {module_name}; print(dir({module_name}))')") from None
        return obj
    raise AgentSpecError(f"{what} {path}: no module of that path can be imported. Fix: a dotted path "
                         f"'package.module.name' importable from this environment (installed or on PYTHONPATH)")


def check_tool(tool: Callable, label: str) -> dict[str, Any]:
    """The JSON schema TRL will show the model; a tool it cannot be built for is refused with the fix."""
    from transformers.utils import get_json_schema
    from transformers.utils.chat_template_utils import DocstringParsingException, TypeHintParsingException

    try:
        return get_json_schema(tool)
    except TypeHintParsingException as e:
        raise AgentSpecError(f"{label}: {e}. Fix: give every argument a type hint (e.g. `expression: str`)") from None
    except DocstringParsingException as e:
        raise AgentSpecError(f"{label}: {e}. Fix: a Google-style docstring: a summary line, then `Args:` with one "
                             f"`name: description` line per argument") from None


def placeholder_rows(n: int, seed: int = 0, environment: str | list[str] | None = None,
                     system: str | None = None) -> Any:
    """``n`` rows for environments that write their own prompt in ``reset()``: a conversational prompt with an empty
    user message (TRL appends the reset text to it; a plain-text prompt would fail there), a distinct ``seed`` per
    row (reset gets it), and the ``environment`` column when several run at once (a list: the rows cycle through it).
    """
    import datasets

    if n < 1:
        raise ValueError(f"placeholder_rows needs n >= 1, got {n}")
    prompt = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": ""}]
    rows = [{"prompt": prompt, "seed": seed + i} for i in range(n)]
    if environment is not None:
        names = [environment] if isinstance(environment, str) else list(environment)
        rows = [{**row, "environment": names[i % len(names)]} for i, row in enumerate(rows)]
    return datasets.Dataset.from_list(rows)


# games held out by default: +-6 points of sampling error on a success rate near 50%
HELDOUT_GAMES = 64


def training_games(env: Any, seed: int) -> Any:
    """The env.placeholder_rows games an environment that writes its own prompts trains on, one seed each."""
    return placeholder_rows(env.placeholder_rows, seed=seed, environment=sorted(env.environments) or None)


def heldout_games(env: Any, seed: int, limit: int | None = None) -> Any:
    """Held-out games of an environment that writes its own prompts (env.placeholder_rows): the seeds after the
    training rows' seeds, so no game trained on is scored; the same rows in a run and in pipeline.tools.evaluate."""
    return placeholder_rows(limit or HELDOUT_GAMES, seed=seed + env.placeholder_rows,
                            environment=sorted(env.environments) or None)
