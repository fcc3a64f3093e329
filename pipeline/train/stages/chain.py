"""Chained stages: SFT, then GRPO or DPO on the SFT result, in one run dir (`stage=sft_then_grpo|sft_then_dpo`).

Each step is an ordinary stage run in <run dir>/<i>_<name>/ with its own config (`stage.<name>`), data
(`data` with `stage.data.<name>` overrides on top) and summary; every step after the first gets
`init_from=<previous sub-dir>/final`, so it starts from the previous adapter (merged) or full model. The steps are
planned with the run (`RunPlan.steps`, pipeline/config/derived.py: chain_steps). A step whose summary.json and
final/ exist is skipped, so re-running the same command (same output_dir or RUN_ID) after an interruption resumes
at the first unfinished step.

    python pipeline/run.py experiment=medical_sft_then_grpo_qwen3
    python pipeline/run.py stage=sft_then_dpo data=jsonl data.path=pairs.jsonl   # SFT on chosen, then DPO
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pipeline.config.plan import RunPlan
from pipeline.train.runtime.distributed import barrier
from pipeline.train.stages import run_stage

log = logging.getLogger(__name__)


def run_chain(plan: RunPlan) -> dict[str, Any]:
    summaries = []
    for step in plan.steps:
        sub = step.cfg
        if step.dir.finished():
            log.info("%s already finished in %s: skipped (delete the dir to redo it)", sub.stage.name, step.run_dir)
            summaries.append(json.loads(step.dir.summary.read_text()))
            continue
        log.info("chain %s: running %s in %s%s", plan.cfg.stage.name, sub.stage.name, step.run_dir,
                 f" from {sub.init_from}" if sub.init_from else "")
        summaries.append(run_stage(step))
        # Rank 0 writes the step's final/ (and its summary) while the other ranks are done already: the next step
        # loads that final/ (init_from, chain:<name>), so no rank may start it before it exists.
        barrier()
    summary = {
        "stage": plan.cfg.stage.name,
        "stages": summaries,
        "steps": sum(s.get("steps", 0) for s in summaries),
        "final_dir": summaries[-1].get("final_dir"),
    }
    plan.dir.write_json(plan.dir.summary, summary)
    return summary
