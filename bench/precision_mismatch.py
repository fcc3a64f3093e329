"""How far bf16 log-probs are from fp32 ones on the same sampled completions (issue 25, the precision part).

    python bench/precision_mismatch.py [--case grpo_cpu] [--groups 4] [--new-tokens 32]

The case's model (grpo_cpu: SmolLM2-135M-Instruct, the embedded default's) and real prompts (its data and chat
template, `num_generations` completions each), completions sampled once in fp32 (temperature 1, no top-k). Every
completion token is then scored three ways, log-softmax always in fp32: fp32 weights and matmuls (today's CPU
training), bf16 autocast over fp32 weights (what `hw.precision=bf16` training does), bf16 weights (what a bf16
generation engine samples from). A policy-gradient step treats the sampler's log-probs as the old policy's where it
does not rescore; the per-token ratio exp(train - sampler) is then what TRL's importance-sampling correction would
reweight. Prints one line per pair and saves JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

from cases import CASES, REPO

sys.path.insert(0, str(REPO))  # this checkout's pipeline, not another install of it


def token_logps(model, ids, mask, width: int, autocast: bool):
    import torch

    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids, attention_mask=mask).logits[:, width - 1 : -1]
    return logits.float().log_softmax(-1).gather(-1, ids[:, width:, None])[..., 0]


def compare(name: str, train, sampler, keep) -> dict:
    """Per-token |log-prob difference| and the per-token / per-sequence importance ratios exp(train - sampler)."""
    import torch

    delta = (train - sampler) * keep
    tokens = delta[keep.bool()]
    sequence = delta.sum(1)
    quantiles = torch.tensor([0.5, 0.99])
    out = {
        "mean_abs_token": float(tokens.abs().mean()), "p99_abs_token": float(tokens.abs().quantile(0.99)),
        "max_abs_token": float(tokens.abs().max()),
        "token_ratio_outside_0.8_1.25": float(((tokens.exp() < 0.8) | (tokens.exp() > 1.25)).float().mean()),
        "sequence_abs_log_ratio_p50_p99": [float(q) for q in sequence.abs().quantile(quantiles)],
        "sequence_ratio_min_max": [float(sequence.exp().min()), float(sequence.exp().max())],
    }
    print(f"{name}: |dlogp| per token mean {out['mean_abs_token']:.4f}, p99 {out['p99_abs_token']:.4f}, max "
          f"{out['max_abs_token']:.3f}; tokens with ratio outside [0.8, 1.25]: "
          f"{100 * out['token_ratio_outside_0.8_1.25']:.2f}%; sequence |log ratio| p50/p99 "
          f"{out['sequence_abs_log_ratio_p50_p99'][0]:.3f}/{out['sequence_abs_log_ratio_p50_p99'][1]:.3f}, "
          f"ratio {out['sequence_ratio_min_max'][0]:.3f}-{out['sequence_ratio_min_max'][1]:.3f}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="grpo_cpu", choices=["grpo_cpu", "grpo_cpu_longprompt"])
    parser.add_argument("--groups", type=int, default=4, help="prompts (each with num_generations completions)")
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()

    import torch
    from baseline import workload
    from run import save
    from shared_prefix_lever import generation_batch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.train.model.build import model_dir

    run = workload([*CASES[args.case].ours, f"paths.cache_dir={REPO / '.cache' / 'pipeline'}"])
    path = model_dir(run.model, run.paths.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch, _ = generation_batch(run, tokenizer, 1, run.seed, args.groups)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    torch.manual_seed(run.seed)
    started = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"], do_sample=True,
                             top_k=0, max_new_tokens=args.new_tokens, pad_token_id=tokenizer.pad_token_id)
    print(f"sampled {len(out)} completions in {time.perf_counter() - started:.1f} s", flush=True)
    width = batch["prompt_ids"].size(1)
    # completion tokens up to and including the first EOS; the rest is padding
    finished = (out[:, width:] == tokenizer.eos_token_id).long().cumsum(1)
    keep = ((finished == 0) | ((finished == 1) & (out[:, width:] == tokenizer.eos_token_id))).float()
    mask = torch.cat([batch["prompt_mask"], keep.long()], 1)
    fp32 = token_logps(model, out, mask, width, autocast=False)
    autocast = token_logps(model, out, mask, width, autocast=True)
    bf16 = token_logps(copy.deepcopy(model).to(torch.bfloat16), out, mask, width, autocast=False)
    results = {
        "train bf16 autocast vs sampler fp32": compare("train bf16 autocast vs sampler fp32", autocast, fp32, keep),
        "train fp32 vs sampler bf16 weights": compare("train fp32 vs sampler bf16 weights", fp32, bf16, keep),
        "train bf16 autocast vs sampler bf16 weights": compare("train bf16 autocast vs sampler bf16 weights",
                                                               autocast, bf16, keep),
    }
    save({"case": f"{args.case}-precision_mismatch", "date": time.strftime("%Y%m%d-%H%M%S"),
          "notes": f"{len(out)} completions x <= {args.new_tokens} tokens ({int(keep.sum())} scored), fp32 sampled",
          "results": results})


if __name__ == "__main__":
    main()
