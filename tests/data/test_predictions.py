"""Predictions files: row ids and extracted letters in the CSV."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config.enums import DataFormat, OnBadRow
from pipeline.data.loader import load_stage_data
from pipeline.data.predictions import write_predictions
from tests.helpers.data import FORMATS, cfg


def test_predictions_csv_uses_row_ids_and_extracted_letters(tmp_path: Path) -> None:
    data = cfg(FORMATS / "mcq.tsv", on_bad_row=OnBadRow.skip, format=DataFormat.mcq,
               predictions_file="predictions.csv")
    rows = load_stage_data(data, "grpo").train.select(range(3))
    (tmp_path / "samples").mkdir()
    completions = ["<reasoning>x</reasoning><answer>B</answer>", "答案：C", "no idea"]
    (tmp_path / "samples" / "eval_after.jsonl").write_text(
        "".join(json.dumps({"completion": c}) + "\n" for c in completions))
    path = write_predictions(data, tmp_path, rows)
    assert path.read_text().splitlines() == ["id,answer", "q1,B", "q2,C", "q4,"]
