"""User errors through the real entry points (pipeline/run.py and python -m pipeline.tools.*): one block on stderr
-- what, where, the fix --, exit code 2, no Python traceback and no Hydra "HYDRA_FULL_ERROR" line. One case per
error family; HYDRA_FULL_ERROR=1 and logging.level=debug still show the traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers.runs import REPO, TINY, offline_env, run_pipeline

LF = REPO / "tests" / "fixtures" / "llamafactory"
GOOD = {"prompt": "What is 1 + 1?", "answer": "2"}


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    err = proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}:\n{err[-3000:]}"
    assert "Traceback" not in err and "HYDRA_FULL_ERROR" not in err, err[-3000:]
    assert err.count("error: ") == 1, err[-3000:]  # one block
    for needle in needles:
        assert needle in err, f"{needle!r} missing from:\n{err[-3000:]}"


def run(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return run_pipeline([*TINY, *args, f"output_dir={tmp / 'run'}", f"paths.cache_dir={tmp / 'cache'}"],
                        cwd=tmp, timeout=300, **env)


def tool(tmp: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"pipeline.tools.{name}", *args], cwd=tmp, env=offline_env(),
                          capture_output=True, text=True, timeout=300)


def test_bad_data_row(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{oops\n")
    proc = run(tmp_path, "data=jsonl", f"data.path={path}", PYTHONPROFILEIMPORTTIME="1")
    assert_user_error(proc, f"{path}:2: malformed JSON", "Fix:")
    # read before torch, TRL and peft are imported (pipeline/data/early.py): a second, not 7-10 s of imports
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    assert "pipeline.data.loader" in imported and not imported & {"torch", "trl", "peft", "transformers"}


def test_missing_data_file(tmp_path: Path) -> None:
    assert_user_error(run(tmp_path, "data=jsonl", f"data.path={tmp_path / 'nope.jsonl'}"), "nope.jsonl", "Fix:")


def test_unknown_option_and_typod_key(tmp_path: Path) -> None:
    proc = run(tmp_path, "stage=bogus")
    assert_user_error(proc, "stage=bogus: no such option", "Fix: one of", "grpo", "sft")
    assert "base_grpo" not in proc.stderr  # schema nodes are not options
    assert_user_error(run(tmp_path, "stage.learning_rat=1e-4"), "stage.learning_rat: no such key", "spelling")
    assert not (tmp_path / "run").exists()


def test_own_reward_option_without_name(tmp_path: Path) -> None:
    """A reward option written with only what differs: its name comes from the file; a bad term names the fix."""
    rewards = tmp_path / "conf" / "reward"
    rewards.mkdir(parents=True)
    head = "defaults:\n  - base_reward\n  - _self_\nterms:\n"
    (rewards / "mine.yaml").write_text(head + "  correctness:\n    weight: 1.0\n")
    (rewards / "typo.yaml").write_text(head + "  corectness:\n    weight: 1.0\n")
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    ok = run(tmp_path, "reward=mine", search, "dry_run=true")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "name: mine" in ok.stdout
    assert_user_error(run(tmp_path, "reward=typo", search, "dry_run=true"),
                      "unknown reward 'corectness'", "Set reward.terms.corectness.function")


def test_template_that_drops_tools(tmp_path: Path) -> None:
    proc = run(tmp_path, "stage=sft", "max_steps=1", "data=llamafactory", f"data.dataset_dir={LF}",
               "data.dataset=tool_chat")
    assert_user_error(proc, "the chat template drops", "Fix: set model.chat_template=qwen2.5")


def test_tools_bad_run_dir_and_option(tmp_path: Path) -> None:
    nope = tmp_path / "nope"
    assert_user_error(tool(tmp_path, "evaluate", str(nope)), f"{nope} is not a run directory", "Fix:")
    assert_user_error(tool(tmp_path, "serve", str(nope), "prot=8000"), "unknown option 'prot=8000'", "port")


def test_traceback_when_asked(tmp_path: Path) -> None:
    # both fail before torch loads: an unknown option at compose time, a config rule inside the task function
    full = run(tmp_path, "stage=bogus", HYDRA_FULL_ERROR="1")
    assert full.returncode == 1 and "Traceback" in full.stderr and "MissingConfigException" in full.stderr
    debug = run(tmp_path, "reward.terms.correctness.function=bogus", "logging.level=debug", "dry_run=true")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr, debug.stderr
