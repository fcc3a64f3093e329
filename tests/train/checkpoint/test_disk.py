"""pipeline/train/checkpoint/disk.py without a training run: the space estimate, the early warning, and a failed
write (ENOSPC injected where the Trainer's save would hit it; a permission error) cleaned up into a user error."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest
import torch

from pipeline.config.user_errors import UserError
from pipeline.train.checkpoint import disk
from pipeline.train.checkpoint.disk import (
    MB,
    DiskWriteError,
    checkpoint_bytes,
    checkpoint_writes,
    needed_bytes,
    warn_if_short,
    write_failure,
)
from pipeline.train.checkpoint.resume import mark_complete

FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth", "adapter_model.safetensors")


def checkpoint(run_dir: Path, step: int, complete: bool, size: int = MB) -> Path:
    path = run_dir / "checkpoints" / f"checkpoint-{step}"
    path.mkdir(parents=True)
    for name in FILES:
        (path / name).write_text("{}" if name.endswith(".json") else "x" * (size // len(FILES)))
    if complete:
        mark_complete(path)
    return path


def test_write_failures_are_told_from_other_errors() -> None:
    assert write_failure(OSError(errno.ENOSPC, "No space left on device")) == "full"
    assert write_failure(PermissionError(errno.EACCES, "Permission denied")) == "denied"
    # what torch.save and safetensors raise instead of the OSError
    assert write_failure(RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed "
                                      "writing file data/0: file write failed")) == "full"
    assert write_failure(Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                   'message: "No space left on device" })')) == "full"
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = OSError(errno.EDQUOT, "quota")
    assert write_failure(wrapped) == "full"
    assert write_failure(ValueError("shapes do not match")) is None


def test_enospc_mid_checkpoint_removes_it_keeps_the_previous_and_says_the_numbers(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    checkpoint(tmp_path, 1, complete=True)
    monkeypatch.setattr(disk, "free_bytes", lambda path: 512 * 1024)
    real_save = torch.save

    def save_until_full(obj, f, *args, **kwargs):  # the second file of checkpoint-2 hits a full disk
        if str(f).endswith("optimizer.pt"):
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_full)
    half = tmp_path / "checkpoints" / "checkpoint-2"
    with pytest.raises(DiskWriteError) as raised, checkpoint_writes(tmp_path, estimate=3 * MB):
        half.mkdir()
        torch.save({"w": 1}, half / "rng_state.pth")
        torch.save({"w": 1}, half / "optimizer.pt")
    assert isinstance(raised.value, UserError)
    message = str(raised.value)
    assert "checkpoint-1, is kept" in message and "0.8 MB needed, 0.5 MB free in" in message  # checkpoint-1's size
    assert "resume with resume=auto after freeing space" in message
    assert not half.exists() and (tmp_path / "checkpoints" / "checkpoint-1").is_dir()


def test_no_complete_checkpoint_uses_the_estimate_and_a_half_final_goes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(disk, "free_bytes", lambda path: 0)
    partial = tmp_path / "final.partial"
    with pytest.raises(DiskWriteError, match="no checkpoint was kept. 3.0 MB needed, 0.0 MB free"), \
            checkpoint_writes(tmp_path, estimate=3 * MB, partial=partial):
        partial.mkdir()
        raise OSError(errno.ENOSPC, "No space left on device")
    assert not partial.exists()


def test_permission_denied_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(DiskWriteError, match=f"Fix: make {tmp_path} writable .* resume=auto"), \
            checkpoint_writes(tmp_path, estimate=MB):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "checkpoints"))


def test_other_errors_pass_through(tmp_path: Path) -> None:
    checkpoint(tmp_path, 1, complete=False)
    with pytest.raises(ValueError), checkpoint_writes(tmp_path, estimate=MB):
        raise ValueError("a bug")
    assert (tmp_path / "checkpoints" / "checkpoint-1").is_dir()  # nothing removed for an unrelated error


def test_estimate_counts_adapter_or_all_weights_optimizer_and_tokenizer() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 10))  # 2 x 110 fp32 weights
    assert checkpoint_bytes(model, None) == (220 * 4, 220 * 8)
    model[0].requires_grad_(False)
    model.peft_config = {"default": None}  # PEFT saves only what it trains
    assert checkpoint_bytes(model, None) == (110 * 4, 110 * 8)


def test_needed_space_counts_checkpoints_on_disk_at_once_plus_final() -> None:
    assert needed_bytes(3, 1, save_steps=0, max_steps=10, keep=2) == 3  # no checkpoints: final/ only
    assert needed_bytes(3, 1, save_steps=1, max_steps=10, keep=2) == 3 * 4 + 3  # keep + the one being written
    assert needed_bytes(3, 1, save_steps=5, max_steps=10, keep=0) == 2 * 4 + 3  # keep all: every save


def test_warns_early_with_the_numbers(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(disk, "free_bytes", lambda path: 2 * MB)
    with caplog.at_level(logging.WARNING, logger="pipeline.train.checkpoint.disk"):
        assert warn_if_short(tmp_path, 7 * MB) and not warn_if_short(tmp_path, MB)
    assert f"need about 7 MB, but only 2 MB are free in {tmp_path}" in caplog.text
