"""`python -m pipeline.tools.evaluate RUN harness=...`: real lm-evaluation-harness against our real server (served
from a thread on 127.0.0.1), on a tiny finished run. The multiple-choice score is recomputed in process from the
model's own log-probs, choice by choice, so a server that scored the wrong tokens or positions would fail."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.runs import REPO, offline_env

MCQ = REPO / "tests" / "fixtures" / "formats" / "mcq.tsv"
GSM8K = REPO / "tests" / "fixtures" / "formats" / "gsm8k.jsonl"
LETTERS = "ABCD"


@pytest.fixture
def run(tiny_run: Path, tmp_path: Path) -> Path:
    # A copy: the harness writes into the run (summary.json, tb/, eval/), and tiny_run is shared.
    shutil.copytree(tiny_run, tmp_path / "run")
    return tmp_path / "run"


def in_process_mcq(run: Path) -> tuple[float, list[list[float]]]:
    """The task computed by hand: for each usable row, the log-prob of " A".." D" after the prompt, as lm-eval
    tokenizes a (context, continuation) pair (the whole string, then the context's tokens cut off)."""
    from pipeline.tools.tuned import load_tuned

    model, tokenizer = load_tuned(run)
    with MCQ.open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t")
                if all(r[k].strip() for k in ("question", "option_A", "option_B", "option_C", "option_D"))
                and r["correct_answer"].strip().upper() in LETTERS]  # the mcq format reads "d" as D
    hits, scores = [], []
    for r in rows:
        context = r["question"] + "".join(f"\n{x}. {r['option_' + x]}" for x in LETTERS) + "\nAnswer:"
        lls = []
        for letter in LETTERS:
            ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
            whole = tokenizer(context + " " + letter, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].float(), dim=-1)
            lls.append(sum(float(logp[t - 1, whole[t]]) for t in range(len(ctx), len(whole))))
        scores.append(lls)
        hits.append(max(range(4), key=lls.__getitem__) == LETTERS.index(r["correct_answer"].strip().upper()))
    return sum(hits) / len(hits), scores


def test_local_completions_multiple_choice_equals_the_in_process_score(run: Path) -> None:
    from pipeline.tools.evaluate import evaluate_run

    report = evaluate_run(run, harness="pipeline_mcq", **{"harness.mcq": str(MCQ)})
    accuracy, scores = in_process_mcq(run)
    assert report["models"]["tuned"]["pipeline_mcq"]["acc"] == accuracy
    samples = [json.loads(line) for line in (run / "eval/harness_samples/tuned/pipeline_mcq.jsonl").open()]
    served = [[resp[0][0] for resp in s["resps"]] for s in sorted(samples, key=lambda s: s["doc_id"])]
    assert len(served) == len(scores) == 4  # the fixture's 6 rows less the blank one and the one answered "E"
    assert torch.allclose(torch.tensor(served), torch.tensor(scores), atol=1e-4)


def test_cli_compares_base_and_tuned_and_writes_summary_tb_and_table(run: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pipeline.tools.evaluate import evaluate_run

    proc = subprocess.run([sys.executable, "-m", "pipeline.tools.evaluate", str(run), "compare=base",
                           "harness=pipeline_heldout,pipeline_gsm8k,pipeline_mcq", f"harness.mcq={MCQ}",
                           f"harness.gsm8k={GSM8K}"], cwd=tmp_path, env=offline_env(OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    head, *lines = proc.stdout.strip().splitlines()[-6:]
    assert head.split() == ["task", "metric", "base", "tuned", "change"]
    assert {line.split()[0] for line in lines} == {"pipeline_heldout", "pipeline_gsm8k", "pipeline_mcq"}
    models = json.loads((run / "summary.json").read_text())["harness"]
    assert set(models) == {"base", "tuned"} and "exact_match_strict-match" in models["tuned"]["pipeline_gsm8k"]
    events = EventAccumulator(str(run / "tb")).Reload()
    steps = {e.step: e.value for e in events.Scalars("harness/pipeline_mcq/acc")}
    assert steps == {0: models["base"]["pipeline_mcq"]["acc"], 2: models["tuned"]["pipeline_mcq"]["acc"]}
    # The held-out task through lm-eval's chat client: the same completions as held-out evaluation's own.
    harness = [json.loads(line) for line in (run / "eval/harness_samples/tuned/pipeline_heldout.jsonl").open()]
    evaluate_run(run)
    ours = [json.loads(line) for line in (run / "eval/predictions.jsonl").open()]
    assert [s["resps"][0][0] for s in sorted(harness, key=lambda s: s["doc_id"])] == \
        [r["tuned_completion"] for r in ours]


def test_bad_harness_options_name_the_fix(run: Path, tmp_path: Path) -> None:
    from pipeline.tools.evaluate import evaluate_run

    with pytest.raises(SystemExit, match="harness.include_path=DIR"):
        evaluate_run(run, harness="no_such_task_anywhere")
    with pytest.raises(SystemExit, match=r"harness.mcq=FILE"):
        evaluate_run(run, harness="pipeline_mcq")
    with pytest.raises(SystemExit, match="no such directory"):
        evaluate_run(run, harness="pipeline_mcq", **{"harness.mcq": str(MCQ), "harness.include_path": "nope"})
    with pytest.raises(SystemExit, match="need harness=TASKS"):
        evaluate_run(run, **{"harness.mcq": str(MCQ)})
