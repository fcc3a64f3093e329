"""The tools' `key=value` arguments, typed by a {key: type} table; a bad one ends the command naming the fix."""

from __future__ import annotations

from collections.abc import Callable


def flag(value: str) -> bool:
    """true/false, as Hydra writes booleans."""
    if value not in ("true", "false"):
        raise ValueError(value)
    return value == "true"


def on_off(value: str) -> bool:
    """on/off (true/false too), for switches such as tools=off."""
    if value not in ("on", "off", "true", "false"):
        raise ValueError(value)
    return value in ("on", "true")


def parse_options(pairs: list[str], options: dict[str, Callable[[str], object]]) -> dict[str, object]:
    opts: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in options:
            raise SystemExit(f"unknown option {pair!r}: use key=value with key one of {', '.join(options)}.")
        try:
            opts[key] = options[key](value)
        except ValueError:
            named = {flag: "true or false", on_off: "on or off"}
            kind = named.get(options[key]) or getattr(options[key], "__name__", "a valid value")
            raise SystemExit(f"{key}={value!r}: expected {kind}.") from None
    return opts
