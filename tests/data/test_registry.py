"""LLaMA-Factory's dataset registry (data=llamafactory): every formatting x stage its data/README.md documents,
tool-call chats, mixing, and entries a stage cannot use refused at validation. Fixtures in
tests/fixtures/llamafactory/ are written from that README's format descriptions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.config.argv import quote_name_lists
from pipeline.config.checks import ConfigError, to_run_config
from pipeline.config.data_schema import DataConfig
from pipeline.config.stage_table import STAGES, RowShape
from pipeline.data.errors import DataError
from pipeline.data.llamafactory import entry_converter
from pipeline.data.loader import load_stage_data
from pipeline.data.mixing import interleave, sample
from pipeline.data.registry import parse_entry, registry_entries, registry_problems
from tests.helpers.data import DATA
from tests.helpers.data import LLAMAFACTORY as LF
from tests.helpers.runs import compose_config

INFO = json.loads((LF / "dataset_info.json").read_text())


def reg(dataset: str, **kw: Any) -> DataConfig:
    return DataConfig(name="lf", path="registry", dataset=dataset, dataset_dir=str(LF), **kw)


def rows(dataset: str, stage: str, **kw: Any) -> list[dict[str, Any]]:
    return load_stage_data(reg(dataset, **kw), stage, seed=0).train.to_list()


def msg(role: str, content: str, **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


# ---- each formatting into each stage's rows --------------------------------------------------------------------


def test_alpaca_sft_joins_instruction_and_input_and_keeps_system_and_history() -> None:
    out = {r["completion"][0]["content"]: r["prompt"] for r in rows("alpaca_en_demo", "sft")}
    assert out["2 + 2 = 4."] == [msg("system", "You are a careful calculator."), msg("user", "What is 2 + 2?")]
    # history pairs become earlier turns; input joins the instruction with one newline (LLaMA-Factory's rule)
    assert out["3 + 5 = 8."] == [msg("user", "Hi!"), msg("assistant", "Hello, how can I help?"),
                                 msg("user", "What is 3 + 5?\nAnswer briefly.")]
    # data.system_prompt fills in where the row has no system column value
    first = rows("alpaca_en_demo", "sft", system_prompt="S")
    assert [r["prompt"][0] for r in first if r["completion"][0]["content"] == "10 - 7 = 3."] == [msg("system", "S")]


def test_sharegpt_and_openai_chats_sft() -> None:
    chat = rows("sharegpt_chat", "sft")[0]
    assert chat["prompt"] == [msg("system", "Answer with numbers only."), msg("user", "What is 2 + 2?"),
                              msg("assistant", "4"), msg("user", "And doubled?")]
    assert chat["completion"] == [msg("assistant", "8")]
    openai = rows("openai_chat", "sft")[0]
    assert openai == {"prompt": [msg("system", "Be terse."), msg("user", "Compute 2 + 2.")],
                      "completion": [msg("assistant", "4")]}


def test_tool_call_chats_become_trl_tool_format() -> None:
    out = rows("tool_chat", "sft")
    call = {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    assert out[0]["prompt"] == [msg("user", "What's the weather in Paris?", tool_calls=None),
                                msg("assistant", "", tool_calls=[call]),
                                msg("tool", '{"temperature": 21, "sky": "clear"}', tool_calls=None)]
    assert out[0]["completion"] == [msg("assistant", "It is 21 degrees and clear in Paris.", tool_calls=None)]
    tools = json.loads(out[0]["tools"])
    assert tools == [{"type": "function", "function": INFO_TOOL("get_weather")}]
    assert out[2]["tools"] is None  # a row without tools
    # a conversation may end on a function call: the model learns to call the tool
    assert out[3]["completion"][0]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}


def INFO_TOOL(name: str) -> dict[str, Any]:  # noqa: N802
    raw = json.loads((LF / "tool_calls.json").read_text())
    return next(t for r in raw for t in json.loads(r["tools"] or "[]") if t["name"] == name)


def test_ranking_entries_dpo_alpaca_strings_and_sharegpt_turn_objects() -> None:
    out = rows("dpo_alpaca", "dpo")[0]
    assert out == {"prompt": [msg("user", "What is 2 + 2?")], "chosen": [msg("assistant", "4")],
                   "rejected": [msg("assistant", "5")]}
    out = rows("dpo_sharegpt", "dpo")[0]
    assert out["prompt"] == [msg("user", "Hi"), msg("assistant", "Hello."), msg("user", "What is 2 + 2?")]
    assert (out["chosen"], out["rejected"]) == ([msg("assistant", "4")], [msg("assistant", "I don't know.")])


@pytest.mark.parametrize("name", ["kto_alpaca", "kto_sharegpt"])
def test_kto_tag_entries_make_labeled_rows(name: str) -> None:
    (entry,) = registry_entries(reg(name))
    assert entry.shape == RowShape.labeled
    convert = entry_converter(entry, RowShape.labeled, DataConfig(name="t", path="x"))
    raw = json.loads((LF / INFO[name]["file_name"]).read_text())
    out = [convert(r) for r in raw]
    assert [r["label"] for r in out] == [True, False, True, False]
    assert out[0] == {"prompt": [msg("user", "What is 2 + 2?")], "completion": [msg("assistant", "4")], "label": True}
    assert out[1]["completion"][0]["content"] in ("9", "no idea")


def test_answer_column_feeds_grpo_and_its_held_out_split() -> None:
    assert rows("qa_answers", "grpo")[0] == {"prompt": [msg("user", "What is 2 + 2?")], "answer": "4"}
    out = load_stage_data(reg("qa_answers", eval_size=1), "grpo", seed=0)
    assert len(out.train) == 3 and len(out.eval_prompts) == 1
    assert out.eval_prompts[0]["answer"] not in [r["answer"] for r in out.train]


def test_folder_entry_reads_every_file_and_num_samples_picks_seeded_rows() -> None:
    out = load_stage_data(reg("folder_set"), "sft", seed=0)
    words = [r["completion"][0]["content"] for r in out.train]
    assert len(words) == 3 and set(words) <= {"alpha", "beta", "gamma", "delta"} and out.sources == {"folder_set": 3}
    assert sample([1, 2], 5, seed=0)[:4] == [1, 2, 1, 2] and len(sample([1, 2], 5, seed=0)) == 5


# ---- mixing --------------------------------------------------------------------------------------------------


def test_several_entries_are_interleaved_with_the_seed_and_counted() -> None:
    data = reg("alpaca_en_demo,identity,openai_chat")
    first = load_stage_data(data, "sft", seed=0)
    assert first.sources == {"alpaca_en_demo": 4, "identity": 3, "openai_chat": 4} and len(first.train) == 11
    again = load_stage_data(data, "sft", seed=0)
    other = load_stage_data(data, "sft", seed=1)
    assert first.train.to_list() == again.train.to_list() and first.train.to_list() != other.train.to_list()
    mixed = interleave([list(range(8)), list("abcd")], seed=0)
    assert mixed != [*range(8), *"abcd"] and sorted(map(str, mixed)) == sorted(map(str, [*range(8), *"abcd"]))
    assert [x for x in mixed if isinstance(x, int)] == list(range(8))  # each source keeps its order


def test_dataset_names_on_the_command_line_reach_hydra_as_one_string() -> None:
    argv = ["run.py", "data=llamafactory", "data.dataset=alpaca_en_demo,identity", "stage=sft"]
    quote_name_lists(argv)
    assert argv[2] == "data.dataset='alpaca_en_demo,identity'"
    sweep = ["run.py", "-m", "data.dataset=a,b"]
    quote_name_lists(sweep)
    assert sweep[2] == "data.dataset=a,b"
    cfg = to_run_config(compose_config(["data=llamafactory", f"data.dataset_dir={LF}", argv[2], "stage=sft"]))
    assert cfg.data.dataset == "alpaca_en_demo,identity"


# ---- entries a stage cannot use, refused before anything loads -----------------------------------------------


@pytest.mark.parametrize("name", sorted(n for n in INFO if n not in ("hub_set", "modelscope_only")))
@pytest.mark.parametrize("stage", sorted(n for n, s in STAGES.items() if s.rows is not None))
def test_the_stage_table_decides_which_entry_feeds_which_stage(name: str, stage: str) -> None:
    entry = parse_entry(name, INFO[name], LF)
    problems = registry_problems(reg(name), stage, STAGES[stage].rows)
    if STAGES[stage].rows in entry.shapes():
        assert problems == []
        load_stage_data(reg(name), stage)  # and the rows really load
    else:
        assert len(problems) == 1 and f"entry '{name}' (formatting: {entry.formatting}" in problems[0]
        assert f"but stage={stage} needs" in problems[0] and "Fix: name entries that fit" in problems[0]


def test_validation_names_each_bad_entry_at_once() -> None:
    overrides = ["model=tiny", "stage=dpo", "data=llamafactory", f"data.dataset_dir={LF}",
                 "data.dataset='alpaca_en_demo,dpo_sharegpt,nope,modelscope_only'"]
    with pytest.raises(ConfigError) as err:
        to_run_config(compose_config(overrides))
    text = str(err.value)
    assert ("entry 'alpaca_en_demo' (formatting: alpaca, columns: {prompt: instruction, query: input, "
            "response: output, system: system, history: history}) makes completion rows") in text
    assert "but stage=dpo needs ranking: true with `chosen` and `rejected` columns; the entry fits stage=sft" in text
    assert "entry 'dpo_sharegpt'" not in text and text.count("\n  - ") == 3
    assert "no entry 'nope' in" in text and "known: alpaca_en_demo, dpo_alpaca" in text
    assert "entry 'modelscope_only': field 'file_name': only names a ModelScope" in text


@pytest.mark.parametrize(
    "info, message",
    [
        ({"x": {"file_name": "missing.json"}}, "entry 'x': file_name not found"),
        ({"x": {"file_name": "a.json", "formatting": "csv"}}, "formatting 'csv' is not alpaca or sharegpt"),
        ({"x": {"file_name": "a.json", "columns": {"instructions": "q"}}}, "unknown columns ['instructions']"),
        ({"x": {"file_name": "a.json", "columns": {"images": "images"}}}, "multimodal data is not supported"),
        ({"x": {"file_name": "a.json", "tags": {"role": "from"}}}, "unknown tags ['role']"),
        ({"x": {"columns": {}}}, "has no file_name, hf_hub_url or script_url"),
    ],
)
def test_malformed_entries(tmp_path: Path, info: dict[str, Any], message: str) -> None:
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    (tmp_path / "a.json").write_text(json.dumps([{"instruction": "q", "output": "a"}]))
    data = DataConfig(name="lf", path="registry", dataset="x", dataset_dir=str(tmp_path))
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_stage_data(data, "sft")


def test_missing_registry_file() -> None:
    data = DataConfig(name="lf", path="registry", dataset="x", dataset_dir="/nonexistent")
    with pytest.raises(DataError, match="no dataset_info.json in data.dataset_dir=/nonexistent"):
        load_stage_data(data, "sft")


@pytest.mark.parametrize(
    "row, message",
    [
        ({"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]},
         "field 'conversations': turn 1 (assistant) breaks the alternation"),
        ({"conversations": [{"from": "robot", "value": "q"}]}, "turn 1 has from 'robot'"),
        ({"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "get(1)"}]},
         "turn 2's function call is not JSON"),
        ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "tools": "[{oops"},
         "field 'tools': the tools value is not JSON"),
        ({"conversations": [{"from": "human", "value": "q"}]}, "the last turn is 'user', not a reply (gpt)"),
    ],
)
def test_bad_sharegpt_rows_name_row_field_and_fix(tmp_path: Path, row: dict[str, Any], message: str) -> None:
    (tmp_path / "dataset_info.json").write_text(json.dumps({"x": {
        "file_name": "d.json", "formatting": "sharegpt", "columns": {"messages": "conversations", "tools": "tools"}}}))
    good = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    (tmp_path / "d.json").write_text(json.dumps([good, row]))
    data = DataConfig(name="lf", path="registry", dataset="x", dataset_dir=str(tmp_path))
    with pytest.raises(DataError) as err:
        load_stage_data(data, "sft")
    assert str(err.value).startswith(f"{tmp_path / 'd.json'}[row 2]: field ") and message in str(err.value)
    assert "Fix: " in str(err.value)


# ---- the same layouts as a plain data.path (format sharegpt), no registry ---------------------------------------


def test_plain_sharegpt_file_feeds_dpo_and_tool_calls() -> None:
    out = load_stage_data(DataConfig(name="t", path=str(LF / "dpo_sharegpt.json")), "dpo").train[0]
    assert out["prompt"][-1] == msg("user", "What is 2 + 2?") and out["chosen"] == [msg("assistant", "4")]
    tools = load_stage_data(DataConfig(name="t", path=str(LF / "tool_calls.json")), "sft").train.to_list()
    assert tools[0]["prompt"][1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert tools[0]["prompt"][2]["role"] == "tool" and json.loads(tools[0]["tools"])[0]["function"]["name"]


def test_hub_entries_read_their_split_and_name_unreachable_ones(tmp_path: Path, monkeypatch) -> None:
    import shutil

    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    shutil.copytree(DATA / "hub_dir", tmp_path / "repo")
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "local_repo": {"script_url": "repo", "split": "test", "columns": {"prompt": "question", "answer": "answer"}},
        "offline": {"hf_hub_url": "nobody/not_cached", "columns": {"prompt": "question", "answer": "answer"}}}))
    data = DataConfig(name="lf", path="registry", dataset="local_repo", dataset_dir=str(tmp_path))
    assert load_stage_data(data, "grpo").train.to_list() == [{"prompt": [msg("user", "t1")], "answer": "10"}]
    with pytest.raises(DataError, match=r"^nobody/not_cached\[train\]: field 'path': cannot load it"):
        load_stage_data(DataConfig(name="lf", path="registry", dataset="offline", dataset_dir=str(tmp_path)), "grpo")
