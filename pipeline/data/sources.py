"""Raw rows, each with the location it came from, read from local files or `datasets` hub names.

Local files are read by pipeline/data/files.py. Anything that is neither a local file nor looks like one is a
`datasets.load_dataset` name (a local folder works too). Rows are yielded lazily, so a `limit` stops reading early.

This module must not import `datasets` at import time: `peek_columns` runs during config validation.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.data.errors import DataError
from pipeline.data.files import (
    PATH_FIX,
    PLAIN,
    SUFFIXES,
    FileOptions,
    Record,
    file_suffix,
    first_array_item,
    json_is_array,
    local_records,
    record_of,
)

if TYPE_CHECKING:
    from pipeline.config.data_schema import DataConfig
    from pipeline.data.registry import Entry

BUILTIN_PREFIX = "builtin:"


def is_builtin(path: str) -> bool:
    return path.startswith(BUILTIN_PREFIX)


def is_local(path: str) -> bool:
    """Existing files, and missing paths that look like files (a typo is reported, not sent to the hub)."""
    p = Path(path).expanduser()
    if p.is_dir():
        return False  # `datasets` loads a local folder like a hub repository
    return p.is_file() or p.suffix.lower() in SUFFIXES or path.startswith(("/", ".", "~"))


def rename(row: dict[str, Any], columns: Mapping[str, str] | None) -> dict[str, Any]:
    """Apply data.columns (source -> expected); a renamed column wins over an existing one of that name."""
    if not columns:
        return row
    out = {k: v for k, v in row.items() if k not in columns}
    out.update({columns[k]: v for k, v in row.items() if k in columns})
    return out


def file_options(data: DataConfig) -> FileOptions:
    return FileOptions(data.encoding, data.json_key)


def read_records(
    path: str,
    split: str = "train",
    subset: str | None = None,
    columns: Mapping[str, str] | None = None,
    options: FileOptions = PLAIN,
    data_dir: str | None = None,
) -> Iterator[Record]:
    """Rows of a local file or hub split (of `data_dir` in the repository), renamed with `columns`. Missing sources
    raise DataError at once."""
    records = local_records(path, options) if is_local(path) else _hub_records(path, subset, split, data_dir)
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
        if file_suffix(path) == ".json" and json_is_array(path):
            row = first_array_item(path)
        else:
            row = next(local_records(path, file_options(data))).row
    except (DataError, OSError, UnicodeDecodeError, StopIteration, ValueError, csv.Error):
        return None
    return set(rename(row, data.columns)) if isinstance(row, dict) else None


def _hub_records(path: str, subset: str | None, split: str, data_dir: str | None = None) -> Iterator[Record]:
    import datasets

    where = f"{path}[{split}]"
    try:
        ds = datasets.load_dataset(path, subset, split=split, data_dir=data_dir)
    except (
        OSError,
        ValueError,
    ) as e:  # not found, offline, unknown split/subset (ConnectionError is OSError)
        problem = f"cannot load it ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        fix = f"{PATH_FIX}, data.subset and data.split; hub names need the network or a cached copy"
        raise DataError(where, problem, fix, field="path") from e
    return (record_of(f"{where} row {i}", row) for i, row in enumerate(ds, 1))


def entry_records(entry: Entry, data: DataConfig) -> Iterator[Record]:
    """Rows of a registry entry: its file, every data file of its folder (sorted), or its hub split."""
    options = file_options(data)
    if entry.hub is not None:
        return read_records(entry.hub, entry.split, entry.subset, None, options, entry.folder)
    file = entry.file
    if file.is_dir():
        files = sorted(p for p in file.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise DataError(str(file), f"entry '{entry.name}': the folder holds no {'/'.join(SUFFIXES)} files",
                            "put the data files in it or point file_name at a file", "file_name")
        return chain.from_iterable(read_records(str(p), options=options) for p in files)
    if not file.exists():
        raise DataError(str(file), f"entry '{entry.name}': file_name not found (looked at {file.absolute()})",
                        "fix file_name in dataset_info.json (relative to data.dataset_dir)", "file_name")
    return read_records(str(file), options=options)
