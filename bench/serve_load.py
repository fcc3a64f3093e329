"""Serve latency and throughput: requests/s and median latency at 1 and 4 concurrent clients, greedy, 32 new tokens.

    python bench/serve_load.py outputs/sft/RUN              # a finished run, an export, or any model directory
    python bench/serve_load.py model=smollm2_135m           # a model option's weights (converted once under .cache/)
    python bench/serve_load.py outputs/sft/RUN --requests 32 --clients 1 4 8
    python bench/serve_load.py outputs/grpo/RUN/final --clients 1 8 --vs-transformers   # beside `transformers serve`

Starts `python -m pipeline.tools.serve` on a free 127.0.0.1 port as a user would, warms it up, then for each client
count sends the same bounded number of chat requests from that many threads through the official openai client,
each waiting for its answer before sending the next. Answers may end before 32 tokens (end of turn): the
generated tokens per second are printed beside requests/s. `--vs-transformers` runs the same requests against
`transformers serve` (continuous batching) on the same directory, each client count on both servers in turn, and
prints the ratio; it needs a plain model directory (an export, or a full run's final/), not a LoRA adapter.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import openai
from transformers_serve import transformers_serve

from pipeline.tools.serving.process import server_process

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [f"What is {a} + {b}? Answer with just the number." for a, b in
             [(12, 7), (35, 48), (9, 91), (23, 23), (61, 5), (44, 17), (8, 80), (77, 12)]]


def model_path(target: str) -> Path:
    """A directory to serve: the target itself, or for model=NAME that option's weights as the pipeline loads them."""
    if not target.startswith("model="):
        return Path(target)
    from baseline import workload

    from pipeline.train.model.build import model_dir

    run = workload([target, f"paths.cache_dir={REPO / '.cache' / 'pipeline'}"])
    return Path(model_dir(run.model, run.paths.cache_dir))


def load(client: openai.OpenAI, model: str, clients: int, requests: int, max_tokens: int) -> dict[str, float]:
    latencies: list[float] = []
    tokens = [0]
    errors: list[Exception] = []
    lock = threading.Lock()
    todo = iter(range(requests))

    def worker() -> None:
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            start = time.perf_counter()
            try:
                out = client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                    max_tokens=max_tokens, temperature=0)
            except Exception as err:  # reported below, from the main thread
                errors.append(err)
                return
            with lock:
                latencies.append(time.perf_counter() - start)
                tokens[0] += out.usage.completion_tokens

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=1800)
    wall = time.perf_counter() - start
    if errors or len(latencies) != requests:
        raise SystemExit(f"{requests - len(latencies)} request(s) not answered: {errors[:1]}")
    return {"clients": clients, "requests": requests, "requests_per_s": requests / wall,
            "median_latency_s": statistics.median(latencies), "gen_tokens_per_s": tokens[0] / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="a run / export / model directory, or model=NAME")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--requests", type=int, default=16, help="requests per client count (bounded)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--vs-transformers", action="store_true", help="the same requests on `transformers serve`")
    args = parser.parse_args()
    path = model_path(args.target)
    with tempfile.TemporaryDirectory() as tmp, server_process("serve", str(path), "name=bench",
                                                              log=Path(tmp) / "server.log") as url:
        ours = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
        load(ours, "bench", 1, 2, args.max_tokens)  # warm-up: first-call allocations, lazy imports
        if args.vs_transformers:
            with transformers_serve(path.resolve(), log=Path(tmp) / "transformers.log") as theirs_url:
                theirs = openai.OpenAI(base_url=f"{theirs_url}/v1", api_key="none", max_retries=0, timeout=600)
                load(theirs, str(path.resolve()), 1, 2, args.max_tokens)
                pairs = [(load(ours, "bench", c, args.requests, args.max_tokens),
                          load(theirs, str(path.resolve()), c, args.requests, args.max_tokens)) for c in args.clients]
        else:
            pairs = [(load(ours, "bench", c, args.requests, args.max_tokens), None) for c in args.clients]
        with urllib.request.urlopen(f"{url}/stats", timeout=30) as response:
            stats = json.loads(response.read())
    print(f"{path.name}: greedy, max_tokens={args.max_tokens}, our batches by size {stats['sizes']}")
    print("clients  requests  requests/s  median latency s  generated tokens/s" +
          ("  transformers serve req/s  ratio" if args.vs_transformers else ""))
    for r, t in pairs:
        line = (f"{r['clients']:>7}  {r['requests']:>8}  {r['requests_per_s']:>10.2f}  {r['median_latency_s']:>16.2f}"
                f"  {r['gen_tokens_per_s']:>18.1f}")
        if t is not None:
            line += f"  {t['requests_per_s']:>24.2f}  {r['requests_per_s'] / t['requests_per_s']:>5.2f}x"
        print(line)

if __name__ == "__main__":
    main()
