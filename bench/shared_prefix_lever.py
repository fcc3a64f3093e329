"""The shared-prefix levers on their own, alternating, medians: one optimizer step's training forward + backward
over a generation batch, per-row (TRL's layout) vs shared prefix, at several micro-batch sizes; and one generation,
prompts prefilled per row vs once per distinct prompt, finished rows kept vs dropped. dpo_cpu: one optimizer step
of TRL's DPO loss (policy forward + backward, reference forward) over the case's first batch of pairs, micro-batch
sizes in pairs.

    python bench/shared_prefix_lever.py grpo_cpu_longprompt [--repeats 2] [--layouts rows:2,shared:8,...]
    python bench/shared_prefix_lever.py grpo_cpu_longprompt --layouts plain:128,prefill:128
    python bench/shared_prefix_lever.py grpo_cpu --layouts stop:64,compact:64
    python bench/shared_prefix_lever.py dpo_cpu --layouts rows:2,shared:2
    python bench/shared_prefix_lever.py grpo_cpu --groups 2 --layouts mask_score:4,flex_score:4,flexc_score:4

Real prompts of the case (its data, chat template, batch, group size), random completion tokens of the case's full
length (a worst case for the lever: completions that stop early shrink the per-row and the packed layout alike).
Generation is not part of this measurement. Prints one line per layout and saves JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time

from cases import CASES, REPO

sys.path.insert(0, str(REPO))  # this checkout's pipeline, not another install of it


def generation_batch(run, tokenizer, completion: int, seed: int, groups: int | None) -> dict:
    import torch

    from pipeline.data.loader import load_stage_data

    rows = load_stage_data(run.data, "grpo", run.seed).train
    size = run.stage.num_generations
    groups = min(groups or run.stage.batch_size // size, run.stage.batch_size // size)
    prompts = [tokenizer.apply_chat_template(rows[i]["prompt"], add_generation_prompt=True, tokenize=True)["input_ids"]
               for i in range(groups)]
    width = max(map(len, prompts))
    gen = torch.Generator().manual_seed(seed)
    prompt_ids = torch.full((groups * size, width), tokenizer.pad_token_id)
    prompt_mask = torch.zeros(groups * size, width, dtype=torch.long)
    for g, prompt in enumerate(prompts):
        prompt_ids[g * size : (g + 1) * size, width - len(prompt):] = torch.tensor(prompt)
        prompt_mask[g * size : (g + 1) * size, width - len(prompt):] = 1
    order = torch.randperm(groups * size, generator=gen)  # TRL shuffles a generation batch before splitting it
    completion_ids = torch.randint(100, len(tokenizer), (groups * size, completion), generator=gen)
    return {"prompt_ids": prompt_ids[order], "prompt_mask": prompt_mask[order], "completion_ids": completion_ids,
            "completion_mask": torch.ones_like(completion_ids),
            "advantages": torch.randn(groups * size, generator=gen),
            "num_items_in_batch": torch.tensor(groups * size * completion)}, [len(p) for p in prompts]


def step_seconds(trainer, batch: dict, layout: str, micro: int) -> float:
    from trl import GRPOTrainer

    from pipeline.train.levers.shared_prefix import group_micro_batches

    trainer.levers = dataclasses.replace(trainer.levers, shared_prefix=layout == "shared")
    rows = len(batch["prompt_ids"])
    chunks = [{k: v if v.ndim == 0 else v[i : i + micro] for k, v in batch.items()} for i in range(0, rows, micro)]
    if trainer.levers.shared_prefix:
        chunks = group_micro_batches(chunks)
    trainer.current_gradient_accumulation_steps = len(chunks)
    trainer.args.steps_per_generation = len(chunks)
    trainer.model.zero_grad()
    started = time.perf_counter()
    for chunk in chunks:
        GRPOTrainer.compute_loss(trainer, trainer.model, chunk).backward()
    return time.perf_counter() - started


def score_seconds(trainer, batch: dict, layout: str, micro: int) -> float:
    """One no-grad log-prob forward of the batch's rows, whole groups per chunk of `micro` rows (TRL's old-policy /
    reference forward), the packed rows through the 4-D mask (`mask_score`), FlexAttention's block mask eager as the
    pipeline runs it on CPU (`flex_score`), or compiled (`flexc_score`: its first call, compiling, is timed alone).
    A training step cannot take FlexAttention on CPU: torch has no CPU backward for it (levers/prefix_flex.py)."""
    import torch
    from transformers import PreTrainedModel

    from pipeline.train.levers import prefix_flex
    from pipeline.train.levers.prefix_mask import group_rows

    trainer.levers = dataclasses.replace(trainer.levers, shared_prefix=True)
    model = trainer.model
    base = next(m for m in model.modules() if isinstance(m, PreTrainedModel))
    base.set_attn_implementation("sdpa" if layout == "mask_score" else prefix_flex.DISPATCH)
    prefix_flex.CPU_STANCE = "default" if layout == "flexc_score" else "force_eager"
    order = torch.tensor([r for g in group_rows(batch["prompt_ids"], batch["prompt_mask"]) for r in g])
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)[order]
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)[order]
    started = time.perf_counter()
    with torch.no_grad():
        trainer._get_per_token_logps_and_entropies(model, ids, mask, batch["completion_ids"].size(1), batch_size=micro)
    seconds = time.perf_counter() - started
    base.set_attn_implementation("sdpa")  # a training step next must not meet the block mask (no CPU backward)
    return seconds


def generate_seconds(trainer, batch: dict, layout: str, new_tokens: int) -> float:
    """One sampled generation of the batch's prompts (TRL's call: ids, mask, config). `plain` / `prefill`: prompts
    prefilled per row / once per distinct prompt, every row runs the full length (no EOS stop). `stop` / `compact`:
    rows stop at EOS, in generate's own loop (finished rows ride along) / with finished rows dropped from the batch;
    both from the same seed, so they sample the same tokens until the first row ends."""
    import torch
    from transformers import GenerationConfig

    from pipeline.train.levers.compact_decoding import drop_finished_rows
    from pipeline.train.levers.prefill_once import prefill_once

    model = trainer.accelerator.unwrap_model(trainer.model)
    tokenizer = trainer.processing_class
    full = {"min_new_tokens": new_tokens} if layout in ("plain", "prefill") else {"eos_token_id": trainer.eos_token_ids}
    config = GenerationConfig(do_sample=True, max_new_tokens=new_tokens, top_k=0, pad_token_id=tokenizer.pad_token_id,
                              **full)
    wrap = {"prefill": prefill_once, "compact": drop_finished_rows}.get(layout)
    torch.manual_seed(0)
    started = time.perf_counter()
    with torch.no_grad(), wrap(model) if wrap else torch.no_grad():
        out = model.generate(input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"],
                             generation_config=config)
    seconds = time.perf_counter() - started
    completions = out[:, batch["prompt_ids"].size(1):]
    lengths = [(row != tokenizer.pad_token_id).sum().item() for row in completions]
    print(f"  {layout}: completions {min(lengths)}-{max(lengths)} tokens, mean {sum(lengths) / len(lengths):.1f}")
    return seconds


def dpo_step_seconds(trainer, pairs: list[dict], layout: str, micro: int) -> float:
    """One optimizer step over `pairs` in micro-batches of `micro` pairs, each collated as TRL collates it."""
    trainer.shared_prefix = layout == "shared"
    trainer.model.zero_grad()
    started = time.perf_counter()
    for start in range(0, len(pairs), micro):
        batch = trainer.data_collator(pairs[start : start + micro])
        trainer._compute_loss(trainer.model, batch, return_outputs=False).backward()
    return time.perf_counter() - started


def dpo_trainer(run, path: str, tmp: str):
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig

    from pipeline.data.loader import load_stage_data
    from pipeline.train.levers.shared_prefix_dpo import SharedPrefixDPOTrainer

    return SharedPrefixDPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
        processing_class=AutoTokenizer.from_pretrained(path),
        args=DPOConfig(output_dir=tmp, use_cpu=True, bf16=False, report_to="none", gradient_checkpointing=False,
                       max_length=run.stage.max_length, beta=run.stage.beta),
        train_dataset=load_stage_data(run.data, "dpo", run.seed).train,
        peft_config=LoraConfig(r=run.peft.r, lora_alpha=run.peft.alpha, target_modules=run.peft.target_modules,
                               lora_dropout=0.0, task_type="CAUSAL_LM"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=["grpo_cpu", "grpo_cpu_longprompt", "dpo_cpu"])
    parser.add_argument("--repeats", type=int, default=2)
    # rows|shared:<micro-batch> time a training step; plain|prefill|stop|compact:<new tokens> time one generation;
    # mask_score|flex_score|flexc_score:<rows per chunk> one no-grad log-prob forward
    parser.add_argument("--layouts", default="rows:2,shared:2,shared:G,rows:G")
    parser.add_argument("--groups", type=int, default=None, help="prompts measured (default: the case's all); "
                        "the lever's ratio is per group, a contended machine needs the shorter run")
    args = parser.parse_args()

    import torch
    from baseline import workload
    from datasets import Dataset
    from peft import LoraConfig
    from run import save
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from pipeline.train.levers.grpo_trainer import LeveredGRPOTrainer
    from pipeline.train.model.build import model_dir

    case = CASES[args.case]
    run = workload([*case.ours, f"paths.cache_dir={REPO / '.cache' / 'pipeline'}"])
    path = model_dir(run.model, run.paths.cache_dir)
    if case.stage == "dpo":
        return dpo_main(args, case, run, path, save)
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch, prompt_lengths = generation_batch(run, tokenizer, run.stage.max_completion_length, run.seed,
                                             args.groups)
    g = run.stage.num_generations
    layouts = [(name, int(micro.replace("G", str(g)))) for name, micro in
               (item.split(":") for item in args.layouts.split(","))]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = LeveredGRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), processing_class=tokenizer,
            args=GRPOConfig(output_dir=tmp, use_cpu=True, bf16=False, report_to="none", num_generations=g,
                            per_device_train_batch_size=g, gradient_checkpointing=False),
            reward_funcs=lambda completions, **_: [0.0] * len(completions),
            train_dataset=Dataset.from_list([{"prompt": "x"}]),
            peft_config=LoraConfig(r=run.peft.r, lora_alpha=run.peft.alpha, target_modules=run.peft.target_modules,
                                   lora_dropout=0.0, task_type="CAUSAL_LM"),
        )
        trainer.model.train()
        warm = {k: v if v.ndim == 0 else v[:2] for k, v in batch.items()}
        step_seconds(trainer, warm, "rows", 2)  # warm-up (allocator, thread pools) on 2 rows only
        times: dict[str, list[float]] = {f"{n}:{m}": [] for n, m in layouts}
        for _ in range(args.repeats):
            for name, micro in layouts:
                measure = (generate_seconds if name in ("plain", "prefill", "stop", "compact") else
                           score_seconds if name.endswith("_score") else step_seconds)
                times[f"{name}:{micro}"].append(measure(trainer, batch, name, micro))
                print(f"{name}:{micro} {times[f'{name}:{micro}'][-1]:.1f} s", flush=True)
    report(save, case, args.repeats, times, 1,
           f"training forward+backward of one step, prompts {prompt_lengths} tokens, "
           f"{len(batch['prompt_ids'])} rows x {run.stage.max_completion_length} completion tokens")


def dpo_main(args, case, run, path: str, save) -> None:
    layouts = [(name, int(micro)) for name, micro in (item.split(":") for item in args.layouts.split(","))]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = dpo_trainer(run, path, tmp)
        trainer.model.train()
        pairs = [trainer.train_dataset[i] for i in range(run.stage.batch_size)]
        dpo_step_seconds(trainer, pairs[:2], "rows", 2)  # warm-up (allocator, thread pools) on 2 pairs only
        times: dict[str, list[float]] = {f"{n}:{m}": [] for n, m in layouts}
        for _ in range(args.repeats):
            for name, micro in layouts:
                times[f"{name}:{micro}"].append(dpo_step_seconds(trainer, pairs, name, micro))
                print(f"{name}:{micro} {times[f'{name}:{micro}'][-1]:.2f} s", flush=True)
    prompts = [len(p["prompt_ids"]) for p in pairs]
    answers = [len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs]
    report(save, case, args.repeats, times, 2,
           f"DPO loss forward+backward (+ reference forward) of one step, {len(pairs)} pairs, prompts "
           f"{min(prompts)}-{max(prompts)} tokens, chosen+rejected {min(answers)}-{max(answers)} tokens")


def report(save, case, repeats: int, times: dict[str, list[float]], decimals: int, notes: str) -> None:
    """Each layout's median and its speed-up over rows:2 (or the first layout) as table rows; the JSON saved."""
    medians = {key: statistics.median(v) for key, v in times.items()}
    reference = medians.get("rows:2") or next(iter(medians.values()))
    for key, value in medians.items():
        print(f"| {key} | {value:.{decimals}f} s | {reference / value:.2f}x |")
    save({"case": f"{case.name}-shared_prefix_lever", "date": time.strftime("%Y%m%d-%H%M%S"), "notes": notes,
          "repeats": repeats, "seconds": times, "median_s": medians})


if __name__ == "__main__":
    main()
