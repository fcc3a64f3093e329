"""One finished tiny LoRA run for the tools that write into it (evaluate, export, chat), and one tool run
(GRPO with env=calculator) for serve and chat with tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.runs import train_tiny, train_tiny_tools


@pytest.fixture(scope="package")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("lora"))


@pytest.fixture(scope="package")
def tool_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_tools(tmp_path_factory.mktemp("tool_run"))
