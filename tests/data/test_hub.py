"""The hub branch of the sources: a local folder stands in for a hub repository (never the network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.config.enums import DataFormat
from pipeline.data.errors import DataError
from pipeline.data.loader import load_stage_data
from tests.helpers.data import DATA, cfg, user


def prompts(ds: Any) -> list[str]:
    return [r["prompt"][-1]["content"] for r in ds]


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)


@pytest.mark.usefixtures("offline_hub")
def test_hub_branch_reads_splits_renames_and_locates_rows() -> None:
    hub = str(DATA / "hub_dir")
    data = cfg(hub, columns={"question": "prompt"}, eval_split="test", system_prompt="S")
    out = load_stage_data(data, "grpo")
    assert prompts(out.train) == ["q1", "q2", "q3"] and out.train[0]["answer"] == "1"
    assert out.eval_prompts.to_list() == [
        {"prompt": [{"role": "system", "content": "S"}, *user("t1")], "answer": "10"}
    ]
    with pytest.raises(DataError) as err:  # without the rename, rows have no prompt
        load_stage_data(cfg(hub, format=DataFormat.prompt_answer), "grpo")
    assert str(err.value).startswith(f"{hub}[train]: 3 bad rows; the first 3:\n  {hub}[train] row 1: field 'prompt': "
                                     "the field is missing")


@pytest.mark.usefixtures("offline_hub")
@pytest.mark.parametrize(
    "path, split, message",
    [
        (str(DATA / "hub_dir"), "nope", "[nope]: field 'path': cannot load it (Unknown split \"nope\""),
        ("nobody/no_such_dataset", "train", "nobody/no_such_dataset[train]: field 'path': cannot load it ("),
    ],
)
def test_hub_load_failures(path: str, split: str, message: str) -> None:
    with pytest.raises(DataError) as err:
        load_stage_data(cfg(path, split=split), "grpo")
    assert message in str(err.value) and "Fix: check data.path" in str(err.value)
