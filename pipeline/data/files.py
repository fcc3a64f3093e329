"""Rows of local files, each with its location: .jsonl (one object per line, blank lines ignored), .json (an array
of objects, JSON lines saved with a .json suffix, or an object holding the array under `json_key`), .csv and .tsv
(header row; empty cells are ""). Files are decoded line by line in `encoding` (UTF-8 with or without BOM by
default), so a byte that is not valid there is reported with its file, line and byte offset; unparsable rows are
yielded as records carrying their error, so the caller applies on_bad_row in file order."""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from pipeline.data.errors import DataError

_DELIMITERS = {".csv": ",", ".tsv": "\t"}
SUFFIXES = (".jsonl", ".json", *_DELIMITERS)
PATH_FIX = "check data.path (a .jsonl/.json/.csv/.tsv file, builtin:arithmetic, or a hub name)"


class FileOptions(NamedTuple):
    """How local files are read (data.encoding, data.json_key)."""

    encoding: str = "utf-8"
    # Key of a .json object whose value is the list of rows ({"data": [...]}); None: the file is the rows.
    json_key: str | None = None


PLAIN = FileOptions()


class Record(NamedTuple):
    location: str
    # None when the row could not be parsed; `error` says why.
    row: dict[str, Any] | None
    error: DataError | None = None


def file_suffix(path: str) -> str:
    return Path(path).suffix.lower()


def local_records(path: str, options: FileOptions = PLAIN) -> Iterator[Record]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(path, f"file not found (looked at {file.absolute()})", PATH_FIX, field="path")
    suffix = file_suffix(path)
    if options.json_key is not None and suffix != ".json":
        raise DataError(path, "data.json_key only applies to .json files", "unset data.json_key", "json_key")
    if suffix in _DELIMITERS:
        return _csv_records(path, file, _DELIMITERS[suffix], options.encoding)
    if suffix == ".json" and (options.json_key is not None or json_is_array(path)):
        return _json_array_records(path, file, options)
    if suffix in (".json", ".jsonl"):
        return _jsonl_file_records(path, file, options.encoding)
    raise DataError(
        path, f"unsupported file type '{suffix}'", f"convert it to .jsonl/.json/.csv/.tsv or {PATH_FIX}"
    )


def _codec(encoding: str) -> str:
    # utf-8-sig: files saved by spreadsheet tools start with a BOM that would break the first column name.
    name = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        codecs.lookup(name)
    except LookupError:
        raise DataError("data.encoding", f"unknown encoding {encoding!r}", "use e.g. utf-8, latin-1, cp1252, "
                        "utf-16, gb18030", "encoding") from None
    return name


def _lines(path: str, file: Path, encoding: str) -> Iterator[str]:
    """Decoded lines (line endings kept); a byte the encoding cannot decode stops with file, line and byte."""
    codec, offset = _codec(encoding), 0
    with file.open("rb") as f:
        if codecs.lookup(codec).name.startswith(("utf-16", "utf-32")):
            # b"\n" is not a line end in these: decode the whole file, then split.
            raw = f.read()
            try:
                yield from raw.decode(codec).splitlines(keepends=True)
            except UnicodeDecodeError as e:
                raise _undecodable(path, file, encoding, raw, e.start, raw.count(b"\n", 0, e.start) + 1) from None
            return
        for lineno, raw in enumerate(f, 1):
            try:
                yield raw.decode(codec)
            except UnicodeDecodeError as e:
                raise _undecodable(path, file, encoding, raw, e.start, lineno, offset) from None
            offset += len(raw)


def _undecodable(path: str, file: Path, encoding: str, raw: bytes, at: int, lineno: int, offset: int = 0) -> DataError:
    problem = (f"not valid {encoding} text: byte 0x{raw[at]:02x} at byte offset {offset + at} (line {lineno}) "
               "cannot be decoded")
    fix = (f"re-encode the file as UTF-8 (e.g. iconv -f cp1252 -t utf-8 {file.name} > fixed{file.suffix}) or set "
           "data.encoding to the file's encoding (e.g. data.encoding=latin-1, cp1252, utf-16, gb18030)")
    return DataError(f"{path}:{lineno}", problem, fix, "encoding")


def _open(file: Path) -> TextIO:
    # Peeks only (first character / first array item): the full read reports undecodable bytes with their place.
    return file.open(encoding="utf-8-sig", errors="replace", newline="")


def record_of(location: str, value: Any) -> Record:
    if isinstance(value, dict):
        return Record(location, value)
    problem = f"row is a {type(value).__name__}, not an object"
    return Record(location, None, DataError(location, problem, "make every row a JSON object {...}"))


def _jsonl_file_records(path: str, file: Path, encoding: str) -> Iterator[Record]:
    records = _jsonl_records(path, _lines(path, file, encoding))
    first = next(records, None)
    if first is not None and first.error is not None and file_suffix(path) == ".json":
        _refuse_one_object(path, file, encoding)
    yield from ([] if first is None else [first])
    yield from records


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
        yield record_of(location, value)


def json_is_array(path: str) -> bool:
    with _open(Path(path).expanduser()) as f:
        while ch := f.read(1):
            if not ch.isspace():
                return ch == "["
    return False


def _json_array_records(path: str, file: Path, options: FileOptions) -> Iterator[Record]:
    rows = _whole_json(path, file, options.encoding)
    where = path
    if options.json_key is not None:
        if not isinstance(rows, dict) or not isinstance(rows.get(options.json_key), list):
            keys = _list_keys(rows) if isinstance(rows, dict) else []
            fix = f"set data.json_key to one of {keys}" if keys else "unset data.json_key"
            raise DataError(path, f"the file has no list of rows under key {options.json_key!r}", fix, "json_key")
        rows, where = rows[options.json_key], f"{path}[{options.json_key}]"
    for i, value in enumerate(rows, 1):
        yield record_of(f"{where}[row {i}]", value)


def _whole_json(path: str, file: Path, encoding: str) -> Any:
    try:
        return json.loads("".join(_lines(path, file, encoding)))
    except json.JSONDecodeError as e:
        # The whole document fails to parse, so no row can be kept: fatal even under on_bad_row=skip.
        problem = f"malformed JSON ({e.msg} at column {e.colno})"
        raise DataError(f"{path}:{e.lineno}", problem, "fix the JSON array (or use one object per line)") from e


def _list_keys(obj: dict[str, Any]) -> list[str]:
    return [k for k, v in obj.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]


def _refuse_one_object(path: str, file: Path, encoding: str) -> None:
    """A .json file that is one (pretty-printed) object rather than rows: say which key holds the rows."""
    try:
        value = json.loads("".join(_lines(path, file, encoding)))
    except json.JSONDecodeError:
        return  # really malformed JSON lines: reported row by row
    if not isinstance(value, dict):
        return
    keys = _list_keys(value)
    if keys:
        sizes = ", ".join(f"{k!r} ({len(value[k])} rows)" for k in keys)
        raise DataError(path, f"the file is one JSON object, not a list of rows; its rows sit under {sizes}",
                        f"point at them with data.json_key={keys[0]}", "json_key")
    raise DataError(path, f"the file is one JSON object with keys {sorted(value)[:10]}, not a list of rows",
                    "save the rows as a JSON array [{...}, ...] or one object per line (.jsonl)")


def first_array_item(path: str) -> Any:
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


def _csv_records(path: str, file: Path, delimiter: str, encoding: str) -> Iterator[Record]:
    lines = _lines(path, file, encoding)
    try:
        reader = csv.DictReader(lines, delimiter=delimiter)
        try:
            for row in reader:
                # line_num is the file line the row ends on (rows with quoted newlines span several).
                yield _csv_record(f"{path}:{reader.line_num}", row, len(reader.fieldnames or ()))
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}", f"malformed CSV ({e})", "fix the quoting") from e
    finally:
        lines.close()


def _csv_record(location: str, row: dict[Any, Any], width: int) -> Record:
    # DictReader files surplus cells under the key None and fills missing ones with None.
    if None in row or None in row.values():
        problem = f"row has a different number of cells than the header ({width})"
        fix = "quote cells that contain the delimiter and give every row one cell per header column"
        return Record(location, None, DataError(location, problem, fix, reason="wrong number of CSV cells"))
    return Record(location, row)
