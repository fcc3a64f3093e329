"""The run directory: where each output of a run lives, and the one way files land there (write, then rename).

    outputs/<stage>/<run_id>/
      .hydra/  config.yaml  run.log        what ran (Hydra's record; the typed config the stage used)
      checkpoints/checkpoint-N/           resumable states (complete when checkpoint_complete.json exists)
      tb/  metrics.jsonl  samples/        TensorBoard events, every logged step, completions and held-out answers
      plots/  final/  summary.json        written at the end: a run without final/ and summary.json did not finish
      best/                               the model of the best evaluated step (eval.every_steps > 0), best.json
      eval/  export/  export_best/        written later by python -m pipeline.tools.evaluate / export
      <i>_<stage>/                        a chain's steps, each a run directory of its own

Only rank 0 writes: on other ranks `RunDir.writes` is False and `write_json` / `write_text` do nothing, so
callers need no rank branch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """Yield a path beside `target` to write a file or a folder into; on success it replaces `target` by rename.

    A reader (or a resume) never sees half of it: until the rename, only `<name>.partial` exists, and a failure
    leaves that behind rather than a truncated `target`.
    """
    partial = partial_of(target)
    _remove(partial)
    yield partial
    if partial.is_dir():
        shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)


def partial_of(target: Path) -> Path:
    return target.with_name(target.name + ".partial")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def json_text(payload: Any) -> str:
    return json.dumps(finite(payload), indent=2, sort_keys=True) + "\n"


def finite(value: Any) -> Any:
    # JSON has no NaN/inf; null is honest and parses everywhere.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write to a partial file and rename, so a reader never sees half a summary."""
    with replacing(path) as partial:
        partial.write_text(json_text(payload))


@dataclass(frozen=True)
class RunDir:
    root: Path
    # False on ranks other than 0: their writes are skipped.
    writes: bool = True

    # ---- the layout
    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def best(self) -> Path:
        return self.root / "best"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def tb(self) -> Path:
        return self.root / "tb"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def export(self) -> Path:
        return self.root / "export"

    def export_of(self, which: str) -> Path:
        """export/ for the final model, export_best/ for best/ (python -m pipeline.tools.export which=best)."""
        return self.export if which == "final" else self.root / f"export_{which}"

    def chain_step(self, index: int, stage: str) -> RunDir:
        return RunDir(self.root / f"{index}_{stage}", self.writes)

    def finished(self) -> bool:
        return self.summary.exists() and self.final.is_dir()

    # ---- writing (rank 0 only)
    def write_json(self, path: Path, payload: Any) -> None:
        if self.writes:
            write_json_atomic(path, payload)

    def write_text(self, path: Path, text: str) -> None:
        if self.writes:
            path.parent.mkdir(parents=True, exist_ok=True)
            with replacing(path) as partial:
                partial.write_text(text)
