"""pipeline/config/user_errors.py, option_names.py and help.py without a subprocess: which errors are the user's,
the block they print, the exit code, and the option name a group file may leave out."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from pipeline.config.checks import ConfigError
from pipeline.config.help import help_text
from pipeline.config.option_names import fill_option_names
from pipeline.config.schema import RewardConfig
from pipeline.config.stage_table import UnknownStageError
from pipeline.config.user_errors import EXIT_CODE, TRACEBACK_ENV, UserError, block, is_user_error, reported
from pipeline.data.errors import DataError
from tests.helpers.runs import compose_config


@pytest.fixture
def plain_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # reported() writes both variables into os.environ: monkeypatch restores them after the test
    monkeypatch.setenv(TRACEBACK_ENV, "0")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")


def test_our_error_types_are_user_errors_and_bugs_are_not() -> None:
    assert all(issubclass(t, UserError) for t in (ConfigError, DataError, UnknownStageError))
    assert is_user_error(ConfigError("x")) and is_user_error(SystemExit("unknown option"))
    assert is_user_error(ConfigCompositionException("x"))
    assert not is_user_error(SystemExit(143)) and not is_user_error(KeyError("x"))
    assert not is_user_error(AttributeError("x"))


def test_block_is_what_where_fix_with_the_rest_indented() -> None:
    text = block(ConfigError("invalid config:\n  - stage.x: bad. Fix: stage.x=1"), "hint")
    assert text == "error: invalid config:\n    - stage.x: bad. Fix: stage.x=1\n  (hint)\n"
    # KeyError subclasses keep their message unquoted
    assert block(UnknownStageError("stage.name=x: unknown")).startswith("error: stage.name=x: unknown\n")


def test_unknown_option_lists_options_not_schema_nodes() -> None:
    err = MissingConfigException("Could not find 'model/bogus'", "model/bogus", ["base_model", "tiny", "qwen3"])
    assert block(err).startswith("error: model=bogus: no such option (no conf/model/bogus.yaml). Fix: one of tiny, "
                                 "qwen3")


def test_missing_value_names_the_key_and_the_override() -> None:
    with pytest.raises(MissingMandatoryValue) as raised:
        OmegaConf.to_object(OmegaConf.create({"reward": OmegaConf.structured(RewardConfig)}))
    assert "reward.name=VALUE" in block(raised.value)


def test_reported_exits_2_with_the_block_or_re_raises(plain_env, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped, reported(hint="h"):
        raise DataError("d.jsonl:2", "bad row", "mend it")
    assert stopped.value.code == EXIT_CODE
    assert capsys.readouterr().err == "error: d.jsonl:2: bad row. Fix: mend it\n  (h)\n"
    with pytest.raises(ZeroDivisionError), reported():  # a bug keeps its traceback
        raise ZeroDivisionError
    with pytest.raises(ConfigError), reported(debug=True):  # logging.level=debug
        raise ConfigError("x")


def test_traceback_choice_is_the_first_process_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # the user's own
    with pytest.raises(ConfigError), reported():
        raise ConfigError("x")
    monkeypatch.delenv(TRACEBACK_ENV)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    with pytest.raises(ConfigError), reported(["stage=sft", "logging.level=debug"]):
        raise ConfigError("x")


def test_option_name_comes_from_the_choice() -> None:
    cfg = compose_config(["model=tiny"])
    cfg.reward.name = "???"
    fill_option_names(cfg, {"reward": "mine", "model": "tiny", "hydra/help": "default", "algo": None})
    assert cfg.reward.name == "mine" and cfg.model.name == "tiny"


def test_help_lists_options_and_commands_not_schema_nodes() -> None:
    text = help_text()
    assert "model: " in text and "tiny" in text and "stage: " in text and "python -m pipeline.tools.chat" in text
    assert "base_" not in text and "$" not in text  # Hydra fills $NAMES in the template: none of ours may clash
