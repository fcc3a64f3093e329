"""Bad input, all at once: every bad row of a file in one report, files that are not UTF-8, a JSON object that
holds its rows under a key. Each error names the file, the place and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config.data_schema import DataConfig
from pipeline.config.enums import OnBadRow
from pipeline.data.errors import SHOWN_BAD_ROWS, BadRowsError, DataError
from pipeline.data.loader import load_stage_data
from pipeline.data.sources import peek_columns

GOOD = {"prompt": "What is 1 + 1?", "answer": "2"}


def cfg(path: Path, **kw: object) -> DataConfig:
    return DataConfig(name="t", path=str(path), **kw)


def test_every_bad_row_is_reported_in_one_pass(tmp_path: Path) -> None:
    # 3 good rows; then 22 rows without an answer and 3 broken lines: 25 bad rows in all.
    lines = [json.dumps(GOOD)] * 3 + [json.dumps({"prompt": f"q{i}"}) for i in range(22)] + ["{oops"] * 3
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadRowsError) as err:
        load_stage_data(cfg(path), "grpo")
    text = str(err.value)
    listed = [line for line in text.splitlines() if line.startswith(f"  {path}:")]
    assert text.startswith(f"{path}: 25 bad rows; the first {SHOWN_BAD_ROWS}:")
    assert len(listed) == SHOWN_BAD_ROWS == 20
    # file order, each with its line, field and fix
    assert listed[0] == (f"  {path}:4: field 'answer': the field is missing. Fix: give every row a 'answer' "
                         "(or map a column to it with data.columns)")
    assert listed[-1].startswith(f"  {path}:23: field 'answer'")
    assert "  ... and 5 more bad rows: 3 x malformed JSON, 2 x missing field 'answer'" in text
    assert text.endswith("set data.on_bad_row=skip to drop such rows (they are counted)")
    # skip keeps counting per reason, as before
    out = load_stage_data(cfg(path, on_bad_row=OnBadRow.skip), "grpo")
    assert len(out.train) == 3 and out.drops.total == 25
    assert {r: v.count for r, v in out.drops.reasons.items()} == {"missing field 'answer'": 22, "malformed JSON": 3}


def test_a_single_bad_row_keeps_its_own_message(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({"prompt": "q"}) + "\n")
    with pytest.raises(DataError) as err:
        load_stage_data(cfg(path), "grpo")
    assert not isinstance(err.value, BadRowsError)
    assert str(err.value).startswith(f"{path}:2: field 'answer': the field is missing")


@pytest.mark.parametrize("name", ["d.jsonl", "d.csv", "d.json"])
def test_a_file_that_is_not_utf8_names_line_byte_and_fix(tmp_path: Path, name: str) -> None:
    rows = [GOOD, {"prompt": "Caf\u00e9 au lait?", "answer": "3"}]
    if name == "d.csv":
        text = "prompt,answer\n" + "".join(f"{r['prompt']},{r['answer']}\n" for r in rows)
    elif name == "d.json":
        text = "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]\n"
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    raw = text.encode("cp1252")
    (tmp_path / name).write_bytes(raw)
    line, offset = text[: text.index("Caf")].count("\n") + 1, raw.index(bytes([0xE9]))
    with pytest.raises(DataError) as err:
        load_stage_data(cfg(tmp_path / name), "grpo")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / name}:{line}: field 'encoding': not valid utf-8 text: byte 0xe9 at byte "
                              f"offset {offset} (line {line}) cannot be decoded")
    assert "re-encode the file as UTF-8" in message and "data.encoding=latin-1" in message
    # the fix named in the message works
    out = load_stage_data(cfg(tmp_path / name, encoding="cp1252"), "grpo")
    assert out.train[1]["prompt"][-1]["content"] == "Caf\u00e9 au lait?"


def test_utf16_and_bom_files_read_with_the_right_encoding(tmp_path: Path) -> None:
    text = json.dumps(GOOD) + "\n" + json.dumps({"prompt": "\u4f60\u597d", "answer": "1"}) + "\n"
    (tmp_path / "u16.jsonl").write_bytes(text.encode("utf-16"))
    out = load_stage_data(cfg(tmp_path / "u16.jsonl", encoding="utf-16"), "grpo")
    assert [r["prompt"][-1]["content"] for r in out.train] == ["What is 1 + 1?", "\u4f60\u597d"]
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert len(load_stage_data(cfg(tmp_path / "bom.jsonl"), "grpo").train) == 2
    with pytest.raises(DataError, match=r"^data.encoding: field 'encoding': unknown encoding 'utf-9'"):
        load_stage_data(cfg(tmp_path / "bom.jsonl", encoding="utf-9"), "grpo")


def test_a_json_object_holding_the_rows_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"version": 2, "data": [GOOD, GOOD, GOOD]}, indent=2))
    with pytest.raises(DataError) as err:
        load_stage_data(cfg(path), "grpo")
    assert str(err.value) == (f"{path}: field 'json_key': the file is one JSON object, not a list of rows; its rows "
                              "sit under 'data' (3 rows). Fix: point at them with data.json_key=data")
    out = load_stage_data(cfg(path, json_key="data"), "grpo")
    assert len(out.train) == 3
    assert peek_columns(cfg(path, json_key="data")) == {"prompt", "answer"}
    with pytest.raises(DataError, match="no list of rows under key 'rows'. Fix: set data.json_key to one of"):
        load_stage_data(cfg(path, json_key="rows"), "grpo")
    (tmp_path / "d.jsonl").write_text(json.dumps(GOOD) + "\n")
    with pytest.raises(DataError, match="data.json_key only applies to .json files"):
        load_stage_data(cfg(tmp_path / "d.jsonl", json_key="data"), "grpo")


def test_bad_rows_under_a_json_key_are_located_there(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"data": [GOOD, {"prompt": "q"}]}))
    with pytest.raises(DataError) as err:
        load_stage_data(cfg(path, json_key="data"), "grpo")
    assert str(err.value).startswith(f"{path}[data][row 2]: field 'answer'")
