"""The `env` group and `stage.tools` (pipeline/config/env_schema.py, env_checks.py): every option composes and
validates, and each wrong combination fails before anything loads, naming the field and the fix."""

from __future__ import annotations

import pytest

from pipeline.config.checks import ConfigError, to_run_config
from tests.helpers.runs import CONF, compose_config

OPTIONS = sorted(p.stem for p in (CONF / "env").glob("*.yaml"))
# what each option needs besides itself
NEEDS: dict[str, list[str]] = {}




@pytest.mark.parametrize("option", OPTIONS)
def test_every_env_option_composes_and_validates(option: str) -> None:
    cfg = to_run_config(compose_config([f"env={option}", *NEEDS.get(option, [])]))
    assert cfg.env.name == option
    assert cfg.env.active == (option != "none")
    if option == "guess_number":  # the game scores itself: the option picks reward=environment
        assert list(cfg.reward.terms) == ["environment"]


def test_the_default_run_has_no_tools() -> None:
    cfg = to_run_config(compose_config([]))
    assert cfg.env.name == "none" and not cfg.env.active and list(cfg.stage.tools) == []


@pytest.fixture()
def tool_module(tmp_path, monkeypatch):
    (tmp_path / "my_tools.py").write_text('''
def lookup(word: str) -> str:
    """Look a word up.

    Args:
        word: The word.
    """
    return word


def untyped(word):
    """Look a word up.

    Args:
        word: The word.
    """
    return word


def undocumented(word: str) -> str:
    return word
''')
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_tools"


def test_a_typed_documented_dotted_path_is_accepted(tool_module: str) -> None:
    cfg = to_run_config(compose_config([f"stage.tools=[{tool_module}.lookup]"]))
    assert list(cfg.stage.tools) == [f"{tool_module}.lookup"]


@pytest.mark.parametrize(("tool", "message"), [
    ("my_tools.nope", "module my_tools has no nope"),
    ("no_such_package.tools.fn", "no module of that path can be imported"),
    ("my_tools.untyped", "missing a type hint"),
    ("my_tools.undocumented", "Google-style docstring"),
    ("calculatr", "unknown tool 'calculatr'"),
])
def test_a_bad_tool_fails_naming_the_field_and_the_fix(tool_module: str, tool: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        to_run_config(compose_config([f"stage.tools=[{tool}]"]))
    text = str(err.value)
    assert "stage.tools" in text and message in text and "Fix:" in text


@pytest.mark.parametrize(("overrides", "message"), [
    (["env=calculator", "stage=sft"], "run inside GRPO's rollouts only. Fix: env=none"),
    (["env=guess_number", "reward=correctness"], "has no term to count it. Fix: reward=environment"),
    (["reward=environment", "env=calculator"], "env=calculator has no environment with get_reward()"),
    (["env=calculator", "env.placeholder_rows=8"], "without an environment"),
    (["env=calculator", "env.timeout_s=0"], "env.timeout_s=0.0: use a positive number"),
    (["env=calculator", "env.memory_mb=256"], "env.memory_mb needs env.isolation=process"),
    (["env=search", "env.tools=[{name: search, corpus: /nowhere.jsonl}]"], "is not a file"),
    (["env=python", "env.tools=[{name: python, timeout: 3}]"], "python tool: got an unexpected keyword"),
    (["env=calculator", "model.chat_template=chatml"], "the template renders no tools or tool calls"),
    (["env=calculator", "+stage.trl.max_tool_calling_iterations=2"], "env.max_tool_calling_iterations"),
])
def test_bad_combinations_fail_before_anything_loads(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match="invalid config") as err:
        to_run_config(compose_config(overrides))
    assert message in str(err.value)


def test_a_chain_runs_its_sft_step_without_tools() -> None:
    from pipeline.config.derived import chain_steps

    cfg = to_run_config(compose_config(["stage=sft_then_grpo", "env=calculator"]))
    sft, grpo = chain_steps(cfg)
    assert sft.env.name == "none" and grpo.env.name == "calculator"
