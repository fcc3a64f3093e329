"""LLaMA-Factory's dataset registry: `dataset_info.json` entries, read as its data/README.md documents them.

    "name": {"file_name": "x.json" (file or folder in dataset_dir) | "hf_hub_url": "org/set" | "ms_hub_url" |
             "script_url", "subset", "split" (default train), "folder", "formatting": "alpaca" | "sharegpt",
             "ranking": bool, "columns": {prompt, query, response, history, messages, system, tools, chosen,
             rejected, kto_tag, ...}, "tags": {role_tag, content_tag, user_tag, assistant_tag, observation_tag,
             function_tag, system_tag}, "num_samples": int}

Our one extension: `columns.answer` names the gold-answer column GRPO's rewards read. What an entry can feed is a
row shape (`RowShape`): ranking -> preference pairs, kto_tag -> labeled rows, an answer column -> prompt + answer,
otherwise chats -> prompt + completion. Light on purpose (json only): validation reads it before anything loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config.stage_table import STAGES, RowShape
from pipeline.data.errors import DataError

if TYPE_CHECKING:
    from pipeline.config.data_schema import DataConfig

INFO_FILE = "dataset_info.json"
FORMATTINGS = ("alpaca", "sharegpt")
# LLaMA-Factory's defaults (its DatasetAttr); `answer` is ours.
COLUMN_DEFAULTS = {"prompt": "instruction", "query": "input", "response": "output", "messages": "conversations"}
KNOWN_COLUMNS = {*COLUMN_DEFAULTS, "history", "system", "tools", "images", "videos", "audios", "chosen", "rejected",
                 "kto_tag", "answer"}
TAG_DEFAULTS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
_KNOWN_KEYS = {"file_name", "hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name", "subset",
               "split", "folder", "formatting", "ranking", "columns", "tags", "num_samples", "load_from"}
_SHAPE_NEEDS = {
    RowShape.completion: "a reply to learn: alpaca `response` (output) or sharegpt `messages` ending with the "
                         "assistant, without ranking or kto_tag",
    RowShape.preference: "ranking: true with `chosen` and `rejected` columns",
    RowShape.labeled: "a `kto_tag` column (true = desirable) next to the response",
    RowShape.answer: "a gold answer for the rewards: map it with columns.answer (e.g. \"answer\": \"solution\")",
}


@dataclass(frozen=True)
class Entry:
    """One registry entry, with LLaMA-Factory's defaults filled in."""

    name: str
    formatting: str
    ranking: bool
    columns: dict[str, str]
    tags: dict[str, str]
    # Exactly one source: a file/folder under dataset_dir, or a hub name (+ subset, split, folder).
    file: Path | None = None
    hub: str | None = None
    subset: str | None = None
    split: str = "train"
    folder: str | None = None
    num_samples: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> RowShape:
        """The row shape this entry's rows make."""
        if self.ranking:
            return RowShape.preference
        if "kto_tag" in self.columns:
            return RowShape.labeled
        if "answer" in self.columns:
            return RowShape.answer
        return RowShape.completion

    def shapes(self) -> tuple[RowShape, ...]:
        # A row with a gold answer also has a reply SFT can learn when the response/messages column exists.
        if self.shape == RowShape.answer and self._has_reply():
            return (RowShape.answer, RowShape.completion)
        return (self.shape,)

    def _has_reply(self) -> bool:
        return "response" in self.raw.get("columns", {}) or self.formatting == "sharegpt"

    def describe(self) -> str:
        cols = ", ".join(f"{k}: {v}" for k, v in self.raw.get("columns", {}).items()) or "defaults"
        ranking = ", ranking: true" if self.ranking else ""
        return f"entry '{self.name}' (formatting: {self.formatting}{ranking}, columns: {{{cols}}})"

    @property
    def source(self) -> str:
        return str(self.file) if self.file is not None else f"{self.hub}[{self.split}]"


def dataset_names(data: DataConfig) -> list[str]:
    """data.dataset as a list: "a,b" (LLaMA-Factory's spelling) or a YAML list."""
    value = data.dataset
    names = value.split(",") if isinstance(value, str) else list(value or [])
    return [n.strip() for n in names if n.strip()]


def read_info(dataset_dir: str) -> dict[str, Any]:
    path = Path(dataset_dir).expanduser() / INFO_FILE
    if not path.is_file():
        raise DataError(str(path), f"no {INFO_FILE} in data.dataset_dir={dataset_dir}",
                        f"set data.dataset_dir to the folder holding LLaMA-Factory's {INFO_FILE}", "dataset_dir")
    try:
        info = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(str(path), f"not valid JSON ({e})", f"fix {INFO_FILE}", "dataset_dir") from None
    if not isinstance(info, dict):
        raise DataError(str(path), "not a JSON object of named entries", f"write {INFO_FILE} as {{name: {{...}}}}")
    return info


def registry_entries(data: DataConfig, names: list[str] | None = None) -> list[Entry]:
    """The entries named by `names` (default: data.dataset), in order; unknown names and malformed entries raise
    DataError."""
    info = read_info(data.dataset_dir)
    names = dataset_names(data) if names is None else names
    if not names:
        raise DataError("data.dataset", "no dataset named", f"name entries of {INFO_FILE}: {_known(info)}", "dataset")
    out = []
    for name in names:
        if name not in info:
            raise DataError(f"{Path(data.dataset_dir) / INFO_FILE}", f"no entry named '{name}'",
                            f"use one of {_known(info)} or add the entry", "dataset")
        out.append(parse_entry(name, info[name], Path(data.dataset_dir).expanduser()))
    return out


def parse_entry(name: str, raw: Any, root: Path) -> Entry:
    where = f"{root / INFO_FILE}: entry '{name}'"
    if not isinstance(raw, dict):
        raise DataError(where, "is not an object", "write it as {\"file_name\": ..., \"columns\": {...}}")
    unknown = sorted(set(raw) - _KNOWN_KEYS)
    if unknown:
        raise DataError(where, f"unknown keys {unknown}", f"use LLaMA-Factory's keys: {sorted(_KNOWN_KEYS)}")
    formatting = raw.get("formatting", "alpaca")
    if formatting not in FORMATTINGS:
        raise DataError(where, f"formatting '{formatting}' is not alpaca or sharegpt", "set formatting to one of them",
                        "formatting")
    columns, tags = raw.get("columns", {}), raw.get("tags", {})
    bad_cols = sorted(set(columns) - KNOWN_COLUMNS)
    bad_tags = sorted(set(tags) - set(TAG_DEFAULTS))
    if bad_cols or bad_tags:
        problem = f"unknown columns {bad_cols}" if bad_cols else f"unknown tags {bad_tags}"
        fix = f"columns take {sorted(KNOWN_COLUMNS)}; tags take {sorted(TAG_DEFAULTS)}"
        raise DataError(where, problem, fix, "columns" if bad_cols else "tags")
    for modal in ("images", "videos", "audios"):
        if modal in columns:
            raise DataError(where, f"has a '{modal}' column: multimodal data is not supported",
                            f"drop the '{modal}' column from the entry or use a text-only data set", "columns")
    defaults = COLUMN_DEFAULTS if formatting == "alpaca" else {"messages": COLUMN_DEFAULTS["messages"]}
    source = _source(raw, root, where)
    return Entry(name=name, formatting=formatting, ranking=bool(raw.get("ranking", False)),
                 columns={**defaults, **columns}, tags={**TAG_DEFAULTS, **tags}, raw=raw,
                 num_samples=raw.get("num_samples"), split=raw.get("split", "train"), subset=raw.get("subset"),
                 folder=raw.get("folder"), **source)


def _source(raw: dict[str, Any], root: Path, where: str) -> dict[str, Any]:
    # LLaMA-Factory's order: a hub url wins over script_url, which wins over file_name.
    if raw.get("hf_hub_url"):
        return {"hub": raw["hf_hub_url"]}
    if raw.get("ms_hub_url") or raw.get("om_hub_url"):
        raise DataError(where, "only names a ModelScope/Modelers hub url, which cannot be read here",
                        "download the files into data.dataset_dir and set file_name, or add an hf_hub_url", "file_name")
    if raw.get("script_url"):
        return {"hub": str(root / raw["script_url"])}
    if not raw.get("file_name"):
        raise DataError(where, "has no file_name, hf_hub_url or script_url", "set file_name (a file or folder in "
                        "data.dataset_dir) or hf_hub_url", "file_name")
    return {"file": root / raw["file_name"]}


def entry_problem(entry: Entry, needs: RowShape | None, stage: str) -> str | None:
    """Why `entry` cannot feed a stage whose rows are `needs`; None when it can."""
    if needs in entry.shapes():
        return None
    wanted = _SHAPE_NEEDS.get(needs, f"{needs.value if needs else 'no'} rows, which no registry entry makes")
    fits = [name for name, s in STAGES.items() if s.rows in entry.shapes()]
    return (f"{entry.describe()} makes {entry.shape.value} rows ({_SHAPE_NEEDS[entry.shape]}), but stage={stage} "
            f"needs {wanted}; the entry fits stage={'|'.join(fits) or 'none'}")


def _known(info: dict[str, Any]) -> str:
    names = sorted(info)
    return ", ".join(names[:20]) + (f" (+{len(names) - 20} more)" if len(names) > 20 else "")


def registry_problems(data: DataConfig, stage: str, needs: RowShape | None) -> list[str]:
    """Validation: every named entry exists, parses and can feed the stage; all problems at once."""
    try:
        info = read_info(data.dataset_dir)
    except DataError as e:
        return [str(e)]
    names = dataset_names(data)
    if not names:
        return [f"data.dataset names no entry: use entries of {Path(data.dataset_dir) / INFO_FILE}: {_known(info)}."]
    problems = []
    for name in names:
        if name not in info:
            problems.append(f"data.dataset: no entry '{name}' in {Path(data.dataset_dir) / INFO_FILE}; known: "
                            f"{_known(info)}.")
            continue
        try:
            entry = parse_entry(name, info[name], Path(data.dataset_dir).expanduser())
        except DataError as e:
            problems.append(str(e))
            continue
        if needs is not None and (problem := entry_problem(entry, needs, stage)):
            problems.append(f"data.dataset: {problem}. Fix: name entries that fit stage={stage}, or run the stage "
                            "the entry fits.")
    return problems
