"""The smoke settings of every experiment: its data pointed at a small fixture (hub names are not touched) and
small lengths and batches, so it runs 2 steps on the tiny model."""

from __future__ import annotations

from tests.helpers.data import DATA, FORMATS

# Small everything: a few rows, 8 generated tokens, 2 completions per prompt, greedy eval of 4 tokens.
GRPO_SMALL = ["stage.batch_size=4", "stage.num_generations=2", "stage.max_completion_length=8",
              "stage.eval_max_new_tokens=4"]
CHAIN_SMALL = ["stage.sft.batch_size=2", "stage.sft.max_length=128", "stage.sft.eval_max_new_tokens=4"]
SMOKE: dict[str, list[str]] = {
    "s1k_grpo_qwen3_1.7b": [f"data.path={FORMATS / 's1k.jsonl'}", f"data.eval_path={FORMATS / 's1k.jsonl'}",
                            "stage.warmup_steps=0", *GRPO_SMALL],
    "s1k_group_pref_qwen3_1.7b": [f"data.path={FORMATS / 'scored_groups.jsonl'}", "stage.batch_size=2",
                                  "stage.max_length=64", "stage.warmup_steps=0"],
    "gsm8k_grpo_qwen2.5_1.5b": [f"data.path={FORMATS / 'gsm8k.jsonl'}", "data.eval_split=null",
                                "data.on_bad_row=skip", "data.eval_size=1", "stage.beta=0.04", *GRPO_SMALL],
    "gsm8k_grpo_smol": [f"data.path={FORMATS / 'gsm8k.jsonl'}", "data.eval_split=null", "data.on_bad_row=skip",
                        "data.eval_size=1", "stage.logging_steps=1", *GRPO_SMALL],
    "mcq_grpo_qlora": [f"data.path={FORMATS / 'mcq.tsv'}", "data.eval_size=1", "stage.logging_steps=1", *GRPO_SMALL],
    "medical_sft_then_grpo_qwen3": [
        f"data.path={FORMATS / 'medical.jsonl'}", "data.subset=null", *CHAIN_SMALL,
        *[f"stage.grpo.{o.split('.', 1)[1]}" for o in GRPO_SMALL]],
    "medical_sft_then_grpo_qwen3_qlora": [
        f"data.path={FORMATS / 'medical.jsonl'}", "data.subset=null", *CHAIN_SMALL,
        *[f"stage.grpo.{o.split('.', 1)[1]}" for o in GRPO_SMALL]],
    "huanhuan_sft": [f"data.path={DATA / 'alpaca.json'}", "stage.batch_size=2", "stage.max_length=128",
                     "stage.logging_steps=1"],
    # the agent recipes: the calculator chain on a few products, the game on a few short games
    "calculator_sft_then_grpo_smol": [
        "data.arithmetic.num_train=8", "data.arithmetic.num_eval=2", *CHAIN_SMALL, "stage.sft.max_length=512",
        "stage.grpo.batch_size=4", "stage.grpo.num_generations=2", "stage.grpo.max_completion_length=16",
        "stage.grpo.eval_max_new_tokens=8"],
    "guess_number_sft_then_grpo_smol": [
        "data.guess_number.num_train=4", *CHAIN_SMALL, "stage.sft.max_length=768", "env.placeholder_rows=8",
        *[f"stage.grpo.{o.split('.', 1)[1]}" for o in GRPO_SMALL], "stage.grpo.max_completion_length=16"],
    "gsm8k_grpo_python_qwen2.5_1.5b": [f"data.path={FORMATS / 'gsm8k.jsonl'}", "data.eval_split=null", "hw=cpu",
                                       "data.on_bad_row=skip", "data.eval_size=1", "eval.every_steps=0", *GRPO_SMALL],
    "zhihu_dpo": [f"data.path={DATA / 'preference.jsonl'}", *CHAIN_SMALL, "stage.dpo.batch_size=2",
                  "stage.dpo.max_length=128"],
}
