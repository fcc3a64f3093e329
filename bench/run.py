"""Benchmark harness: our pipeline vs a plain-TRL baseline on the same workload, measured in the same run.

    python bench/run.py grpo_cpu [--repeats 2] [--steps N] [--set hw.precision=bf16]

Each side runs as its own process, alternating (ours, baseline, ours, baseline, ...) so drift in machine load hits
both. Throughput comes from what TRL logs on both sides (TensorBoard scalars); peak memory is the child's max RSS
on CPU (os.wait4) or torch.cuda.max_memory_allocated on GPU. Prints one table, saves JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cases import CASES, REPO, Case
from measure import Measurement, mfu, read_run

RESULTS = REPO / "bench" / "results"
METRICS = ("samples_per_s", "tokens_per_s", "gen_tokens_per_s", "step_time_s", "peak_mem_gb", "mfu")
HIGHER_IS_BETTER = {"samples_per_s", "tokens_per_s", "gen_tokens_per_s", "mfu"}


def run_side(side: str, case: Case, steps: int, out: Path) -> Measurement:
    # every step logged, as the baseline does: steps and generated tokens are read back from the logged scalars
    # (a recipe may log every 5 steps)
    common = [*case.ours, f"max_steps={steps}", "stage.logging_steps=1",
              f"paths.cache_dir={REPO / '.cache' / 'pipeline'}"]
    gpu_peak = out.parent / f"{out.name}.gpu_peak"
    child = [sys.executable, str(REPO / "bench" / "child.py"), str(gpu_peak)]
    if side == "ours":
        cmd = [*child, str(REPO / "pipeline" / "run.py"), *common, "logging=tensorboard", f"output_dir={out}"]
    else:
        cmd = [*child, str(REPO / "bench" / "baseline.py"), str(out), *common]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    log_path = out.parent / f"{out.name}.log"
    log = log_path.open("w")
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    # wait4 gives this child's own rusage: ru_maxrss is its peak resident memory (KiB on Linux).
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        # the run's temporary directory goes away with the harness: show the end of the log now
        tail = "\n".join(log_path.read_text().splitlines()[-25:])
        raise SystemExit(f"{side} run of {case.name} failed ({' '.join(cmd)}):\n{tail}")
    # GPU: what torch allocated at its peak (bench/child.py); CPU: the process's peak resident memory
    peak_gb = int(gpu_peak.read_text()) / 2**30 if gpu_peak.exists() else usage.ru_maxrss / 2**20
    return read_run(out, side, case, peak_mem_gb=peak_gb, wall_s=time.time() - started)


def table(case: Case, runs: dict[str, list[Measurement]]) -> tuple[str, dict]:
    rows, summary = [], {}
    header = f"| {case.name} | ours | plain TRL | ours / TRL |\n|---|---|---|---|"
    for metric in METRICS:
        ours = statistics.median(getattr(m, metric) for m in runs["ours"])
        base = statistics.median(getattr(m, metric) for m in runs["baseline"])
        if not ours and not base:
            continue
        ratio = ours / base if base else float("nan")
        summary[metric] = {"ours": ours, "baseline": base, "ratio": ratio}
        better = "" if metric in HIGHER_IS_BETTER else " (lower is better)"
        rows.append(f"| {metric}{better} | {ours:.3f} | {base:.3f} | {ratio:.2f}x |")
    return "\n".join([header, *rows]), summary


def machine() -> dict:
    import torch

    desc = {"platform": platform.platform(), "cpu": _cpu_model() or platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        desc["gpu"] = torch.cuda.get_device_name(0)
    return desc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=sorted([*CASES, "zero3_load", "fsdp2_load"]))
    parser.add_argument("--repeats", type=int, default=2, help="pairs of runs; medians are reported")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: the case's)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides added to both sides (e.g. hw.precision=bf16: the baseline then loads bf16 "
                             "weights and passes bf16=True, as a TRL user would); named in the result file")
    parser.add_argument("--model", default="qwen2.5_0.5b_shape",
                        help="zero3_load / fsdp2_load only: the model preset loaded")
    args = parser.parse_args()
    if args.case == "zero3_load":  # load memory per rank, not ours-vs-TRL: a harness of its own
        import zero3_load

        save(zero3_load.main(args.model))
        return
    if args.case == "fsdp2_load":  # FSDP2 vs ZeRO-3: load memory per rank and step time (bench/fsdp2_load.py)
        import fsdp2_load

        save(fsdp2_load.main(args.model, args.steps or 3))
        return
    case = CASES[args.case]
    if args.set:
        suffix = "-".join(v.split("=")[-1] for v in args.set)
        case = dataclasses.replace(case, name=f"{case.name}-{suffix}", ours=[*case.ours, *args.set],
                                   notes=f"{case.notes}; {' '.join(args.set)}")
    if case.needs_cuda and not _has_cuda():
        print(f"{case.name}: skipped, needs CUDA and none is visible")
        return
    missing = [str(f) for f in case.extra_files if not f.exists()]
    if missing:
        raise SystemExit(f"{case.name} needs {', '.join(missing)}")
    steps = args.steps or case.steps
    runs: dict[str, list[Measurement]] = {"ours": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix=f"bench-{case.name}-") as tmp:
        for i in range(args.repeats):
            for side in ("ours", "baseline"):
                runs[side].append(run_side(side, case, steps, Path(tmp) / f"{side}{i}"))
                print(f"{side} #{i}: {runs[side][-1]}", flush=True)
    if _has_cuda():
        add_mfu(case, runs)
    text, summary = table(case, runs)
    print(f"\n{case.notes}; {steps} steps, {args.repeats} pair(s), medians\n{text}")
    save({"case": case.name, "notes": case.notes, "steps": steps, "repeats": args.repeats,
          "date": time.strftime("%Y%m%d-%H%M%S"), "summary": summary,
          "runs": {side: [m.__dict__ for m in ms] for side, ms in runs.items()}})


def _cpu_model() -> str | None:
    # the same 2 cores went from a Xeon to an EPYC between two measurements (2x on some cases): name the CPU
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
    return names[0] if names else None


def save(payload: dict) -> Path:
    """bench/results/<case>-<date>.json, with the machine description."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{payload['case']}-{payload['date']}.json"
    path.write_text(json.dumps({**payload, "machine": machine()}, indent=2) + "\n")
    print(f"saved {path}")
    return path


def add_mfu(case: Case, runs: dict[str, list[Measurement]]) -> None:
    import torch
    from baseline import workload

    from pipeline.launch.memory import model_shapes

    # counted on the meta device from the model's config, as the dry run's memory estimate does
    n_params = model_shapes(workload(case.ours).model).params
    device = torch.cuda.get_device_name(0)
    for measurement in (m for side in runs.values() for m in side):
        measurement.mfu = mfu(measurement.tokens_per_s, n_params, device)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
