"""The `zero3_load` case: peak memory of each of 2 CPU ranks while loading one model, ZeRO-2 against ZeRO-3.

    python bench/run.py zero3_load [--model qwen2.5_0.5b_shape]

Both profiles start 2 gloo ranks through the deepspeed launcher, each running bench/load_peak.py (plan the run,
then load the model as a stage's prepare() does). Under ZeRO-2 every rank loads the whole model; under ZeRO-3 the
DeepSpeed config is live before from_pretrained, so each rank keeps only its shard. The JSON in bench/results/
holds every rank's report and `summary.load_peak_gb.{zero2,zero3,ratio}` (the larger rank of each; goal <= 0.6).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = str(REPO / "bench" / "load_peak.py")
PROFILES = ("zero2", "zero3")


def overrides(model: str, zero: str) -> list[str]:
    return [f"model={model}", "hw=cpu_2proc", "peft=full", f"zero={zero}",
            f"paths.cache_dir={REPO / '.cache' / 'pipeline'}"]


def run_profile(model: str, zero: str, out: Path, port: int, child_flags: tuple[str, ...] = ()) -> list[dict]:
    # MALLOC_MMAP_THRESHOLD_: glibc otherwise keeps freed large buffers (ZeRO-3 gathers each layer whole while
    # loading) in its heap, and the peak RSS would count memory the process no longer uses. Same for both profiles.
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="1048576")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(port),
           CHILD, *child_flags, str(out), *overrides(model, zero)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"zero3_load {zero} failed ({' '.join(cmd)}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def phase_lines(ranks: dict[str, list[dict]]) -> list[str]:
    """A markdown table of each rank's peak memory per phase of its load (bench/load_peak.py MemoryTimeline)."""
    lines = ["| profile | rank | phase: peak RSS GB (anon + file + shmem) |", "|---|---|---|"]
    return lines + [f"| {z} | {r['rank']} | " + "; ".join(
        f"{phase}: {m['rss_gb']:.2f} ({m['anon_gb']:.2f} + {m['file_gb']:.2f} + {m['shmem_gb']:.2f})"
        for phase, m in r["timeline"]["phases"].items()) + " |" for z, rs in ranks.items() for r in rs]


def main(model: str = "qwen2.5_0.5b_shape") -> dict:
    from pipeline.launch.launcher import free_port

    with tempfile.TemporaryDirectory(prefix="bench-zero3_load-") as tmp:
        # the random weights are written once, by one process, outside the measurement
        subprocess.run([sys.executable, CHILD, "--materialise", f"{tmp}/m", *overrides(model, "none")], cwd=REPO,
                       check=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
        ranks = {zero: run_profile(model, zero, Path(tmp) / zero, free_port()) for zero in PROFILES}
    peak = {zero: max(r["peak_rss_gb"] for r in ranks[zero]) for zero in PROFILES}
    anon = {zero: max(r["peak_anon_gb"] for r in ranks[zero]) for zero in PROFILES}
    summary = {
        "load_peak_gb": {**{z: round(peak[z], 3) for z in PROFILES}, "ratio": round(peak["zero3"] / peak["zero2"], 3)},
        "load_peak_anon_gb": {**{z: round(anon[z], 3) for z in PROFILES},
                              "ratio": round(anon["zero3"] / anon["zero2"], 3)},
        "goal_ratio": 0.6,
    }
    lines = ["| profile | rank | weights held / total | peak RSS GB | peak anon GB | load s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {z} | {r['rank']} | {r['weight_elements_held']:,} / {r['weight_elements_total']:,} | "
              f"{r['peak_rss_gb']:.2f} | {r['peak_anon_gb']:.2f} | {r['load_s']} |" for z in PROFILES for r in ranks[z]]
    lines += ["", *phase_lines(ranks)]
    print("\n".join(lines))
    print(f"load peak (larger rank): zero2 {peak['zero2']:.2f} GB, zero3 {peak['zero3']:.2f} GB, "
          f"ratio {summary['load_peak_gb']['ratio']:.2f} (goal <= 0.6)")
    return {"case": "zero3_load", "notes": f"{model}, 2 CPU ranks (gloo, deepspeed launcher), fp32 load only",
            "date": time.strftime("%Y%m%d-%H%M%S"), "summary": summary, "ranks": ranks}
