"""pass@k and maj@k on hand-made groups; eval settings checked at compose time."""

from __future__ import annotations

import pytest

from pipeline.config.checks import ConfigError, to_run_config
from pipeline.train.observe.pass_at_k import maj_at_k, pass_at_k
from tests.helpers.runs import compose_config


def test_pass_and_majority_at_k_on_hand_made_groups() -> None:
    golds = ["4", "7", "10"]
    sampled = [
        ["4", "5", "5"],  # one right: pass, but the majority (5) is wrong
        ["7", "7.0", "3"],  # 7 and 7.0 are one vote: majority right
        ["no answer", "2", "x"],  # nothing right
    ]
    assert pass_at_k(sampled, golds) == pytest.approx(2 / 3)
    assert maj_at_k(sampled, golds) == pytest.approx(1 / 3)
    # a tie goes to the answer seen first; completions without an answer do not vote
    assert maj_at_k([["1", "2", "none"]], ["1"]) == 1.0 and maj_at_k([["2", "1"]], ["1"]) == 0.0
    assert maj_at_k([["none", "none"]], ["1"]) == 0.0
    # pass@k >= maj@k always, and with k=1 both equal the single sample's accuracy
    assert pass_at_k([["4"], ["1"]], ["4", "2"]) == maj_at_k([["4"], ["1"]], ["4", "2"]) == 0.5
    assert pass_at_k([], []) == maj_at_k([], []) == 0.0


def test_eval_settings_are_checked_at_compose_time() -> None:
    cfg = compose_config(["model=tiny", "eval.every_steps=-1", "eval.limit=0", "checkpoint.best_mode=up"])
    with pytest.raises(ConfigError) as err:
        to_run_config(cfg)
    message = str(err.value)
    assert "eval.every_steps=-1" in message and "eval.limit=0" in message and "checkpoint.best_mode=up" in message


def test_eval_heldout_false_measures_nothing_and_says_so(tmp_path, caplog) -> None:
    import datasets

    from pipeline.config.plan import plan_run
    from pipeline.train.observe.heldout import stage_accuracy

    problems = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": "1+1?"}], "answer": "2"}])
    plan = plan_run(compose_config(["model=tiny", "eval.heldout=false"]), tmp_path)
    with caplog.at_level("INFO", logger="pipeline.train.observe.heldout"):
        # no model is touched: a None model would fail at the first forward pass
        assert stage_accuracy(plan, None, None, problems, "before") is None
        assert stage_accuracy(plan, None, None, problems, "after") is None
    assert caplog.text.count("held-out accuracy: not measured (eval.heldout=false") == 1
