"""The seed write-ups' data formats, each from a small fixture file, through `load_stage_data` as a run reads them:
sharegpt, LLaMA-Factory DPO, GSM8K, s1K, MCQ TSV (cleaning counted), scored groups; few-shot prompts, SFT on
preference pairs, and hub names loaded offline from a local copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config.enums import DataFormat, OnBadRow
from pipeline.data.errors import DataError
from pipeline.data.loader import load_stage_data
from tests.helpers.data import DATA, FORMATS, cfg, user

REAL_GSM8K = Path("/work/shared/data/gsm8k/train.jsonl")
XML = "Respond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>"


def test_sharegpt_conversations_become_prompt_and_last_reply() -> None:
    rows = load_stage_data(cfg(FORMATS / "sharegpt.jsonl"), "sft").train.to_list()
    assert rows[0]["prompt"] == [{"role": "system", "content": "You are concise."}, *user("Capital of France?")]
    assert rows[0]["completion"] == [{"role": "assistant", "content": "Paris."}]
    # multi-turn: earlier turns stay in the prompt; role/content turns are accepted too
    assert [m["role"] for m in rows[1]["prompt"]] == ["user", "assistant", "user"]
    assert rows[2]["completion"][0]["content"] == "Hello!"


def test_sharegpt_unknown_speaker_names_the_row_and_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"conversations": [{"from": "bot", "value": "x"}]}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'conversations': turn 1 has speaker 'bot'"):
        load_stage_data(cfg(bad), "sft")


def test_llamafactory_dpo_output_pair_is_detected_for_dpo() -> None:
    rows = load_stage_data(cfg(FORMATS / "llamafactory_dpo.json"), "dpo").train.to_list()
    assert rows[0]["prompt"] == user("为什么天空是蓝色的？")
    assert rows[0]["chosen"][0]["content"].startswith("因为瑞利散射")
    assert rows[0]["rejected"] == [{"role": "assistant", "content": "因为天空是蓝色的。"}]
    # input joins the instruction as in alpaca
    assert rows[1]["prompt"] == user("Name a prime number\n\nbelow 10")
    sft = load_stage_data(cfg(FORMATS / "llamafactory_dpo.json", format=DataFormat.llamafactory_dpo), "sft")
    assert sft.train[1]["completion"] == [{"role": "assistant", "content": "7"}]


def test_gsm8k_gold_is_the_text_after_the_marks_and_rows_without_it_are_counted() -> None:
    data = cfg(FORMATS / "gsm8k.jsonl", format=DataFormat.gsm8k, on_bad_row=OnBadRow.skip, system_prompt=XML)
    loaded = load_stage_data(data, "grpo")
    assert loaded.train["answer"] == ["12", "9", "30", "950"]
    assert loaded.train[0]["prompt"][0] == {"role": "system", "content": XML}
    assert loaded.drops.total == 1 and "no '#### answer' in field 'answer'" in loaded.drops.summary()
    sft = load_stage_data(cfg(FORMATS / "gsm8k.jsonl", format=DataFormat.gsm8k, limit=1), "sft").train[0]
    assert sft["completion"][0]["content"].endswith("#### 12")


def test_gsm8k_question_answer_is_not_guessed_without_data_format() -> None:
    # question/answer columns are too common to mean GSM8K
    with pytest.raises(DataError, match="set data.format to one of"):
        load_stage_data(cfg(FORMATS / "gsm8k.jsonl"), "grpo")


@pytest.mark.skipif(not REAL_GSM8K.exists(), reason="the shared GSM8K copy is not on this machine")
def test_real_gsm8k_rows() -> None:
    loaded = load_stage_data(cfg(REAL_GSM8K, format=DataFormat.gsm8k, limit=5), "grpo")
    assert len(loaded.train) == 5 and loaded.train[0]["answer"] == "72"
    assert all(a.replace(",", "").lstrip("-").isdigit() for a in loaded.train["answer"])


def test_few_shot_turns_sit_between_system_and_question() -> None:
    shots = [{"role": "user", "content": "Largest one-digit prime?"}, {"role": "assistant", "content": "7"}]
    data = cfg(FORMATS / "gsm8k.jsonl", format=DataFormat.gsm8k, system_prompt=XML, few_shot=shots, limit=1)
    prompt = load_stage_data(data, "grpo").train[0]["prompt"]
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]
    assert prompt[1:3] == shots and prompt[3]["content"].startswith("Tom has 3 boxes")


def test_s1k_gold_is_the_boxed_answer_and_sft_gets_the_thinking_trace() -> None:
    grpo = load_stage_data(cfg(FORMATS / "s1k.jsonl"), "grpo").train
    assert grpo["answer"] == ["\\frac{3}{2}", "4", "A hexagon has 6 sides."]
    sft = load_stage_data(cfg(FORMATS / "s1k.jsonl"), "sft").train
    first, third = sft[0]["completion"][0]["content"], sft[2]["completion"][0]["content"]
    assert first.startswith("<think>\nOne plus one half") and first.endswith("$\\boxed{\\frac{3}{2}}$.")
    assert third == "<think>\nHexa means six.\n</think>\n\n6"


def test_mcq_tsv_cleaning_is_counted_per_reason() -> None:
    loaded = load_stage_data(cfg(FORMATS / "mcq.tsv", on_bad_row=OnBadRow.skip), "grpo")
    # q3 is empty, q5 answers "E"; "d" is accepted as D
    assert loaded.train["id"] == ["q1", "q2", "q4", "q6"]
    assert loaded.train["answer"] == ["A", "B", "C", "D"]
    assert loaded.train[1]["prompt"] == user("Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth")
    reasons = {reason: r.count for reason, r in loaded.drops.reasons.items()}
    assert reasons == {"empty field 'question'": 1, "correct_answer not A-D": 1}
    assert "dropped 2 of 6 rows" in loaded.drops.summary()
    sft = load_stage_data(cfg(FORMATS / "mcq.tsv", on_bad_row=OnBadRow.skip, limit=1), "sft").train[0]
    assert sft["completion"][0]["content"].endswith("<answer>\nA\n</answer>")


def test_mcq_bad_answer_stops_the_run_by_default_with_file_and_line() -> None:
    with pytest.raises(DataError, match=r"mcq.tsv:4: field 'question'"):
        load_stage_data(cfg(FORMATS / "mcq.tsv"), "grpo")


def test_scored_groups_pick_the_top_score_as_chosen() -> None:
    groups = load_stage_data(cfg(FORMATS / "scored_groups.jsonl"), "group_pref").train.to_list()
    assert groups[0]["chosen"] == "2 + 3 = 5" and groups[0]["rejected"] == ["The answer is 5, I think.", "6"]
    # scores out of order: the best first, rejected best-first
    assert groups[1]["chosen"] == "Tokyo" and groups[1]["rejected"] == ["Kyoto or Tokyo", "Osaka"]
    assert groups[3]["rejected"] == ["cat", "k-a-t", "dog"]
    # the DPO view of the same file: best vs worst
    pairs = load_stage_data(cfg(FORMATS / "scored_groups.jsonl"), "dpo").train
    assert pairs[1]["chosen"][0]["content"] == "Tokyo" and pairs[1]["rejected"][0]["content"] == "Osaka"


def test_scored_group_without_a_lower_score_is_a_bad_row(tmp_path: Path) -> None:
    bad = tmp_path / "g.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "responses": ["a", "b"], "scores": [1.0, 1.0]}) + "\n"
                   + json.dumps({"prompt": "p", "responses": ["a"], "scores": [1.0, 0.0]}) + "\n"
                   + json.dumps({"prompt": "p", "responses": ["a", "b"], "scores": [1.0, 0.0]}) + "\n")
    loaded = load_stage_data(cfg(bad, on_bad_row=OnBadRow.skip), "group_pref")
    assert len(loaded.train) == 1
    assert set(loaded.drops.reasons) == {"no lower-scored response in group", "wrong type in field 'responses'"}


def test_sft_on_preference_pairs_trains_on_chosen_via_the_chain_rename() -> None:
    # what stage=sft_then_dpo's first stage does with prompt/chosen/rejected files
    rows = load_stage_data(cfg(DATA / "preference.jsonl", columns={"chosen": "completion"}), "sft").train
    assert rows[0]["completion"] == [{"role": "assistant", "content": "A cat."}]


def test_hub_name_loads_offline_from_a_local_copy(tmp_path: Path) -> None:
    # a folder is a `datasets` hub-style source (load_dataset(folder)), the same code path as a hub name
    folder = tmp_path / "s1k_copy"
    folder.mkdir()
    (folder / "train.jsonl").write_text((FORMATS / "s1k.jsonl").read_text())
    loaded = load_stage_data(cfg(folder, format=DataFormat.s1k), "grpo")
    assert loaded.train["answer"][1] == "4"
