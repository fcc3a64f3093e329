"""One rank of the `zero3_load` case: plan the run, load its model exactly as a stage does, report peak memory.

    python bench/load_peak.py --materialise OUT_DIR OVERRIDES...            # once, one process: write the weights
    deepspeed --num_gpus 2 bench/load_peak.py OUT_DIR OVERRIDES... zero=zero3   # each rank writes rank<N>.json
    deepspeed --num_gpus 2 bench/load_peak.py --reward-head OUT_DIR ...  # a reward model: its score head is new

The weights of a random model are materialised in a process of their own first: writing them needs the whole
model, which is not what the case measures. Each rank then measures only the load (imports, process group, model):
its peak resident memory (ru_maxrss, file pages of the memory-mapped checkpoint included) and, sampled every 20
ms, its peak anonymous memory (the tensors it keeps) and its memory per phase of the load (`timeline`). Every
weight the rank holds is read once after the load (a lazily mapped weight is not resident until then; the first
training step reads them all).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
GB = 2**30
# this checkout's pipeline package, not whichever one the environment has installed
sys.path.insert(0, str(REPO))


class MemoryTimeline(threading.Thread):
    """Samples RssAnon, RssFile and RssShmem from /proc/self/status every 20 ms until stopped, each sample tagged with
    the phase the main thread has set (`phase`); `peak` is the peak anonymous bytes, `report()` each phase's largest
    sample (by RSS) and the samples themselves every 100 ms: where a rank's memory rises during the load."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.done, self.phase = 0, threading.Event(), "start"
        self.samples: list[tuple[float, str, int, int, int]] = []

    def run(self) -> None:
        started = time.time()
        while not self.done.is_set():
            anon, file, shmem = _status_bytes("RssAnon", "RssFile", "RssShmem")
            self.peak = max(self.peak, anon)
            self.samples.append((round(time.time() - started, 2), self.phase, anon, file, shmem))
            time.sleep(0.02)

    def report(self) -> dict:
        phases: dict[str, dict] = {}
        for _, phase, anon, file, shmem in self.samples:
            if anon + file + shmem > phases.get(phase, {}).get("rss_gb", -1) * GB:
                phases[phase] = {"rss_gb": round((anon + file + shmem) / GB, 3), "anon_gb": round(anon / GB, 3),
                                 "file_gb": round(file / GB, 3), "shmem_gb": round(shmem / GB, 3)}
        series = [[t, phase, round(anon / GB, 3), round(file / GB, 3), round(shmem / GB, 3)]
                  for i, (t, phase, anon, file, shmem) in enumerate(self.samples)
                  if i % 5 == 0 or i == len(self.samples) - 1]
        return {"phases": phases, "series_t_phase_anon_file_shmem_gb": series}


def _status_bytes(*keys: str) -> list[int]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return [int(fields[key].split()[0]) * 1024 for key in keys]


def _differs_from_checkpoint(model, location) -> tuple[list[str], dict[str, float]]:
    """Names of the weights whose loaded values are not the checkpoint's (each gathered whole, one at a time), and
    the sum of each weight the checkpoint lacks (a reward model's new score head)."""
    import contextlib

    import torch
    from safetensors import safe_open

    from pipeline.train.levers.zero3_slices import checkpoint_entries, checkpoint_key

    entries = checkpoint_entries(location)
    wrong = []
    new = {}
    for name, param in model.named_parameters():
        key = checkpoint_key(name, model, entries)
        gathered = contextlib.nullcontext()
        if hasattr(param, "ds_id"):
            import deepspeed

            gathered = deepspeed.zero.GatheredParameters([param])
        with gathered:
            if key is None:  # initialised, not loaded: every rank must hold the same values
                new[name] = param.detach().double().sum().item()
                continue
            with safe_open(entries[key].path, "pt") as f:
                if not torch.equal(param.detach().to(entries[key].dtype).cpu(), f.get_tensor(key)):
                    wrong.append(name)
    return wrong, new


def main(argv: list[str]) -> None:
    # the deepspeed launcher appends --local_rank=N (its value is in LOCAL_RANK too)
    argv = [a for a in argv if not a.startswith("--local_rank")]
    reward_head = "--reward-head" in argv
    argv = [a for a in argv if a != "--reward-head"]
    materialise = argv[:1] == ["--materialise"]
    out_dir, *overrides = argv[1:] if materialise else argv
    from pipeline.config.plan import plan_run
    from pipeline.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        composed = compose(config_name="config", overrides=[*overrides, f"output_dir={out_dir}"])
    plan = plan_run(composed, Path(out_dir))
    from pipeline.train.model.build import build_model, model_dir

    if materialise:
        model_dir(plan.cfg.model, plan.cfg.paths.cache_dir)
        return
    import logging

    from pipeline.train.model.build import partitioned
    from pipeline.train.model.sharded import shard_share, sharded_loading
    from pipeline.train.runtime.distributed import release_shared_memory_names
    from pipeline.train.stages.trl_args import training_args

    # which ZeRO-3 loader ran (pipeline/train/levers/zero3_slices.py says so in its log)
    loader_lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: loader_lines.append(record.getMessage())
    logging.getLogger("pipeline.train.levers.zero3_slices").addHandler(handler)
    logging.getLogger("pipeline.train.levers.zero3_slices").setLevel(logging.INFO)
    sampler = MemoryTimeline()
    # the order of a stage's prepare(): the ZeRO-3 config live (or not) before the model loads (the first phase set
    # before the sampler starts: no stray "start" sample)
    sampler.phase = "training_args"
    sampler.start()
    started = time.time()
    live = sharded_loading(plan, training_args(plan))
    sampler.phase = "build_model"
    model, _ = build_model(plan.cfg, reward_head=reward_head)
    # Weights loaded from safetensors may still be lazy file mappings; training reads every one at its first step.
    # Reading each tensor this rank holds (its shard under ZeRO-3) makes them resident, as in a real run.
    sampler.phase = "read_weights"
    for param in model.parameters():
        float(getattr(param, "ds_tensor", param).detach().sum())
    time.sleep(0.05)  # one more sample after the last read
    seconds = time.time() - started
    sampler.done.set()
    sampler.join()
    release_shared_memory_names()  # os._exit below skips any teardown: DeepSpeed's /dev/shm buffers would stay
    held, total = shard_share(model) if partitioned(model) else (sum(p.numel() for p in model.parameters()),) * 2
    # ru_maxrss: KiB on Linux; read before the check below gathers weights and maps the checkpoint
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    differs, new = _differs_from_checkpoint(model, model_dir(plan.cfg.model, plan.cfg.paths.cache_dir))
    report = {
        "rank": plan.rank, "zero": plan.cfg.zero.name, "sharded": live is not None and partitioned(model),
        "weight_elements_held": held, "weight_elements_total": total,
        "peak_rss_gb": peak_rss / GB,
        "peak_anon_gb": sampler.peak / GB, "load_s": round(seconds, 2),
        # weights whose loaded values differ from the checkpoint's (gathered whole, after the measurement)
        "weights_differing": differs,
        # sum of each weight the checkpoint lacks, gathered (equal on every rank, or the ranks train different models)
        "new_weight_sums": new,
        "loader": loader_lines,
        "timeline": sampler.report(),
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / f"rank{plan.rank}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report), flush=True)
    os._exit(0)  # no teardown of the process group: the measurement is written


if __name__ == "__main__":
    main(sys.argv[1:])
