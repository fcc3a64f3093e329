"""A generation lever's weight copies are made only where they fit (pipeline/train/levers/host_memory.py): packed
Linear copies and the LoRA merge's copies are skipped, and said once, where they would take more than half the
memory available; generation then runs on the plain layers, the same tokens."""

from __future__ import annotations

import pytest
import torch

from pipeline.train.levers import host_memory
from pipeline.train.levers.merged_lora import merged_lora
from pipeline.train.levers.packed_linears import packable, packed_linears, packing_available
from tests.helpers.tiny_models import tiny_lora_model


def test_this_machine_reports_its_available_memory() -> None:
    assert 2**20 < host_memory.available_memory() < 2**50  # bytes from /proc/meminfo


@pytest.mark.skipif(not packing_available(), reason="this torch build has no oneDNN packed linear")
def test_copies_over_half_the_available_memory_are_not_made(monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    model = tiny_lora_model().eval()
    weights = sum(m.weight.nbytes for m in model.modules() if packable(m))
    ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        tokens = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False)
    monkeypatch.setattr(host_memory, "available_memory", lambda: weights)  # the copies would take ~all of it
    for lever in ("hw.packed_linears", "LoRA merge"):  # said once per process: as if never said
        monkeypatch.setitem(host_memory.reached, f"{lever}: memory", 0)
    base = [m.get_base_layer().weight for m in model.modules() if hasattr(m, "get_base_layer")]
    originals = [w.data_ptr() for w in base]
    with caplog.at_level("INFO", logger=host_memory.__name__), torch.no_grad(), merged_lora(model), \
            packed_linears(model):
        assert not any("forward" in m.__dict__ for m in model.modules())  # nothing packed
        assert [w.data_ptr() for w in base] == originals  # nothing merged into a copy
        kept = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False)
    assert torch.equal(kept, tokens)
    said = [r.message for r in caplog.records if "skipped" in r.message]
    assert len(said) == 2 and "hw.packed_linears" in said[1] and "LoRA merge" in said[0]
    monkeypatch.setattr(host_memory, "available_memory", lambda: 4 * weights)
    with torch.no_grad(), merged_lora(model), packed_linears(model):
        assert any("forward" in m.__dict__ for m in model.modules())
        assert [w.data_ptr() for w in base] != originals
