"""torch's CPU SDPA in bf16 against fp32 at the embedded default's shapes: why a bf16 run's attention is cast up
(pipeline/train/levers/fp32_attention.py). Many short calls, alternating, medians.

    python bench/attention_precision_cpu.py [--repeats 50]

SmolLM2-135M's attention (9 query heads over 3 key/value heads, head dim 64): a decode step of 32 rows over 56 cached
tokens (no grad), and a training forward + backward over 4 packed rows of 153 tokens with a 4-D mask. Three ways:
fp32 inputs, bf16 inputs, and bf16 inputs cast to fp32 for the call and back (what the lever does; the casts are
in the time). Prints the medians and saves JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from cases import REPO

sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F
    from run import save

    generator = torch.Generator().manual_seed(0)

    def inputs(rows: int, queries: int, keys: int, dtype: torch.dtype, grad: bool) -> tuple[torch.Tensor, ...]:
        return tuple(torch.randn(rows, heads, length, 64, generator=generator).to(dtype).requires_grad_(grad)
                     for heads, length in ((9, queries), (3, keys), (3, keys)))

    def call(q, k, v, mask, upcast: bool, backward: bool) -> None:
        a, b, c = (t.float() for t in (q, k, v)) if upcast else (q, k, v)
        out = F.scaled_dot_product_attention(a, b, c, attn_mask=mask, enable_gqa=True).to(q.dtype)
        if backward:
            out.float().sum().backward()

    decode_mask = torch.ones(32, 1, 1, 56, dtype=torch.bool)
    train_mask = torch.ones(153, 153, dtype=torch.bool).tril().expand(4, 1, 153, 153)
    ways = {"fp32": (torch.float32, False), "bf16": (torch.bfloat16, False),
            "bf16 cast to fp32": (torch.bfloat16, True)}
    shapes = {"decode step (32 x 1 query, 56 keys), no grad": (32, 1, 56, decode_mask, False),
              "training row (4 x 153, 4-D mask), forward + backward": (4, 153, 153, train_mask, True)}
    results = {}
    for shape, (rows, queries, keys, mask, backward) in shapes.items():
        tensors = {way: inputs(rows, queries, keys, dtype, backward) for way, (dtype, _) in ways.items()}
        times = {way: [] for way in ways}
        with torch.set_grad_enabled(backward):
            for _ in range(3):  # warm-up
                for way, (_, upcast) in ways.items():
                    call(*tensors[way], mask, upcast, backward)
            for _ in range(args.repeats):
                for way, (_, upcast) in ways.items():
                    started = time.perf_counter()
                    call(*tensors[way], mask, upcast, backward)
                    times[way].append(time.perf_counter() - started)
        results[shape] = {way: 1e3 * statistics.median(t) for way, t in times.items()}
        print(shape + ": " + ", ".join(f"{way} {ms:.3f} ms" for way, ms in results[shape].items()), flush=True)
    save({"case": "attention_precision_cpu", "date": time.strftime("%Y%m%d-%H%M%S"),
          "notes": f"median of {args.repeats} alternating calls, torch {torch.__version__}", "results": results})


if __name__ == "__main__":
    main()
