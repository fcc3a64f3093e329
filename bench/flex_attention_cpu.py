"""One attention call over packed shared-prefix rows on CPU: SDPA with the dense 4-D mask against FlexAttention with
the block mask, eager and compiled; no-grad (torch has no CPU backward for FlexAttention). Many short calls,
alternating, medians: steadier on a contended machine than whole forwards.

    python bench/flex_attention_cpu.py [--groups 2] [--group-size 4] [--prompt 40] [--completion 64] [--repeats 20]

Shapes of SmolLM2-135M's attention (9 query heads, 3 key/value heads, head dim 64), fp32; the rows packed by
`prefix_mask.pack` (one packed row per prompt). Prints the medians and saves JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from cases import REPO

sys.path.insert(0, str(REPO))  # this checkout's pipeline, not another install of it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in (("groups", 2), ("group-size", 4), ("prompt", 40), ("completion", 64), ("repeats", 20)):
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()

    import torch
    from run import save
    from torch.nn.attention.flex_attention import flex_attention
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    from pipeline.train.levers.prefix_flex import block_mask
    from pipeline.train.levers.prefix_mask import pack

    rows, width = args.groups * args.group_size, args.prompt + args.completion
    ids = torch.randint(5, 1000, (rows, width))
    for g in range(args.groups):  # each group's rows share their prompt
        ids[g * args.group_size : (g + 1) * args.group_size, : args.prompt] = ids[g * args.group_size, : args.prompt]
    packed = pack(ids, torch.ones_like(ids), args.completion)
    n, size = packed.input_ids.shape
    q = torch.randn(n, 9, size, 64)
    k, v = torch.randn(n, 3, size, 64), torch.randn(n, 3, size, 64)
    dense, blocks = packed.attention_mask(None), block_mask(packed)
    compiled = torch.compile(flex_attention)
    started = time.perf_counter()
    with torch.no_grad():
        compiled(q, k, v, block_mask=blocks, enable_gqa=True)
    compile_s = time.perf_counter() - started
    calls = {
        "sdpa_4d_mask": lambda: sdpa(q, k, v, attn_mask=dense, enable_gqa=True),
        "flex_eager": lambda: flex_attention(q, k, v, block_mask=blocks, enable_gqa=True),
        "flex_compiled": lambda: compiled(q, k, v, block_mask=blocks, enable_gqa=True),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.no_grad():
        calls["flex_eager"]()  # warm-up: the eager path's first call traces its mask
        for _ in range(args.repeats):
            for name, call in calls.items():
                started = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - started)
    # what a training run meets: every step's packed width is new (completions end at different lengths)
    first_calls = {}
    for completion in range(args.completion - 4, args.completion - 17, -4):
        shorter = pack(ids[:, : args.prompt + completion], torch.ones_like(ids[:, : args.prompt + completion]),
                       completion)
        width = shorter.input_ids.size(1)
        started = time.perf_counter()
        with torch.no_grad():
            compiled(torch.randn(n, 9, width, 64), torch.randn(n, 3, width, 64), torch.randn(n, 3, width, 64),
                     block_mask=block_mask(shorter), enable_gqa=True)
        first_calls[width] = time.perf_counter() - started
    print("compiled flex, first call at each new packed width: " +
          ", ".join(f"{w} tokens {t:.1f} s" for w, t in first_calls.items()))
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"{rows} rows -> {n} packed rows of {size} tokens; compiling flex took {compile_s:.1f} s")
    for name, value in medians.items():
        print(f"| {name} | {1000 * value:.2f} ms | {medians['sdpa_4d_mask'] / value:.2f}x |")
    save({"case": "flex_attention_cpu", "date": time.strftime("%Y%m%d-%H%M%S"), "compile_s": compile_s,
          "first_call_s_by_width": first_calls,
          "notes": f"{rows} rows ({args.groups} prompts of {args.prompt} x {args.group_size} completions of "
                   f"{args.completion}) -> {n} x {size}, SmolLM2 attention shapes, fp32, no grad",
          "seconds": times, "median_s": medians})


if __name__ == "__main__":
    main()
