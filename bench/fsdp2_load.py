"""The `fsdp2_load` case: FSDP2 against ZeRO-3 on 2 CPU ranks: peak memory of each rank while loading one model,
then seconds per optimizer step of a short SFT run through pipeline/run.py.

    python bench/run.py fsdp2_load [--model qwen2.5_0.5b_shape] [--steps 3]
    python bench/fsdp2_load.py --rank OUT_DIR OVERRIDES...   # one FSDP2 rank (torchrun starts two)

ZeRO-3's load is the `zero3_load` case's own child (bench/load_peak.py through the deepspeed launcher); FSDP2's is
the same measurement here: plan the run, start the process group, load the model as a stage's prepare() does (each
rank reading its rows of every weight), read every weight it holds once, report ru_maxrss and the sampled peak of
anonymous memory. Step time: the same SFT run (LoRA, fp32) with zero=zero3 and zero=fsdp2, alternating, each
engine's seconds_per_step from its summary.json. Goal (issue 25): load peak <= ZeRO-3's, step time within 10%.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GB = 2**30
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def rank_main(argv: list[str]) -> None:
    """One FSDP2 rank: load, touch every held weight, write rank<N>.json."""
    from hydra import compose, initialize_config_dir
    from load_peak import MemoryTimeline

    out_dir, *overrides = argv
    from pipeline.config.plan import plan_run
    from pipeline.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        composed = compose(config_name="config", overrides=[*overrides, f"output_dir={out_dir}"])
    plan = plan_run(composed, Path(out_dir))
    from pipeline.train.model.build import build_model
    from pipeline.train.model.fsdp2 import fsdp2_share
    from pipeline.train.model.sharded import sharded_loading
    from pipeline.train.runtime.fsdp2 import is_fsdp2
    from pipeline.train.stages.trl_args import training_args

    sampler = MemoryTimeline()
    # the phases of bench/load_peak.py's ZeRO-3 child, so the two timelines compare phase for phase; the first is
    # set before the sampler starts, so no sample lands in a phase of its own ("start") on a busy machine
    sampler.phase = "training_args"
    sampler.start()
    started = time.time()
    live = sharded_loading(plan, training_args(plan))  # the process group, before from_pretrained
    sampler.phase = "build_model"
    model, _ = build_model(plan.cfg)
    from torch.distributed.tensor import DTensor

    sampler.phase = "read_weights"
    for param in model.parameters():  # lazily mapped weights become resident, as at the first training step
        float((param.to_local() if isinstance(param, DTensor) else param).detach().sum())
    time.sleep(0.05)  # one more sample after the last read
    seconds = time.time() - started
    sampler.done.set()
    sampler.join()
    held, total = fsdp2_share(model)
    report = {"rank": plan.rank, "zero": plan.cfg.zero.name, "sharded": live is not None and is_fsdp2(model),
              "weight_elements_held": held, "weight_elements_total": total,
              "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB,
              "peak_anon_gb": sampler.peak / GB, "load_s": round(seconds, 2), "timeline": sampler.report()}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / f"rank{plan.rank}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report), flush=True)
    os._exit(0)  # the measurement is written; no process-group teardown


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="1048576")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "RUN_ID"):
        env.pop(key, None)
    return env


def fsdp2_ranks(model: str, out: Path, port: int) -> list[dict]:
    import zero3_load

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           __file__, "--rank", str(out), *zero3_load.overrides(model, "fsdp2")]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"fsdp2_load failed ({' '.join(cmd)}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def step_time(model: str, zero: str, out: Path, steps: int) -> float:
    """seconds_per_step of a short SFT run (LoRA) on 2 ranks through pipeline/run.py's own re-launch."""
    cmd = [sys.executable, str(REPO / "pipeline" / "run.py"), "stage=sft", f"model={model}", "hw=cpu_2proc",
           f"zero={zero}", "peft=lora", f"max_steps={steps}", "stage.batch_size=4", "hw.micro_batch=2",
           "stage.max_length=128", "data.arithmetic.num_train=64", "data.arithmetic.num_eval=2",
           "stage.eval_max_new_tokens=2",
           "stage.save_steps=0", "logging.samples_every=0", f"output_dir={out}",
           f"paths.cache_dir={REPO / '.cache' / 'pipeline'}"]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"fsdp2_load step time {zero} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return json.loads((out / "summary.json").read_text())["seconds_per_step"]


def main(model: str = "qwen2.5_0.5b_shape", steps: int = 3) -> dict:
    import zero3_load

    from pipeline.launch.launcher import free_port

    with tempfile.TemporaryDirectory(prefix="bench-fsdp2_load-") as tmp:
        subprocess.run([sys.executable, zero3_load.CHILD, "--materialise", f"{tmp}/m",
                        *zero3_load.overrides(model, "none")], cwd=REPO, check=True, env=_env())
        ranks = {"zero3": zero3_load.run_profile(model, "zero3", Path(tmp) / "zero3", free_port()),
                 "fsdp2": fsdp2_ranks(model, Path(tmp) / "fsdp2", free_port())}
        # alternating, so a busy moment of the machine lands on both engines
        step_s = {zero: step_time(model, zero, Path(tmp) / f"steps_{zero}", steps) for zero in ("zero3", "fsdp2")}
    peak = {z: max(r["peak_rss_gb"] for r in rs) for z, rs in ranks.items()}
    anon = {z: max(r["peak_anon_gb"] for r in rs) for z, rs in ranks.items()}
    summary = {"load_peak_gb": {**{z: round(v, 3) for z, v in peak.items()},
                                "ratio": round(peak["fsdp2"] / peak["zero3"], 3)},
               "load_peak_anon_gb": {**{z: round(v, 3) for z, v in anon.items()},
                                     "ratio": round(anon["fsdp2"] / anon["zero3"], 3)},
               "seconds_per_step": {**step_s, "ratio": round(step_s["fsdp2"] / step_s["zero3"], 3)},
               "goal": "load peak ratio <= 1, step time ratio <= 1.1"}
    lines = ["| engine | rank | weights held / total | peak RSS GB | peak anon GB | load s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {z} | {r['rank']} | {r['weight_elements_held']:,} / {r['weight_elements_total']:,} | "
              f"{r['peak_rss_gb']:.2f} | {r['peak_anon_gb']:.2f} | {r['load_s']} |"
              for z, rs in ranks.items() for r in rs]
    print("\n".join([*lines, "", *zero3_load.phase_lines(ranks)]))
    print(f"load peak (larger rank): fsdp2/zero3 {summary['load_peak_gb']['ratio']:.2f}; s/step zero3 "
          f"{step_s['zero3']:.2f}, fsdp2 {step_s['fsdp2']:.2f} (ratio {summary['seconds_per_step']['ratio']:.2f})")
    return {"case": "fsdp2_load", "notes": f"{model}, 2 CPU ranks (gloo), fp32; step time: SFT LoRA, {steps} steps",
            "date": time.strftime("%Y%m%d-%H%M%S"), "summary": summary, "ranks": ranks}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rank"]:
        rank_main(sys.argv[2:])
