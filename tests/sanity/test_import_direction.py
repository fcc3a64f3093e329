"""Import direction: pipeline.config (what a run is) imports nothing of training, launching or the tools."""

from __future__ import annotations

import ast

from tests.helpers.runs import REPO


def test_config_imports_no_training_launching_or_tools() -> None:
    for file in (REPO / "pipeline" / "config").glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("pipeline.train", "pipeline.launch", "pipeline.tools")), file
