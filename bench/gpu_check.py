"""The steps of bench/gpu_check.sh: each run time-boxed, its measured peak memory beside the dry run's estimate.

    python bench/gpu_check.py OUTDIR          # on a CUDA machine: model=qwen2.5_0.5b_shape, 10 steps, bf16
    python bench/gpu_check.py --dry OUTDIR    # on CPU: the same steps with model=tiny, 1 step each

Writes OUTDIR/gpu_check.json and OUTDIR/gpu_check.md and prints the table. A step that fails or runs out of its
time box is recorded as such (with the end of its log) and the next one runs: one broken lever must not hide the
others. Exit status 1 when any step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = str(REPO / "pipeline" / "run.py")
CHILD = str(REPO / "bench" / "child.py")


@dataclass
class Step:
    name: str
    overrides: list[str]
    timeout_s: int
    # through `deepspeed --num_gpus 1` (the ZeRO profiles) instead of a plain process
    deepspeed: bool = False
    # a bench/run.py case instead of a pipeline run
    bench: str = ""


def steps(dry: bool) -> list[Step]:
    """The check's runs. GPU: Qwen2.5-0.5B shapes (random weights) for 10 steps; --dry: model=tiny for 1."""
    if dry:
        base = ["model=tiny", "hw=cpu", "max_steps=1", "logging=none", "data.arithmetic.num_train=16",
                "data.arithmetic.num_eval=0", "hw.micro_batch=2"]
    else:
        base = ["model=qwen2.5_0.5b_shape", "hw=single_a100_80g", "max_steps=10", "logging=none",
                "data.arithmetic.num_eval=0"]
    grpo = ["stage=grpo", "stage.batch_size=8", "stage.num_generations=4",
            f"stage.max_completion_length={8 if dry else 64}"]
    sft = ["stage=sft", "stage.batch_size=4" if dry else "stage.batch_size=16"]
    # GPU time boxes: 390 s in all, + 90 s for the offline install = the 8 minutes. The first step also writes
    # the random 0.5B weights once. On CPU (--dry) every box is 5x: 2 shared cores, not a GPU.
    scale = 5 if dry else 1
    return [
        Step("sft_bf16", [*base, *sft, "peft=full"], 50 * scale),
        Step("dpo_bf16", [*base, "stage=dpo", "stage.batch_size=4", "stage.max_length=128", "peft=lora"], 45 * scale),
        Step("grpo_bf16", [*base, *grpo, "peft=lora"], 60 * scale),
        Step("grpo_nf4", [*base, *grpo, "peft=lora", "quant=nf4"], 60 * scale),
        Step("sft_zero2", [*base, *sft, "peft=full", "zero=zero2"], 45 * scale, deepspeed=True),
        Step("sft_zero3", [*base, *sft, "peft=full", "zero=zero3"], 45 * scale, deepspeed=True),
        Step("bench_grpo_gpu", [], 50 * scale, bench="grpo_gpu"),
        Step("bench_sft_gpu", [], 35 * scale, bench="sft_gpu"),
    ]


def estimate_gib(step: Step, out: Path) -> float | None:
    """The dry run's per-GPU total for the same overrides, computed in this process (None for bench cases)."""
    if step.bench:
        return None
    sys.path.insert(0, str(REPO))
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from pipeline.config.plan import plan_run
    from pipeline.config.schema import register_configs
    from pipeline.launch.memory import estimate

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        composed = compose(config_name="config", overrides=[*step.overrides, f"output_dir={out / step.name}"])
    try:
        return round(estimate(plan_run(composed, out / step.name)).total, 3)
    except ValueError:
        return None


def run_step(step: Step, out: Path, dry: bool) -> dict:
    peak_file = out / f"{step.name}.peak"
    if step.bench:
        command = [sys.executable, str(REPO / "bench" / "run.py"), step.bench, "--repeats", "1", "--steps", "3"]
    else:
        script = [CHILD, str(peak_file), RUN, *step.overrides, f"output_dir={out / step.name}",
                  f"paths.cache_dir={REPO / '.cache' / 'pipeline'}"]
        launcher = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "1", "--master_port",
                    str(_free_port())] if step.deepspeed else [sys.executable]
        command = [*launcher, *script]
    log_path = out / f"{step.name}.log"
    started = time.time()
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=_env())
        status, maxrss = _wait(proc, step.timeout_s)
    text = log_path.read_text()
    result = {"status": status, "seconds": round(time.time() - started, 1), "command": " ".join(command),
              "estimate_gib": estimate_gib(step, out)}
    if peak_file.exists():
        result["peak_gib"], result["peak_kind"] = int(peak_file.read_text()) / 2**30, "cuda max allocated"
    elif not step.bench:
        result["peak_gib"], result["peak_kind"] = maxrss / 2**20, "max RSS (CPU)"
    if step.bench and "skipped, needs CUDA" in text:
        result["status"] = "skipped (no CUDA)"
    if status != "ok":
        result["log_tail"] = text[-3000:]
    return result


def wheel_list() -> dict:
    """bench/gpu_wheels.txt and gpu_sdists.txt against this environment: every line pinned, to the version the
    tests here ran with (the GPU machine installs exactly these, without resolving anything)."""
    from importlib.metadata import PackageNotFoundError, version

    wrong = []
    for name in ("gpu_wheels.txt", "gpu_sdists.txt"):
        for line in (REPO / "bench" / name).read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            package, _, pin = line.strip().partition("==")
            try:
                have = version(package)
            except PackageNotFoundError:
                have = None
            if have != pin:
                wrong.append(f"{package}: pinned {pin or '-'}, installed {have}")
    return {"status": "ok" if not wrong else f"failed ({'; '.join(wrong)})", "seconds": 0.0}


def table(results: dict[str, dict], dry: bool) -> str:
    head = ["| step | status | seconds | peak GiB | dry-run estimate GiB |", "|---|---|---|---|---|"]
    rows = [f"| {name} | {r['status']} | {r['seconds']} | {_num(r.get('peak_gib'))} | {_num(r.get('estimate_gib'))} |"
            for name, r in results.items()]
    mode = "--dry (CPU, model=tiny, 1 step each)" if dry else "GPU (model=qwen2.5_0.5b_shape, 10 steps)"
    return "\n".join([f"gpu_check {mode}", "", *head, *rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry", action="store_true", help="CPU, model=tiny, 1 step each: the script's logic only")
    parser.add_argument("--only", type=lambda names: names.split(","), default=None,
                        help="run only these steps, comma-separated (names as in the table)")
    parser.add_argument("outdir", type=Path)
    args = parser.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)
    chosen = [s for s in steps(args.dry) if args.only is None or s.name in args.only]
    results: dict[str, dict] = {"wheel_list": wheel_list()}
    for step in chosen:
        results[step.name] = run_step(step, args.outdir, args.dry)
        print(f"{step.name}: {results[step.name]['status']} in {results[step.name]['seconds']} s", flush=True)
    text = table(results, args.dry)
    (args.outdir / "gpu_check.md").write_text(text + "\n")
    payload = {"dry": args.dry, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": _device(), "results": results,
               "steps": [asdict(s) for s in chosen]}
    (args.outdir / "gpu_check.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(text)
    return 0 if all(r["status"] in ("ok", "skipped (no CUDA)") for r in results.values()) else 1


def _wait(proc: subprocess.Popen, timeout_s: int) -> tuple[str, int]:
    """(status, max RSS in KiB of the process and the children it waited for); kills it at its time box."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        pid, code, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(code)
            return ("ok" if proc.returncode == 0 else f"failed (rc {proc.returncode})"), usage.ru_maxrss
        time.sleep(0.5)
    proc.kill()
    _, _, usage = os.wait4(proc.pid, 0)
    return f"timed out ({timeout_s} s)", usage.ru_maxrss


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "PIPELINE_LAUNCHED"):
        env.pop(key, None)
    return env


def _free_port() -> int:
    sys.path.insert(0, str(REPO))
    from pipeline.launch.launcher import free_port

    return free_port()


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    sys.exit(main())
