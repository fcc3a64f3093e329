"""Read-only configs: once the run plan is resolved, nothing downstream may change a config value.

Hydra and OmegaConf need the schema dataclasses writable while they compose and convert, so the schemas are not
`frozen=True`; they derive from `Schema`, whose instances refuse assignment after `freeze` has walked them. Lists
become tuples and dicts `FrozenDict`s (still a dict for json and isinstance checks).
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any


class FrozenConfigError(AttributeError):
    """Something tried to change the config or the plan after they were resolved."""


def _refuse(what: str) -> FrozenConfigError:
    return FrozenConfigError(
        f"{what}: the run config is read-only once the run plan is resolved. Fix: derive a new value in "
        "pipeline/config/plan.py (or dataclasses.replace a copy) instead of changing the config in place."
    )


class Schema:
    """Base of every schema dataclass: writable while built, read-only after `freeze`."""

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_frozen"):
            raise _refuse(f"{type(self).__name__}.{name} = {value!r}")
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        if self.__dict__.get("_frozen"):
            raise _refuse(f"del {type(self).__name__}.{name}")
        super().__delattr__(name)


class FrozenDict(dict):
    """A dict that refuses changes (deep copies and pickles still work: they rebuild from a plain dict)."""

    def _refused(self, *args: Any, **kwargs: Any) -> None:
        raise _refuse(f"changing {dict(self)!r}")

    __setitem__ = __delitem__ = __ior__ = _refused  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _refused  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))


def freeze(value: Any) -> Any:
    """`value` made read-only in place (dataclasses) or as a read-only copy (lists, dicts); returns it."""
    if is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            object.__setattr__(value, f.name, freeze(getattr(value, f.name)))
        if isinstance(value, Schema):
            object.__setattr__(value, "_frozen", True)
        return value
    if isinstance(value, dict):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thawed(value: Any) -> Any:
    """A writable deep copy with plain lists and dicts (what OmegaConf and YAML writers accept)."""
    if is_dataclass(value) and not isinstance(value, type):
        return type(value)(**{f.name: thawed(getattr(value, f.name)) for f in fields(value) if f.init})
    if isinstance(value, dict):
        return {k: thawed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thawed(v) for v in value]
    return value
