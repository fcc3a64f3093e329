"""Sample scored groups from a model: n completions per prompt, each scored with reward terms, written as the
`scored_groups` JSONL (prompt, responses, scores) that stage=group_pref and stage=dpo train on as is.

    python -m pipeline.tools.sample outputs/sft/RUN data=prompts.jsonl n=8 reward=correctness
    python -m pipeline.tools.sample outputs/sft/RUN n=8 which=best out=groups.jsonl   # the run's own data/rewards
    python -m pipeline.tools.sample HuggingFaceTB/SmolLM2-135M-Instruct data=builtin:arithmetic reward=shaped limit=50

The offline loop sample -> score -> train, in three commands:

    python pipeline/run.py stage=sft model=tiny max_steps=20 output_dir=outputs/loop/sft
    python -m pipeline.tools.sample outputs/loop/sft n=8 reward=shaped out=outputs/loop/groups.jsonl
    python pipeline/run.py stage=group_pref model=tiny data=jsonl data.path=outputs/loop/groups.jsonl

Prompts come from `data` (prompt/answer rows, read as stage=grpo reads them, so the reward terms get the same
columns); a run directory supplies its own data settings and reward terms when none are given. `reward` names a
conf/reward/ option. Rewards are computed exactly as in GRPO (pipeline.rewards: the same bound terms, weights and
call). Groups whose responses all score the same carry no preference (group_pref and dpo refuse them): they are
dropped and counted unless keep_ties=true.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from tqdm.auto import tqdm

from pipeline.config.data_schema import DataConfig
from pipeline.config.run_dir import replacing
from pipeline.config.schema import RewardConfig
from pipeline.config.user_errors import reported
from pipeline.data.loader import load_stage_data
from pipeline.rewards import build_reward_funcs, score_completions
from pipeline.tools.tuned import RunDirError, load_plain, load_tuned, run_config
from pipeline.train.observe.heldout import generate_texts

log = logging.getLogger(__name__)
CONF = Path(__file__).resolve().parents[2] / "conf"
OPTIONS = {"data": str, "n": int, "reward": str, "out": str, "max_new_tokens": int, "temperature": float,
           "limit": int, "batch_size": int, "which": str, "keep_ties": lambda v: v.lower() in ("1", "true", "yes")}


def reward_option(name: str) -> RewardConfig:
    """conf/reward/<name>.yaml merged into its schema (the same terms a run with reward=<name> trains on)."""
    path = CONF / "reward" / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (CONF / "reward").glob("*.yaml")))
        raise SystemExit(f"reward={name}: no conf/reward/{name}.yaml. Known: {known}.")
    raw = OmegaConf.load(path)
    raw.pop("defaults", None)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RewardConfig), raw))


def load_source(source: str, which: str) -> tuple[Any, Any, Any]:
    """(model, tokenizer, the run's config or None) for a run directory, a model directory or a hub id."""
    if (Path(source) / "config.yaml").is_file():
        cfg = run_config(Path(source))
        model, tokenizer = load_tuned(Path(source), cfg, which)
        return model, tokenizer, cfg
    return (*load_plain(source), None)


def sample_groups(source: str, **opts: Any) -> dict[str, Any]:
    """Write the scored groups; returns {out, groups, dropped_ties, responses}."""
    model, tokenizer, cfg = load_source(source, opts.get("which", "final"))
    data = _data_config(cfg, opts.get("data"))
    rewards = reward_option(opts["reward"]) if opts.get("reward") else (cfg.reward if cfg else None)
    if rewards is None or not rewards.terms:
        raise SystemExit("no reward terms: give reward=NAME (a conf/reward/ option, e.g. reward=correctness).")
    funcs, weights = build_reward_funcs(rewards.terms)
    rows = load_stage_data(data, "grpo", cfg.seed if cfg else 42).train
    if opts.get("limit"):
        rows = rows.select(range(min(opts["limit"], len(rows))))
    n, batch = opts.get("n", 8), opts.get("batch_size", 8)
    groups, ties = [], 0
    for start in tqdm(range(0, len(rows), batch), desc="sample", unit="batch"):
        chunk = rows[start : start + batch]
        texts = generate_texts(model, tokenizer, chunk["prompt"], opts.get("max_new_tokens", 64), samples=n,
                               temperature=opts.get("temperature", 1.0))
        # each prompt's n completions are adjacent: repeat every data column n times to line up with them
        columns = {c: [v for v in chunk[c] for _ in range(n)] for c in chunk if c != "prompt"}
        prompts = [p for p in chunk["prompt"] for _ in range(n)]
        _, totals = score_completions(funcs, weights, prompts, texts, columns)
        for i, prompt in enumerate(chunk["prompt"]):
            scores = totals[i * n : (i + 1) * n]
            if len(set(scores)) < 2 and not opts.get("keep_ties"):
                ties += 1
                continue
            groups.append({"prompt": prompt, "responses": texts[i * n : (i + 1) * n], "scores": scores})
    out = Path(opts.get("out") or "scored_groups.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out) as partial:
        partial.write_text("".join(json.dumps(g, ensure_ascii=False) + "\n" for g in groups))
    if ties:
        log.warning("%d of %d groups dropped: all %d responses scored the same (keep_ties=true keeps them)",
                    ties, len(rows), n)
    return {"out": str(out), "groups": len(groups), "dropped_ties": ties, "responses": len(groups) * n}


def _data_config(cfg: Any, path: str | None) -> DataConfig:
    if cfg is None:
        if not path:
            raise SystemExit("data=FILE is needed when sampling from a model rather than a run directory.")
        return DataConfig(name=Path(path).stem, path=path)
    if not path:
        return cfg.data
    # the run's prompt settings (template, system prompt, columns) on other prompts; no held-out split
    return replace(cfg.data, name=Path(path).stem, path=path, eval_path=None, eval_split=None, eval_size=0,
                   limit=None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.sample", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a run directory, a model directory or a hub id")
    parser.add_argument("options", nargs="*", help=f"key=value: {', '.join(OPTIONS)}")
    args = parser.parse_args(argv)
    opts: dict[str, Any] = {}
    for pair in args.options:
        key, sep, value = pair.partition("=")
        if not sep or key not in OPTIONS:
            parser.error(f"unknown option {pair!r}: use key=value with key one of {', '.join(OPTIONS)}.")
        opts[key] = OPTIONS[key](value)
    try:
        report = sample_groups(args.source, **opts)
    except RunDirError as err:
        raise SystemExit(str(err)) from None
    print(json.dumps(report))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with reported():  # a user error: one block on stderr, exit 2
        main()
