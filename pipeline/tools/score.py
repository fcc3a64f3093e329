"""Score a JSONL file of prompts and completions with reward terms, offline, and print per-term statistics: check a
reward (a judge's parser, a reward model's scale, a code test) before training with it.

    python -m pipeline.tools.score rows.jsonl reward=correctness_format
    python -m pipeline.tools.score rows.jsonl reward=model reward.terms.rm.model=outputs/rm/RUN out=scored.jsonl
    python -m pipeline.tools.score rows.jsonl reward=judge reward.terms.judge.url=http://127.0.0.1:8000/v1 \
        reward.terms.judge.model=tiny reward.terms.judge.max_concurrency=16

Each row has `prompt` (text or chat messages) and `completion` (text or messages); every other field is a data
column the terms receive (answer, tests...). `reward=` and `reward.*=` arguments compose exactly as for a run
(conf/reward/, Hydra overrides) and are validated the same way; the other options: limit=N, batch_size=N (rows per
call, default 32), out=FILE (each row with its per-term scores and total). Terms are called as GRPO calls them.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from pipeline.config.user_errors import reported
from pipeline.tools.options import parse_options

OPTIONS = {"limit": int, "batch_size": int, "out": str}
CONF = Path(__file__).resolve().parents[2] / "conf"


def reward_terms(overrides: list[str]) -> Any:
    """The reward group composed from `reward=` / `reward.*=` overrides, checked like a run's (SystemExit)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pipeline.config.checks import reward_problems
    from pipeline.config.schema import register_configs

    register_configs()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = OmegaConf.to_object(compose(config_name="config", overrides=["stage=grpo", *overrides]))
    except Exception as err:  # Hydra's own message names the bad override
        raise SystemExit(f"reward overrides {' '.join(overrides)}: {err}") from None
    problems = reward_problems(cfg)
    if problems:
        raise SystemExit("invalid reward:\n" + "\n".join(f"  - {p}" for p in problems))
    return cfg.reward


def read_rows(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    if not path.is_file():
        raise SystemExit(f"{path}: no such file. Give a JSONL file with prompt and completion per line.")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise SystemExit(f"{path}:{n}: not JSON ({err.msg}). Each line is one object.") from None
        missing = [k for k in ("prompt", "completion") if not isinstance(row, dict) or k not in row]
        if missing:
            raise SystemExit(f"{path}:{n}: no {' or '.join(missing)} field. Each row needs prompt and completion "
                             "(plus the columns your terms read, e.g. answer).")
        rows.append(row)
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise SystemExit(f"{path}: no rows.")
    return rows


def score_file(path: Path, overrides: list[str], limit: int | None = None, batch_size: int = 32,
               out: str | None = None) -> dict[str, Any]:
    """{rows, seconds, rows_per_s, terms: {name: stats}, total: stats}; writes the scored rows to ``out``."""
    from pipeline.rewards import build_reward_funcs, completion_text, score_completions

    reward = reward_terms(overrides)
    rows = read_rows(path, limit)
    funcs, weights = build_reward_funcs(reward.terms)
    columns = sorted({k for row in rows for k in row} - {"prompt", "completion"})
    per_term: dict[str, list[float | None]] = {f.__name__: [] for f in funcs}
    totals: list[float] = []
    start = time.perf_counter()
    for first in range(0, len(rows), batch_size):
        batch = rows[first:first + batch_size]
        scores, batch_totals = score_completions(
            funcs, weights, [r["prompt"] for r in batch], [completion_text(r["completion"]) for r in batch],
            {c: [r.get(c) for r in batch] for c in columns})
        for name, values in scores.items():
            per_term[name] += values
        totals += batch_totals
    seconds = time.perf_counter() - start
    report = {"file": str(path), "reward": reward.name, "rows": len(rows), "seconds": round(seconds, 3),
              "rows_per_s": round(len(rows) / seconds, 1) if seconds else None,
              "terms": {f.__name__: {**stats(per_term[f.__name__]), "weight": w, "failures": f.term.failures,
                                     "seconds": round(f.term.seconds, 3)} for f, w in zip(funcs, weights, strict=True)},
              "total": stats(totals)}
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w") as handle:
            for i, row in enumerate(rows):
                scored = {**row, "scores": {k: v[i] for k, v in per_term.items()}, "total": totals[i]}
                handle.write(json.dumps(scored, ensure_ascii=False) + "\n")
    return report


def stats(values: list[float | None]) -> dict[str, Any]:
    """mean, std, min, max over the scored rows; `none` counts rows a term did not apply to (None / NaN)."""
    scored = [v for v in values if v is not None and not math.isnan(v)]
    if not scored:
        return {"mean": None, "std": None, "min": None, "max": None, "none": len(values)}
    return {"mean": statistics.fmean(scored), "std": statistics.pstdev(scored), "min": min(scored),
            "max": max(scored), "none": len(values) - len(scored)}


def table(report: dict[str, Any]) -> str:
    header = (f"{'term':<16} {'weight':>7} {'mean':>9} {'std':>9} {'min':>9} {'max':>9} {'none':>5} {'failed':>6} "
              f"{'s':>7}")
    lines = [f"{report['file']}: {report['rows']} rows, reward={report['reward']}, {report['seconds']} s "
             f"({report['rows_per_s']} rows/s)", header]
    for name, s in [*report["terms"].items(), ("total", report["total"])]:
        cells = [f"{s[k]:>9.4f}" if s[k] is not None else f"{'-':>9}" for k in ("mean", "std", "min", "max")]
        weight = f"{s['weight']:>7g}" if "weight" in s else f"{'':>7}"
        tail = f"{s['failures']:>6} {s['seconds']:>7.3f}" if "failures" in s else ""
        lines.append(f"{name:<16} {weight} {' '.join(cells)} {s['none']:>5} {tail}".rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.score", description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="JSONL: prompt, completion and data columns per line")
    parser.add_argument("options", nargs="*", help=f"reward=NAME, reward.KEY=VALUE, key=value: {', '.join(OPTIONS)}")
    args = parser.parse_args(argv)
    overrides = [a for a in args.options if a.lstrip("+~").startswith("reward")]
    opts = parse_options([a for a in args.options if a not in overrides], OPTIONS)
    from pipeline.config.secrets import refuse_secret_overrides

    refuse_secret_overrides(["score", *overrides])  # a key belongs in the environment, named by api_key_env
    from pipeline.rewards import RewardError

    try:
        print(table(score_file(args.file, overrides, **opts)))
    except RewardError as err:
        raise SystemExit(str(err)) from None


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with reported():  # a user error: one block on stderr, exit 2
        main()
