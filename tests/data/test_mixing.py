"""data.mix: local files, hub folders and registry entries in one training set, each source's format detected on
its own, its share taken (weight x rows or num_samples), interleaved reproducibly, rows per source reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.checks import ConfigError, to_run_config
from pipeline.config.data_schema import DataConfig, MixSourceConfig
from pipeline.data.errors import DataError
from pipeline.data.loader import load_stage_data
from tests.helpers.data import DATA
from tests.helpers.data import LLAMAFACTORY as LF
from tests.helpers.runs import compose_config


def mix(*sources: MixSourceConfig, **kw) -> DataConfig:
    return DataConfig(name="mix", path="mix", mix=list(sources), dataset_dir=str(LF), **kw)


def texts(rows) -> list[str]:
    return [r["completion"][0]["content"] for r in rows]


def test_files_of_different_formats_and_registry_entries_mix() -> None:
    data = mix(MixSourceConfig(path=str(DATA / "alpaca.json")),  # alpaca, 3 rows
               MixSourceConfig(path=str(DATA / "messages.jsonl"), weight=2),  # messages, 3 rows -> 6
               MixSourceConfig(dataset="identity", num_samples=2))  # registry entry, 3 rows -> 2
    out = load_stage_data(data, "sft", seed=0)
    assert out.sources == {str(DATA / "alpaca.json"): 3, str(DATA / "messages.jsonl"): 6, "identity": 2}
    assert len(out.train) == 11
    assert [t for t in texts(out.train) if t in ("chat", "hi", "1 2")] == ["chat", "hi", "1 2"]  # order kept
    assert texts(out.train) == texts(load_stage_data(data, "sft", seed=0).train)  # reproducible
    assert texts(out.train) != texts(load_stage_data(data, "sft", seed=3).train)  # the seed interleaves


def test_weight_below_one_takes_a_seeded_share() -> None:
    data = mix(MixSourceConfig(dataset="alpaca_en_demo", weight=0.5), MixSourceConfig(dataset="folder_set"))
    out = load_stage_data(data, "sft", seed=0)
    # folder_set's own num_samples (3) applies when the mix gives none
    assert out.sources == {"alpaca_en_demo": 2, "folder_set": 3}


def test_hub_folder_with_renames_mixes_for_grpo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    data = mix(MixSourceConfig(path=str(DATA / "hub_dir"), columns={"question": "prompt"}),
               MixSourceConfig(dataset="qa_answers"), eval_size=2)
    out = load_stage_data(data, "grpo", seed=0)
    assert out.sources == {str(DATA / "hub_dir"): 3, "qa_answers": 4}
    assert len(out.train) == 5 and len(out.eval_prompts) == 2


def test_a_bad_row_in_one_source_names_that_source(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "q", "output": "a"}\n{"instruction": "q"}\n')
    with pytest.raises(DataError, match=f"^{bad}:2: field 'output'"):
        load_stage_data(mix(MixSourceConfig(dataset="identity"), MixSourceConfig(path=str(bad))), "sft")


def test_mix_is_validated_before_loading() -> None:
    overrides = ["model=tiny", "stage=dpo", "data=mix", f"data.dataset_dir={LF}",
                 "data.mix=[{path: a.jsonl, dataset: identity, weight: 2, num_samples: 3}, {weight: 0}, "
                 "{dataset: dpo_alpaca}, {dataset: openai_chat}]"]
    with pytest.raises(ConfigError) as err:
        to_run_config(compose_config(overrides))
    problems = str(err.value).splitlines()[1:]
    assert problems == [
        "  - data.mix[1]: give exactly one of path (a file or hub name) and dataset (a registry entry).",
        "  - data.mix[1]: give weight or num_samples, not both.",
        "  - data.mix[2]: give exactly one of path (a file or hub name) and dataset (a registry entry).",
        "  - data.mix[2]: weight=0.0 takes no rows; use a positive multiplier (1 = all).",
        *[p for p in problems if "entry 'identity'" in p or "entry 'openai_chat'" in p],
    ]
    assert len(problems) == 6 and not any("dpo_alpaca" in p for p in problems)
