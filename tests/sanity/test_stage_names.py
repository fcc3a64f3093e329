"""Stage names: every stage has its option file and runner, and the names are spelled in few files."""

from __future__ import annotations

import ast
import re

from pipeline.config.stage_table import STAGES
from tests.helpers.runs import CONF, REPO


def test_every_stage_has_an_option_file_and_a_runner() -> None:
    options = {f.stem for f in (CONF / "stage").glob("*.yaml")}
    assert options == set(STAGES)
    for spec in STAGES.values():
        module, _, function = spec.runner.partition(":")
        tree = ast.parse((REPO / (module.replace(".", "/") + ".py")).read_text())
        assert function in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, spec.runner


def test_stage_names_are_spelled_in_few_files() -> None:
    # every name in the table, so a new stage is counted without editing this test
    literal = re.compile("[\"'](" + "|".join(STAGES) + ")[\"']")
    # enums.py spells TRL's loss names, two of which ("grpo", "sft") happen to be stage names too
    loss_names = REPO / "pipeline" / "config" / "enums.py"
    files = [f for f in (REPO / "pipeline").rglob("*.py") if f != loss_names and literal.search(f.read_text())]
    assert len(files) <= 3, files
