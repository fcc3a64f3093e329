"""The floor under an exact speed-up of `sft_cpu`: how long a step's matrix products alone take on this CPU.

    python bench/sft_floor_cpu.py [--rows 480] [--repeats 5]

A LoRA step on a frozen base must at least multiply every token through every frozen Linear twice (the forward,
and the backward's input gradient; no weight gradient), and the LM head over the labelled tokens twice. This times
exactly those products (torch.matmul, the shapes `sft_cpu` runs: SmolLM2-135M, micro-batches of 2 rows packed
without padding, 8 rows a step) in fp32 and in bf16, and leaves out everything else a step does (attention, norms,
activations, the adapter, the loss, the optimizer). Row lengths are GSM8K's question -> answer under SmolLM2's chat
template, the mean over the first --rows rows. Set against `sft_cpu`'s measured step times (bench/results), it says
which speed-up goal an exact path can reach at all.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from cases import GSM8K, REPO

sys.path.insert(0, str(REPO))

HIDDEN, INTERMEDIATE, LAYERS, KV, VOCAB = 576, 1536, 30, 192, 49152
# (out, in) of each frozen Linear in one decoder layer: q, k, v, o, gate, up, down
LAYER_LINEARS = [(HIDDEN, HIDDEN), (KV, HIDDEN), (KV, HIDDEN), (HIDDEN, HIDDEN),
                 (INTERMEDIATE, HIDDEN), (INTERMEDIATE, HIDDEN), (HIDDEN, INTERMEDIATE)]
ROWS_PER_STEP, ROWS_PER_MICRO = 8, 2


def row_lengths(n_rows: int) -> tuple[float, float]:
    """Mean tokens per row and mean labelled (completion) tokens per row."""
    from transformers import AutoTokenizer

    # the embedded model's converted copy, which any pipeline run on it leaves in the cache
    cached = [d for d in (REPO / ".cache" / "pipeline").glob("smollm2_135m-*") if d.is_dir()]
    if not cached:
        raise SystemExit(f"no converted SmolLM2 in {REPO / '.cache' / 'pipeline'}: run `make run` once first")
    model_dir = cached[0]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    totals, labelled = [], []
    with GSM8K.open() as rows:
        for line, _ in zip(rows, range(n_rows), strict=False):
            row = json.loads(line)
            prompt = [{"role": "user", "content": row["question"]}]
            whole = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": row["answer"]}],
                                                  return_dict=False)
            opening = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=False)
            totals.append(len(whole))
            labelled.append(len(whole) - len(opening))
    return statistics.mean(totals), statistics.mean(labelled)


def product_seconds(m: int, k: int, n: int, dtype, repeats: int) -> float:
    """Median seconds of an [m, k] @ [k, n] product."""
    import torch

    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def step_floor(tokens: float, labelled: float, dtype, repeats: int) -> dict[str, float]:
    micro = round(tokens * ROWS_PER_MICRO)
    body = 0.0
    for out_f, in_f in LAYER_LINEARS:
        # forward x @ W.T, backward's input gradient grad @ W
        body += product_seconds(micro, in_f, out_f, dtype, repeats)
        body += product_seconds(micro, out_f, in_f, dtype, repeats)
    body *= LAYERS * ROWS_PER_STEP // ROWS_PER_MICRO
    head_rows = round(labelled * ROWS_PER_MICRO)
    head = product_seconds(head_rows, HIDDEN, VOCAB, dtype, repeats) + product_seconds(head_rows, VOCAB, HIDDEN,
                                                                                        dtype, repeats)
    head *= ROWS_PER_STEP // ROWS_PER_MICRO
    flops = 4 * (tokens * sum(o * i for o, i in LAYER_LINEARS) * LAYERS + labelled * HIDDEN * VOCAB) * ROWS_PER_STEP
    return {"body_s": body, "lm_head_s": head, "floor_s": body + head, "gflop": flops / 1e9,
            "gflop_per_s": flops / 1e9 / (body + head)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch
    from run import save

    tokens, labelled = row_lengths(args.rows)
    print(f"GSM8K rows: {tokens:.0f} tokens, {labelled:.0f} labelled, mean of {args.rows}")
    results = {name: step_floor(tokens, labelled, dtype, args.repeats)
               for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    for name, r in results.items():
        print(f"{name}: products alone {r['floor_s']:.2f} s a step (body {r['body_s']:.2f} + LM head "
              f"{r['lm_head_s']:.2f}), {r['gflop']:.0f} GFLOP at {r['gflop_per_s']:.0f} GFLOP/s")
    save({"case": "sft_floor_cpu", "date": time.strftime("%Y%m%d-%H%M%S"), "rows": args.rows,
          "tokens_per_row": tokens, "labelled_per_row": labelled, "threads": torch.get_num_threads(),
          "results": results})


if __name__ == "__main__":
    main()
