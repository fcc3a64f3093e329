"""Golden runs: each stage's fixed-seed 3-step run on the tiny model, its per-step losses, grad norms and rewards
pinned in tests/e2e/golden_runs.json (tests/e2e/test_golden_runs.py compares).

A change that moves these numbers changes what is trained; making it is a deliberate act: regenerate the file and
let the diff show in review.

    python -m tests.helpers.golden            # rerun every stage and rewrite the file
    python -m tests.helpers.golden grpo dpo   # some of them
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

from tests.helpers.runs import FIXTURES, REPO, TINY, run_pipeline
from tests.helpers.stage_checks import TRL_PASS_THROUGH

GOLDEN = REPO / "tests" / "e2e" / "golden_runs.json"
# fp32 on CPU is deterministic on one machine; another CPU's kernels (AVX-512 vs AVX2 sums) move the last digits
RTOL, ATOL = 1e-3, 1e-6
# one torch thread whatever the worker count: KTO's step-3 KL moves 1.3e-3 relative between one and two threads
COMMON = [*(a for a in TINY if not a.startswith(("max_steps=", "hw.precision="))), "max_steps=3", "seed=0",
          "hw.precision=fp32", "hw.torch_threads=1"]
STAGES = {
    "sft": [],
    "dpo": [],
    "grpo": ["reward=shaped", "reward.terms.length.kwargs.target=24", "stage.batch_size=8", "stage.num_generations=4",
             "stage.max_completion_length=8"],
    # each with a stage.trl pass-through field, which tests/helpers/stage_checks.py finds in the trainer's args
    "kto": [TRL_PASS_THROUGH["kto"][0]],
    "orpo": [TRL_PASS_THROUGH["orpo"][0]],
    "simpo": [TRL_PASS_THROUGH["simpo"][0]],
    "rm": [TRL_PASS_THROUGH["rm"][0], "stage.heldout_pairs=16"],
    "group_pref": ["data=jsonl", "data.path=" + str((FIXTURES / "formats" / "scored_groups.jsonl").relative_to(REPO)),
                   "stage.batch_size=4", "stage.max_length=64"],
}
PINNED = ("loss", "grad_norm", "reward", "entropy", "kl")


def overrides(stage: str) -> list[str]:
    return [f"stage={stage}", *COMMON, *STAGES[stage]]


def run(stage: str, tmp: Path, cache: Path | None = None) -> list[dict[str, float]]:
    """The pinned metrics of each training step the run (in tmp/STAGE) logged (metrics.jsonl), in step order."""
    run_dir = tmp / stage
    proc = run_pipeline([*overrides(stage), f"output_dir={run_dir}", f"paths.cache_dir={cache or tmp / 'cache'}"],
                        cwd=REPO)
    assert proc.returncode == 0, f"{stage} run failed:\n{proc.stderr[-3000:]}"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{"step": r["step"], **{k: v for k, v in r.items() if k in PINNED or k.startswith("rewards/")}}
            for r in rows if "loss" in r]


def differences(got: list[dict[str, float]], want: list[dict[str, float]]) -> list[str]:
    """Each step/metric outside the tolerance, a metric logged on one side only, or a missing step."""
    if [r["step"] for r in got] != [r["step"] for r in want]:
        return [f"steps {[r['step'] for r in got]} != pinned {[r['step'] for r in want]}"]
    out = []
    for g, w in zip(got, want, strict=True):
        for key in sorted(set(g) | set(w)):
            a, b = g.get(key), w.get(key)
            if a is None or b is None or not math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL):
                out.append(f"step {w['step']} {key}: {a} != pinned {b}")
    return out


def write(stages: list[str]) -> None:
    pinned = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for stage in stages:
            pinned[stage] = {"overrides": overrides(stage), "steps": run(stage, Path(tmp))}
            print(stage, pinned[stage]["steps"][-1])
    GOLDEN.write_text(dump({k: pinned[k] for k in STAGES if k in pinned}))


def dump(pinned: dict) -> str:
    """One line per stage's overrides and per step, so a regenerated file's diff names the moved steps."""
    stages = []
    for stage, entry in pinned.items():
        steps = ",\n".join(f"   {json.dumps(s)}" for s in entry["steps"])
        head = f' "{stage}": {{\n  "overrides": {json.dumps(entry["overrides"])},\n'
        stages.append(f'{head}  "steps": [\n{steps}\n  ]\n }}')
    return "{\n" + ",\n".join(stages) + "\n}\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="rerun stages and rewrite tests/e2e/golden_runs.json")
    parser.add_argument("stages", nargs="*", metavar="STAGE", help=f"some of {', '.join(STAGES)} (default: all)")
    chosen = parser.parse_args(sys.argv[1:]).stages or list(STAGES)
    if unknown := set(chosen) - set(STAGES):
        parser.error(f"unknown stage(s) {sorted(unknown)}; golden runs exist for {', '.join(STAGES)}")
    write(chosen)
