"""Functions the shipped task YAMLs name (`!function utils.<name>`); lm-eval imports this file by its path."""

from __future__ import annotations

from pipeline.rewards.answer import is_correct


def score_heldout(doc: dict, results: list[str]) -> dict[str, float]:
    # The stage's own answer check, so the harness score is the held-out accuracy, not a regex's reading of it.
    return {"acc": float(bool(is_correct(results[0], str(doc["answer"]))))}
