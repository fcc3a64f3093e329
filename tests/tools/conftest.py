"""One finished tiny LoRA run for the tools that write into it (evaluate, export, chat)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.runs import train_tiny


@pytest.fixture(scope="package")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("lora"))
