"""model.chat_template: a .jinja file or the name of a template shipped in pipeline/assets/chat_templates/.

Light (paths only): validation resolves the name before anything loads; the tokenizer code reads the file.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "chat_templates"


def shipped_templates() -> list[str]:
    return sorted(p.stem for p in SHIPPED.glob("*.jinja"))


def chat_template_path(value: str) -> Path:
    """The template file `value` names; ValueError naming the shipped templates when there is none."""
    shipped = SHIPPED / f"{value}.jinja"
    if shipped.is_file():
        return shipped
    path = Path(value).expanduser()
    if path.is_file():
        return path
    raise ValueError(f"model.chat_template={value}: neither a file nor a shipped template. Fix: give a .jinja file "
                     f"or one of {', '.join(shipped_templates())}.")


def template_problems(value: str | None, kwargs: dict) -> list[str]:
    problems = []
    if value:
        try:
            chat_template_path(value)
        except ValueError as e:
            problems.append(str(e))
    bad = [k for k in kwargs if not str(k).isidentifier()]
    if bad:
        problems.append(f"model.chat_template_kwargs: {bad} are not template variable names. Fix: use names like "
                        "enable_thinking.")
    return problems
