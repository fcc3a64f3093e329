"""GRPO through pipeline/run.py on a mix of a reward model, a judge and an async function."""

from __future__ import annotations

import json
import math
import urllib.request
from pathlib import Path

from tests.helpers.judge_stub import judge_stub
from tests.helpers.runs import TINY, run_pipeline

MIX = """
defaults:
  - base_reward
  - _self_
name: mix
terms:
  rm:
    function: reward_model
    model: {rm}
    batch_size: 4
  judge:
    function: judge
    url: null
    model: ok
    on_error: zero
    weight: 0.5
  mine:
    _target_: tests.helpers.rewards.slow_len
    kwargs:
      delay: 0.1
    weight: 0.01
"""


def test_grpo_trains_on_a_reward_model_a_judge_and_an_async_function(rm_dir: Path, tmp_path: Path,
                                                                      model_cache: Path) -> None:
    from tests.helpers.runs import scalars

    run_dir = tmp_path / "run"
    # a user's own reward option beside conf/ (hydra.searchpath): three kinds of term in one GRPO run
    (tmp_path / "conf" / "reward").mkdir(parents=True)
    (tmp_path / "conf" / "reward" / "mix.yaml").write_text(MIX.format(rm=rm_dir))
    with judge_stub(tmp_path / "stub.log") as url:
        proc = run_pipeline([
            *TINY, "stage=grpo", "stage.batch_size=8", "stage.num_generations=4", "stage.max_completion_length=8",
            f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "reward=mix", f"reward.terms.judge.url={url}/v1",
            "eval.every_steps=2",
            f"output_dir={run_dir}", f"paths.cache_dir={model_cache}",
        ], cwd=tmp_path)
        requests = json.loads(urllib.request.urlopen(f"{url}/stats", timeout=10).read())
    assert proc.returncode == 0, proc.stderr[-4000:]
    logged = scalars(run_dir)
    rm_means = logged["train/rewards/rm/mean"]
    assert len(rm_means) == 2 and all(math.isfinite(v) and v != 0.0 for v in rm_means)
    assert logged["train/rewards/judge/mean"] == [0.0, 0.0]  # completions hold no <<N>>: the stub says Score: 0
    assert logged["train/rewards/judge/failures"] == [0.0, 0.0]
    assert all(v > 0 for v in logged["train/rewards/mine/mean"])
    # 2 steps x 8 sampled completions, then the held-out eval at step 2: 8 greedy completions, one request each
    assert requests["requests"] == 24
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if "eval/rm" in r]
    assert len(evals) == 1 and math.isfinite(evals[0]["eval/rm"]) and evals[0]["eval/judge"] == 0.0
