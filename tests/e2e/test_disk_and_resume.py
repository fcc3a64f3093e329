"""A full disk and a changed recipe through pipeline/run.py: the run dir on a real 6 MB filesystem (tmpfs; needs
root) fails at its second checkpoint with the numbers and the fix, keeps the first, and `resume=auto` continues from
it once there is room; a resume whose config differs from the checkpoint's lists the differences and refuses unless
resume.allow_changes=true, which says what applies -- and learning_rate really does not."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.runs import TINY, run_pipeline

SFT = [*TINY, "stage=sft", "stage.save_steps=1"]


def run(tmp: Path, run_dir: Path, *args: str, cache: Path) -> subprocess.CompletedProcess:
    return run_pipeline([*SFT, *args, f"output_dir={run_dir}", f"paths.cache_dir={cache}"], cwd=tmp,
                        timeout=300)


def learning_rates(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["learning_rate"] for r in rows if "learning_rate" in r}


@pytest.fixture
def small_fs(tmp_path: Path):
    """A real 6 MB filesystem: one tiny LoRA checkpoint (~3.9 MB, mostly tokenizer.json) fits, a second does not."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 6 MB tmpfs needs root (the permission and ENOSPC paths are unit-tested in "
                    "tests/train/checkpoint/test_disk.py)")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_keeps_the_last_complete_checkpoint_and_resumes(small_fs: Path, tmp_path: Path,
                                                                   model_cache: Path) -> None:
    run_dir = small_fs / "run"
    proc = run(tmp_path, run_dir, "max_steps=3", cache=model_cache)
    err = proc.stderr
    assert proc.returncode == 2 and "Traceback" not in err, err[-3000:]
    assert f"the disk holding {run_dir} is full" in err and "the last complete checkpoint, checkpoint-1, is kept" in err
    assert " MB needed, " in err and f"MB free in {run_dir}; resume with resume=auto after freeing space" in err
    # warned before training, with the numbers
    assert "need about" in proc.stdout + err and "MB are free in" in proc.stdout + err
    found = sorted(p.name for p in (run_dir / "checkpoints").glob("checkpoint-*"))
    assert found == ["checkpoint-1"] and (run_dir / "checkpoints/checkpoint-1/checkpoint_complete.json").is_file()
    # Room again (tmpfs grows in place); a half-written checkpoint-2 as a killed write leaves it is never picked.
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_fs)], check=True)
    half = run_dir / "checkpoints" / "checkpoint-2"
    half.mkdir()
    (half / "trainer_state.json").write_text("{}")
    done = run(tmp_path, run_dir, "max_steps=3", "resume=auto", cache=model_cache)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr + done.stdout and "checkpoint-1 (step 1)" in done.stderr + done.stdout
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 3


def test_resume_with_changed_values_lists_them_and_refuses_unless_allowed(tmp_path: Path, model_cache: Path) -> None:
    run_dir = tmp_path / "run"
    first = run(tmp_path, run_dir, "max_steps=2", cache=model_cache)
    assert first.returncode == 0, first.stderr[-3000:]
    old_lr = learning_rates(run_dir)[2]
    changed = ["max_steps=4", "resume=auto", "stage.learning_rate=0.5"]
    refused = run(tmp_path, run_dir, *changed, cache=model_cache)
    err = refused.stderr
    assert refused.returncode == 2 and "Traceback" not in err, err[-3000:]
    assert "2 value(s) differ" in err and "max_steps: 2 -> 4" in err and "stage.learning_rate: " in err
    assert "-> 0.5" in err and "resume.allow_changes=true" in err
    assert not (run_dir / "checkpoints" / "checkpoint-3").exists()
    allowed = run(tmp_path, run_dir, *changed, "resume.allow_changes=true", cache=model_cache)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    said = allowed.stdout + allowed.stderr
    applies, overridden = said.split("takes effect from the resumed step:")[1].split("does NOT take effect")
    assert "max_steps: 2 -> 4" in applies and "stage.learning_rate" in overridden.split("\n[")[0]
    # what the message says: steps 3 and 4 train on the checkpoint's learning rate, never 0.5
    rates = learning_rates(run_dir)
    assert sorted(rates) == [1, 2, 3, 4] and all(rates[s] <= old_lr for s in (3, 4))
