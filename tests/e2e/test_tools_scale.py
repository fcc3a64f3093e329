"""Tool and environment runs at scale and across restarts, as a user starts them (pipeline/run.py, real launchers).

Two gloo ranks with the calculator's tools under DDP (the self re-launch through accelerate) and under ZeRO-3, and
with the stateful guess-the-number game under ZeRO-2; kill -9 between checkpoints then `resume=auto` gives the same
losses, grad norms, rewards and lengths as the uninterrupted run, with the game's own random state saved in each
checkpoint (listed by its completeness marker) and put back on resume.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from pipeline.launch.launcher import free_port
from pipeline.train.checkpoint.resume import checkpoints, is_complete
from tests.helpers.distributed import RUN, args, check_two_rank_run, launch
from tests.helpers.resume import STEPS, args_for, assert_same_losses, start, wait_for
from tests.helpers.runs import logged, run_pipeline

pytestmark = pytest.mark.usefixtures("deepspeed_ops")

TOOLS = {
    "calculator": ["model.chat_template=qwen2.5", "env=calculator"],
    # the game scores its episodes; a random tiny model never wins, so a length term gives the advantages a spread
    "guess_number": ["model.chat_template=qwen2.5", "env=guess_number", "env.placeholder_rows=32",
                     "reward=game_length"],
}
GAME_REWARD = """\
defaults:
  - base_reward
  - _self_
name: game_length
terms:
  environment:
    _target_: pipeline.envs.rewards.episode_reward
  length:
    kwargs:
      target: 32
    weight: 0.1
"""


def tool_args(env: str, tmp: Path) -> list[str]:
    """The env's overrides; the game's reward is a user's own option beside conf/ (hydra.searchpath)."""
    found = list(TOOLS[env])
    if env == "guess_number":
        conf = tmp / "conf" / "reward"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "game_length.yaml").write_text(GAME_REWARD)
        found.append(f"hydra.searchpath=[file://{tmp / 'conf'}]")
    return found


@pytest.mark.parametrize(("zero", "env"), [("none", "calculator"),
                                           pytest.param("zero2", "guess_number", marks=pytest.mark.slow),
                                           pytest.param("zero3", "calculator", marks=pytest.mark.slow)])
def test_tools_on_two_ranks(zero: str, env: str, tmp_path: Path, model_cache: Path) -> None:
    overrides = args("grpo", tmp_path, model_cache, f"zero={zero}", *tool_args(env, tmp_path))
    if zero == "none":  # DDP: plain python re-launches itself through accelerate
        command = [sys.executable, RUN, *overrides]
    else:
        command = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port",
                   str(free_port()), RUN, *overrides]
    proc = launch(command, tmp_path, f"tools-{zero}-{env}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    output = proc.stdout + proc.stderr
    assert f"env={env}:" in output
    summary = check_two_rank_run(tmp_path, "grpo", output, "ddp" if zero == "none" else f"deepspeed-{zero}",
                                 model_cache, heldout=env != "guess_number")
    # each tool's calls, failures and timeouts (a random tiny model seldom calls one: the counters may be empty)
    assert set(summary["tools"]) <= {"calculate", "guess"}


def test_game_kill_9_then_resume_equals_uninterrupted(tmp_path: Path, model_cache: Path) -> None:
    extra = tool_args("guess_number", tmp_path)
    reference_dir = tmp_path / "uninterrupted"
    proc = run_pipeline(args_for("grpo", reference_dir, model_cache, *extra), cwd=tmp_path, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = logged(reference_dir)

    run_dir = tmp_path / "killed"
    proc = start(args_for("grpo", run_dir, model_cache, *extra), tmp_path)
    wait_for(lambda: 3 in logged(run_dir), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (saved,) = [c for c in checkpoints(run_dir) if is_complete(c)]
    marker = json.loads((saved / "checkpoint_complete.json").read_text())
    assert "environments_rank0.pkl" in marker["files"]  # written before the marker, so counted in it

    done = run_pipeline(args_for("grpo", run_dir, model_cache, *extra, "resume=auto"), cwd=tmp_path,
                        OMP_NUM_THREADS="1")
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "environment instance(s) got their random state back from environments_rank0.pkl" in log
    resumed = logged(run_dir)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert_same_losses(resumed, reference, first=3)
    assert all(row.get("rewards/environment/mean") is not None for row in resumed.values())
