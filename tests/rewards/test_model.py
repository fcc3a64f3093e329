"""The reward-model term on a tiny sequence-classification model built in code (SmolLM2's tokenizer): batched scores,
a RewardTrainer LoRA run dir, refused classifiers and validation (GRPO on it: tests/e2e/test_rewards.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from pipeline.config.checks import to_run_config
from pipeline.rewards import RewardSetupError, build_reward_funcs
from pipeline.rewards.model import load_reward_model, scored_text
from tests.helpers.runs import compose_config
from tests.helpers.tiny_models import TOKENIZER, tiny_rm

PROMPTS = [[{"role": "user", "content": f"What is {a} + {a}?"}] for a in (1, 22, 333, 4444, 5, 66)]
COMPLETIONS = [[{"role": "assistant", "content": text}] for text in ("2", "44", "It is 666.", "8888", "9", "")]


def rm_scores(path: Path | str, prompts=PROMPTS, completions=COMPLETIONS, **fields) -> list[float]:
    funcs, _ = build_reward_funcs({"rm": {"function": "reward_model", "model": str(path), **fields}})
    return funcs[0](prompts=prompts, completions=completions)


def alone(model, tokenizer, prompt, completion) -> float:
    batch = tokenizer(scored_text(tokenizer, prompt, completion), return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        return model(**batch).logits[0, 0].item()


def test_batched_scores_equal_each_row_alone_through_the_rm_chat_template(rm_dir: Path) -> None:
    scores = rm_scores(rm_dir, batch_size=4)  # 6 rows: a batch of 4 and one of 2, padded differently
    model, tokenizer = load_reward_model(str(rm_dir), "cpu")
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    expected = [alone(model, tokenizer, p, c) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    assert scores == pytest.approx(expected, abs=1e-5) and len(set(scores)) == 6
    assert scored_text(tokenizer, PROMPTS[1], COMPLETIONS[1]).endswith("<|im_start|>assistant\n44<|im_end|>\n")
    # plain text rows: prompt + completion + EOS, as TRL's RewardTrainer trained on them
    assert scored_text(tokenizer, "Q: 1+1 ", "2") == f"Q: 1+1 2{tokenizer.eos_token}"
    assert rm_scores(rm_dir, batch_size=1) == pytest.approx(scores, abs=1e-5)


def test_a_reward_trainer_lora_run_dir_loads_and_scores_as_the_trained_model(rm_dir: Path, tmp_path: Path) -> None:
    """What stage=rm leaves: TRL's RewardTrainer with LoRA saves an adapter (+ the score head) and the tokenizer."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import RewardConfig, RewardTrainer

    def turn(a: int, answer: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"{a} + {a}?"}, {"role": "assistant", "content": answer}]

    pairs = Dataset.from_dict({"chosen": [turn(a, str(2 * a)) for a in range(8)],
                               "rejected": [turn(a, "no idea") for a in range(8)]})
    run = tmp_path / "rm_run"
    args = RewardConfig(output_dir=str(run), max_steps=2, per_device_train_batch_size=4, learning_rate=5e-2,
                        use_cpu=True, bf16=False, report_to=[], save_strategy="no")
    trainer = RewardTrainer(model=str(rm_dir), args=args, train_dataset=pairs,
                            processing_class=AutoTokenizer.from_pretrained(TOKENIZER),
                            peft_config=LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"]))
    trainer.train()
    trainer.save_model(str(run / "final"))
    assert (run / "final" / "adapter_config.json").is_file() and not (run / "final" / "config.json").exists()

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    expected = [alone(trainer.model.eval(), tokenizer, p, c) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    assert rm_scores(run) == pytest.approx(expected, abs=1e-4)  # the run dir: its final/ adapter, merged
    assert expected != pytest.approx(rm_scores(rm_dir), abs=1e-3)  # ... not the untrained base
    bare = tmp_path / "adapter_only"  # an adapter saved without its tokenizer reads its base model's
    bare.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (bare / name).write_bytes((run / "final" / name).read_bytes())
    assert rm_scores(bare) == pytest.approx(expected, abs=1e-4)
    chosen = rm_scores(run, prompts=[turn(3, "")[:1]] * 2, completions=[turn(3, "6")[1:], turn(3, "no idea")[1:]])
    assert chosen[0] > chosen[1]  # two steps already rank the right answer first


def test_a_classifier_with_two_labels_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RewardSetupError, match="reward term 'rm': the reward model .* does not load: ValueError: .* "
                                               "has num_labels=2; a reward model outputs one score"):
        rm_scores(tiny_rm(tmp_path / "two", num_labels=2))


@pytest.mark.parametrize(("overrides", "message"), [
    ([], "reward.terms.rm (reward_model) needs model: set reward.terms.rm.model=PATH"),
    (["reward.terms.rm.model=/no/such/dir"], "reward.terms.rm.model=/no/such/dir: no model there"),
    (["reward.terms.rm.model=org/rm", "reward.terms.rm.batch_size=0"], "reward.terms.rm.batch_size=0 must be >= 1"),
    (["reward.terms.rm.model=org/rm", "+reward.terms.rm.kwargs.x=1"],
     "reward.terms.rm.kwargs: a reward_model term takes none"),
    (["reward.terms.rm.model=org/rm", "reward.terms.rm.timeout_s=3"],
     "reward.terms.rm.timeout_s is not read by reward 'reward_model' (only by judge terms)"),
])
def test_validation_refuses_a_reward_model_term_it_cannot_load(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        to_run_config(compose_config(["reward=model", *overrides]))


def test_validation_accepts_a_local_reward_model(rm_dir: Path) -> None:
    cfg = to_run_config(compose_config(["reward=model", f"reward.terms.rm.model={rm_dir}"]))
    assert cfg.reward.terms["rm"].model == str(rm_dir)
