"""A rank that does not write (any rank but 0) joins a model save only for its gathers: nothing of it lands beside
the target. PEFT's save_pretrained creates the adapter's folder on every rank, so a rank saving into
`final.partial` could recreate it after rank 0 renamed it to final/ (CI saw an empty final.partial left behind)."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoTokenizer, Qwen3ForCausalLM, Trainer, TrainingArguments

from pipeline.config.run_dir import RunDir
from pipeline.train.checkpoint.saving import save_model_dir
from tests.helpers.tiny_models import TOKENIZER, tiny_config


def _trainer(tmp_path) -> Trainer:
    torch.manual_seed(0)
    base = Qwen3ForCausalLM(tiny_config(128))
    # as transformers marks a model it sharded while loading (zero=fsdp2): then every rank enters save_pretrained
    base._is_distributed_loading_by_transformers = True
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"]))
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), report_to=[], save_strategy="no")
    return Trainer(model=model, args=args)


def test_a_rank_that_does_not_write_leaves_nothing_beside_the_target(tmp_path, monkeypatch) -> None:
    trainer = _trainer(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setattr(TrainingArguments, "should_save", property(lambda self: False))
    assert save_model_dir(RunDir(run, writes=False), trainer, None, run / "final") == run / "final"
    assert list(run.iterdir()) == []


def test_the_writing_rank_renames_a_complete_folder(tmp_path) -> None:
    trainer = _trainer(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    save_model_dir(RunDir(run), trainer, tokenizer, run / "final", note=("note.json", {"step": 3}))
    assert sorted(p.name for p in run.iterdir()) == ["final"]
    saved = {p.name for p in (run / "final").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "note.json"} <= saved


if __name__ == "__main__":
    pytest.main([__file__])
