"""Held-out accuracy: greedy, batched generation scored with the stage's answer check (`is_correct`).

Measured before and after training (`stage_accuracy`, called by every stage) and on a finished run
(python -m pipeline.tools.evaluate); the monitoring callback shows greedy completions through `generate_greedy`.
A run with tools or an environment plays each problem as its rollouts did (episodes.py: multi-turn, the same tools
under the same limits) unless eval.tools=false; the answer is read from the episode's last assistant turn.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pipeline.config.derived import shards_weights
from pipeline.config.plan import RunPlan
from pipeline.rewards.answer import is_correct
from pipeline.train.levers.bf16_frozen import full_precision
from pipeline.train.levers.compact_decoding import compact_sample
from pipeline.train.levers.merged_lora import mergeable, merged_lora
from pipeline.train.levers.packed_linears import packed_linears
from pipeline.train.levers.prefill_once import prefill_once
from pipeline.train.model.build import partitioned as is_sharded
from pipeline.train.model.templates import chat_text
from pipeline.train.observe.episodes import EvalAgent, episode_records, eval_agent
from pipeline.train.runtime.fsdp2 import is_fsdp2, reshard

log = logging.getLogger(__name__)


@dataclass
class Accuracy:
    correct: int
    total: int

    @property
    def value(self) -> float:
        return self.correct / self.total if self.total else 0.0


@torch.no_grad()
def heldout_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Dataset,
    *,
    max_new_tokens: int,
    batch_size: int,
    predictions_path: Path | None = None,
    score: Callable[[str, str], bool] = is_correct,
    agent: EvalAgent | None = None,
) -> Accuracy:
    """Fraction of `problems` ({prompt: messages, answer}) whose greedy completion (with `agent`: episode) holds
    the right answer."""
    records = heldout_records(model, tokenizer, problems, max_new_tokens=max_new_tokens, batch_size=batch_size,
                              score=score, agent=agent)
    if predictions_path is not None:
        predictions_path.parent.mkdir(parents=True, exist_ok=True)
        predictions_path.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))
    return Accuracy(sum(r["correct"] for r in records), len(records))


def heldout_records(model, tokenizer, problems: Dataset, *, max_new_tokens: int, batch_size: int,
                    score: Callable[[str, str], bool] = is_correct, samples: int = 0,
                    temperature: float = 1.0, agent: EvalAgent | None = None) -> list[dict]:
    """Per problem {prompt, answer, completion, correct}: the greedy completion, batched; with samples=k also
    `sampled`: k sampled completions (the eval-during-training callback scores pass@k / maj@k from them). With
    `agent`, the greedy episode instead (plus trajectory, turns, tool_calls, tool_failures, the environment's
    reward); a row without an answer (an environment's own task) is correct when that reward is positive."""
    if agent is not None:
        records = episode_records(model, tokenizer, problems, agent, batch_size=batch_size)
        for i, r in enumerate(records):
            r["correct"] = bool(score(r["completion"], r["answer"])) if "answer" in r else r.get("reward", 0) > 0
            if samples:  # pass@k / maj@k stay single-turn (eval.tools' note)
                r["sampled"] = generate_texts(model, tokenizer, [problems[i]["prompt"]], max_new_tokens, samples,
                                              temperature)
        return records
    records = []
    starts = range(0, len(problems), batch_size)
    for start in tqdm(starts, desc="evaluate", unit="batch", disable=len(starts) < 2):
        rows = problems[start : start + batch_size]
        completions = generate_greedy(model, tokenizer, rows["prompt"], max_new_tokens)
        sampled = generate_texts(model, tokenizer, rows["prompt"], max_new_tokens, samples, temperature) \
            if samples else []
        for i, (prompt, gold, text) in enumerate(zip(rows["prompt"], rows["answer"], completions, strict=True)):
            record = {"prompt": prompt[-1]["content"], "answer": gold, "completion": text,
                      "correct": bool(score(text, gold))}
            if samples:
                record["sampled"] = sampled[i * samples : (i + 1) * samples]
            records.append(record)
    return records


def generate_greedy(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int) -> list[str]:
    """Greedy completions of chat prompts; leaves the model's train/eval mode and padding side as they were."""
    return generate_texts(model, tokenizer, prompts, max_new_tokens)


def generate_texts(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int, samples: int = 0,
                   temperature: float = 1.0) -> list[str]:
    """Completions of chat prompts: one greedy each (samples=0), else `samples` sampled ones each, grouped by
    prompt in order. Leaves the model's train/eval mode and the tokenizer's padding side as they were."""
    texts = [chat_text(tokenizer, p, generation_prompt=True) for p in prompts]
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    # Left padding keeps every prompt's last token adjacent to the tokens generated after it.
    tokenizer.padding_side = "left"
    decoding = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0,
                "num_return_sequences": samples} if samples else {
        "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        # prefill_once: the prompts' common opening (the system prompt) is computed once for the batch;
        # compact_sample: answered problems leave the batch (the trained model answers in a few tokens);
        # a LoRA adapter merged into a copy of the fp32 weights for the call (levers/merged_lora.py), and the fp32
        # Linear layers on packed copies of those weights (levers/packed_linears.py)
        sharded = is_sharded(model) or is_fsdp2(model)
        with torch.no_grad(), full_precision(model), merged_lora(model) if mergeable(model, sharded) \
                else nullcontext(), packed_linears(model, enabled=not sharded), prefill_once(model):
            out = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 custom_generate=compact_sample, **decoding)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)


def stage_accuracy(plan: RunPlan, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                   problems: Dataset | None, phase: str) -> Accuracy | None:
    """A stage's held-out accuracy `phase` ("before" / "after") training, logged and written by rank 0 (its
    completions in samples/eval_<phase>.jsonl); None where it is not measured or on other ranks."""
    # Once ZeRO-3 has partitioned the weights, each forward gathers them from every rank: generation on rank 0
    # alone would hang, so all ranks generate the same problems (generate syncs their steps); rank 0 writes.
    cfg, writes = plan.cfg, plan.dir.writes
    partitioned = shards_weights(cfg) and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
    if problems is None or not (writes or partitioned):
        return None
    if not cfg.eval.heldout:
        if phase == "before":
            log.info("held-out accuracy: not measured (eval.heldout=false; in a chain with tools, the steps that "
                     "run without them leave it to the step that runs them)")
        return None
    if phase == "before" and is_sharded(model):
        # loaded under zero.Init: no forward pass until the trainer's DeepSpeed engine gathers the shards
        log.info("held-out accuracy before training: not measured (ZeRO-3 weights are sharded until training)")
        return None
    agent = eval_agent(cfg, tokenizer)
    acc = heldout_accuracy(
        model, tokenizer, problems,
        max_new_tokens=cfg.stage.eval_max_new_tokens, batch_size=cfg.hw.eval_batch,
        predictions_path=plan.dir.samples / f"eval_{phase}.jsonl" if writes else None, agent=agent,
    )
    if is_fsdp2(model):
        reshard(model)  # before the trainer builds its optimizer over the parameters
    if not writes:
        return None
    log.info("held-out accuracy %s training%s: %.3f (%d/%d)", phase, " with tools" if agent else "", acc.value,
             acc.correct, acc.total)
    return acc
