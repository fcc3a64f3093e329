"""Generation on oneDNN-packed fp32 Linear weights against plain F.linear (pipeline/train/levers/packed_linears.py),
at the embedded default's shapes. Alternating, medians.

    python bench/packed_linears_cpu.py [--repeats 5]

SmolLM2-135M's shapes (randomly initialised: speed does not depend on the values) under a LoRA adapter (r16, every
linear layer) merged for generation, as GRPO sampling and the held-out evaluation run it: (1) each Linear shape on
32 rows (a decode step's batch), (2) GRPO's sampling, 32 rows x 16 new tokens, (3) the held-out evaluation's 100
greedy rows x 16 tokens. Each generation runs both ways from the same seed; the JSON says how many tokens differ.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from cases import REPO

sys.path.insert(0, str(REPO))


def smollm2_shaped_lora():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
                         max_position_embeddings=2048)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F
    from run import save

    from pipeline.train.levers.merged_lora import merged_lora
    from pipeline.train.levers.packed_linears import packed_linears

    results: dict[str, dict] = {}
    rows = torch.randn(32, 576)
    for out_features, in_features in ((576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576)):
        layer = torch.nn.Linear(in_features, out_features, bias=False)
        x = rows if in_features == 576 else torch.randn(32, in_features)
        times = {"F.linear": [], "packed": []}
        with torch.no_grad(), packed_linears(layer):
            for _ in range(20 * args.repeats):
                for way in times:
                    started = time.perf_counter()
                    F.linear(x, layer.weight) if way == "F.linear" else layer(x)
                    times[way].append(time.perf_counter() - started)
        name = f"Linear {in_features}->{out_features}, 32 rows"
        results[name] = {way: round(1e6 * statistics.median(t), 1) for way, t in times.items()} | {"unit": "us"}
        print(name, results[name], flush=True)

    model = smollm2_shaped_lora()
    generator = torch.Generator().manual_seed(1)
    cases = {"GRPO sampling, 32 rows x 16 tokens": (32, {"do_sample": True, "top_k": 0, "top_p": 1.0}),
             "held-out, 100 greedy rows x 16 tokens": (100, {"do_sample": False})}
    for name, (batch, decoding) in cases.items():
        prompt = torch.randint(0, 49152, (batch, 40), generator=generator)
        times, tokens = {"plain": [], "packed": []}, {}
        for repeat in range(args.repeats + 1):  # the first round warms up
            for way in times:
                torch.manual_seed(repeat)
                started = time.perf_counter()
                with torch.no_grad(), merged_lora(model), packed_linears(model, enabled=way == "packed"):
                    out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), pad_token_id=0,
                                         max_new_tokens=16, min_new_tokens=16, **decoding)
                if repeat:
                    times[way].append(time.perf_counter() - started)
                tokens[way] = out[:, 40:]
        differ = int((tokens["plain"] != tokens["packed"]).sum())
        results[name] = {way: round(statistics.median(t), 3) for way, t in times.items()} | {
            "unit": "s", "ratio": round(statistics.median(times["plain"]) / statistics.median(times["packed"]), 2),
            "tokens_differing": f"{differ} of {tokens['plain'].numel()} (last round)"}
        print(name, results[name], flush=True)
    save({"case": "packed_linears_cpu", "date": time.strftime("%Y%m%d-%H%M%S"),
          "notes": f"medians, alternating; {args.repeats} rounds; torch {torch.__version__}; fp32", "results": results})


if __name__ == "__main__":
    main()
