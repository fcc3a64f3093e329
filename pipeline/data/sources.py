"""Raw rows, each with the location it came from, read from local files or `datasets` hub names.

Local: .jsonl (one object per line, blank lines ignored), .json (an array of objects, or JSON lines saved
with a .json suffix), .csv and .tsv (header row; empty cells are ""). Anything else that is neither a local
file nor looks like one is a `datasets.load_dataset` name (a local folder works too). Rows are yielded lazily,
so a `limit` stops reading early; unparsable rows are yielded as records carrying their error, so the caller
applies on_bad_row in file order.

This module must not import `datasets` at import time: `peek_columns` runs during config validation.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from pipeline.data.errors import DataError

if TYPE_CHECKING:
    from pipeline.config.schema import DataConfig

BUILTIN_PREFIX = "builtin:"
_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_SUFFIXES = (".jsonl", ".json", *_DELIMITERS)
_PATH_FIX = "check data.path (a .jsonl/.json/.csv/.tsv file, builtin:arithmetic, or a hub name)"


class Record(NamedTuple):
    location: str
    # None when the row could not be parsed; `error` says why.
    row: dict[str, Any] | None
    error: DataError | None = None


def is_builtin(path: str) -> bool:
    return path.startswith(BUILTIN_PREFIX)


def is_local(path: str) -> bool:
    """Existing files, and missing paths that look like files (a typo is reported, not sent to the hub)."""
    p = Path(path).expanduser()
    if p.is_dir():
        return False  # `datasets` loads a local folder like a hub repository
    return p.is_file() or p.suffix.lower() in _SUFFIXES or path.startswith(("/", ".", "~"))


def rename(row: dict[str, Any], columns: Mapping[str, str] | None) -> dict[str, Any]:
    """Apply data.columns (source -> expected); a renamed column wins over an existing one of that name."""
    if not columns:
        return row
    out = {k: v for k, v in row.items() if k not in columns}
    out.update({columns[k]: v for k, v in row.items() if k in columns})
    return out


def read_records(
    path: str, split: str = "train", subset: str | None = None, columns: Mapping[str, str] | None = None
) -> Iterator[Record]:
    """Rows of a local file or hub split, renamed with `columns`. Missing sources raise DataError at once."""
    records = _local_records(path) if is_local(path) else _hub_records(path, subset, split)
    return (r if r.row is None else r._replace(row=rename(r.row, columns)) for r in records)


def peek_columns(data: DataConfig) -> set[str] | None:
    """Columns of the first row of a local file after data.columns renames; None when that cannot be known.

    Reads only the first record. None for builtin and hub paths, missing files and unparsable first rows (the
    full load reports those with their location).
    """
    path = data.path
    if is_builtin(path) or not Path(path).expanduser().is_file():
        return None
    try:
        if _suffix(path) == ".json" and _json_is_array(path):
            row = _first_array_item(path)
        else:
            row = next(_local_records(path)).row
    except (DataError, OSError, UnicodeDecodeError, StopIteration, ValueError, csv.Error):
        return None
    return set(rename(row, data.columns)) if isinstance(row, dict) else None


def _suffix(path: str) -> str:
    return Path(path).suffix.lower()


def _local_records(path: str) -> Iterator[Record]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(path, f"file not found (looked at {file.absolute()})", _PATH_FIX, field="path")
    suffix = _suffix(path)
    if suffix in _DELIMITERS:
        return _csv_records(path, file, _DELIMITERS[suffix])
    if suffix == ".json" and _json_is_array(path):
        return _json_array_records(path, file)
    if suffix in (".json", ".jsonl"):
        return _jsonl_file_records(path, file)
    raise DataError(
        path, f"unsupported file type '{suffix}'", f"convert it to .jsonl/.json/.csv/.tsv or {_PATH_FIX}"
    )


def _open(file: Path) -> TextIO:
    # utf-8-sig: files saved by spreadsheet tools start with a BOM that would break the first column name.
    return file.open(encoding="utf-8-sig", newline="")


def _object(location: str, value: Any) -> Record:
    if isinstance(value, dict):
        return Record(location, value)
    problem = f"row is a {type(value).__name__}, not an object"
    return Record(location, None, DataError(location, problem, "make every row a JSON object {...}"))


def _jsonl_file_records(path: str, file: Path) -> Iterator[Record]:
    with _open(file) as f:
        yield from _jsonl_records(path, f)


def _jsonl_records(path: str, lines: Iterable[str]) -> Iterator[Record]:
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        location = f"{path}:{lineno}"
        try:
            value = json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as e:
            problem = f"malformed JSON ({e.msg} at column {e.colno})"
            fix = "make each line one complete JSON object (a .json file may instead hold one array of them)"
            yield Record(location, None, DataError(location, problem, fix, reason="malformed JSON"))
            continue
        yield _object(location, value)


def _json_is_array(path: str) -> bool:
    with _open(Path(path).expanduser()) as f:
        while ch := f.read(1):
            if not ch.isspace():
                return ch == "["
    return False


def _json_array_records(path: str, file: Path) -> Iterator[Record]:
    with _open(file) as f:
        try:
            rows = json.load(f)
        except json.JSONDecodeError as e:
            # The whole array fails to parse, so no row can be kept: fatal even under on_bad_row=skip.
            problem = f"malformed JSON ({e.msg} at column {e.colno})"
            raise DataError(
                f"{path}:{e.lineno}", problem, "fix the JSON array (or use one object per line)"
            ) from e
    for i, value in enumerate(rows, 1):
        yield _object(f"{path}[row {i}]", value)


def _first_array_item(path: str) -> Any:
    """The first element of a JSON array, decoded from as few 64 KiB chunks as hold it."""
    decoder = json.JSONDecoder()
    text = ""
    with _open(Path(path).expanduser()) as f:
        while chunk := f.read(1 << 16):
            text += chunk
            try:
                return decoder.raw_decode(text.lstrip()[1:].lstrip())[0]
            except json.JSONDecodeError:
                continue
    return None


def _csv_records(path: str, file: Path, delimiter: str) -> Iterator[Record]:
    with _open(file) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        try:
            for row in reader:
                # line_num is the file line the row ends on (rows with quoted newlines span several).
                yield _csv_record(f"{path}:{reader.line_num}", row, len(reader.fieldnames or ()))
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}", f"malformed CSV ({e})", "fix the quoting") from e


def _csv_record(location: str, row: dict[Any, Any], width: int) -> Record:
    # DictReader files surplus cells under the key None and fills missing ones with None.
    if None in row or None in row.values():
        problem = f"row has a different number of cells than the header ({width})"
        fix = "quote cells that contain the delimiter and give every row one cell per header column"
        return Record(location, None, DataError(location, problem, fix, reason="wrong number of CSV cells"))
    return Record(location, row)


def _hub_records(path: str, subset: str | None, split: str) -> Iterator[Record]:
    import datasets

    where = f"{path}[{split}]"
    try:
        ds = datasets.load_dataset(path, subset, split=split)
    except (
        OSError,
        ValueError,
    ) as e:  # not found, offline, unknown split/subset (ConnectionError is OSError)
        problem = f"cannot load it ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        fix = f"{_PATH_FIX}, data.subset and data.split; hub names need the network or a cached copy"
        raise DataError(where, problem, fix, field="path") from e
    return (_object(f"{where} row {i}", row) for i, row in enumerate(ds, 1))
