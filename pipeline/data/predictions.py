"""Held-out predictions as a CSV (`id,answer`), the submission file of the MCQ recipe (data.predictions_file).

Built from the greedy completions the held-out evaluation already wrote (samples/eval_after.jsonl), so nothing
is generated twice. Ids come from the rows' `id` column when the data has one, else 1..N in file order;
answers are the extracted option letter for format mcq and the extracted final answer otherwise.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config.enums import DataFormat
from pipeline.config.run_dir import RunDir
from pipeline.rewards.answer import extract_answer
from pipeline.rewards.mcq import extract_letter

if TYPE_CHECKING:
    import datasets

    from pipeline.config.data_schema import DataConfig


def write_predictions(data: DataConfig, run_dir: Path | RunDir, eval_rows: datasets.Dataset | None) -> Path | None:
    """<run>/<data.predictions_file> (written by rank 0 only), or None when not asked for or when there are no
    held-out completions."""
    layout = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    samples = layout.samples / "eval_after.jsonl"
    if not data.predictions_file or eval_rows is None or not samples.exists():
        return None
    extract = extract_letter if DataFormat(data.format) == DataFormat.mcq else extract_answer
    records = [json.loads(line) for line in samples.read_text().splitlines() if line.strip()]
    ids = eval_rows["id"] if "id" in eval_rows.column_names else [str(i) for i in range(1, len(records) + 1)]
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["id", "answer"])
    for row_id, record in zip(ids, records, strict=True):
        writer.writerow([row_id, extract(record["completion"]) or ""])
    path = layout.root / data.predictions_file
    layout.write_text(path, table.getvalue())
    return path
