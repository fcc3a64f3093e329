"""The docs cannot rot: README.md and docs/*.md build as a site, their commands compose, their links resolve.

(a) `mkdocs build --strict` (mkdocs.yml at the root) succeeds: a page missing from the nav, a broken link between
    pages or an unknown anchor fails it.
(b) Every `python pipeline/run.py ARGS` command line (in a fenced block, backslash continuations joined, or in an
    inline code span), and `deepspeed | accelerate launch | torchrun | sbatch ... pipeline/run.py ARGS` and
    `launch/<script> ARGS` too, is run as the dry run would run it (`dry_run=true`): the same argv fix-ups as
    pipeline/run.py, Hydra's compose, the plan's validation (every cross-field rule) and the dry-run report (launch
    command, memory estimate), in-process and with nothing loaded. A sweep (`-m a=x,y`) composes every job; a job
    validation refuses is fine there (the sweep records it as refused.txt) as long as one job is valid.
    Rule for placeholders: a command whose ARGS hold `<...>`, `…`, `...` or one of the words in PLACEHOLDERS (a run
    dir, a folder or a file the reader supplies) is skipped, and the test says how many it checked and skipped;
    at least MIN_COMMANDS must be checked, so deleting the docs' commands (or a broken extractor) fails it.
(c) Every relative link and image in README.md and docs/*.md points at an existing file.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from pipeline.config.argv import open_trl_keys, quote_name_lists
from pipeline.config.checks import ConfigError
from pipeline.config.plan import plan_run
from pipeline.config.schema import register_configs
from pipeline.launch.launcher import dry_run_report

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MIN_COMMANDS = 25

# Words the docs use for what the reader fills in (RUN = a run dir, DIR/FILE = theirs, NODE0/K = a host, a rank).
PLACEHOLDERS = ("RUN", "DIR", "FILE", "OTHER", "NODE0", "K", "N")
_PLACEHOLDER = re.compile(r"<[^>]*>|…|\.\.\.|\b(?:" + "|".join(PLACEHOLDERS) + r")\b")
_LAUNCHERS = {"python", "python3", ".venv/bin/python", "deepspeed", "accelerate", "torchrun", "sbatch"}
_SCRIPT = re.compile(r"^(?:pipeline/run\.py|launch/\w+\.(?:sh|sbatch))$")
_FENCE = re.compile(r"^([ \t]*)```.*?^\1```", re.S | re.M)
_INLINE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def _fenced_lines(text: str) -> list[str]:
    lines = []
    for block in _FENCE.finditer(text):
        body = block.group(0).split("\n")[1:-1]
        joined = "\n".join(line.strip() for line in body).replace("\\\n", " ")
        lines += joined.split("\n")
    return lines


def _inline_spans(text: str) -> list[str]:
    return _INLINE.findall(_FENCE.sub("", text))


def _args(line: str) -> list[str] | None:
    """ARGS of a pipeline/run.py (or launch/ script) command line, None when the line is no such command."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return None
    words = [t for t in tokens if not _ENV.match(t)]  # VAR=value prefixes of the launcher
    script = next((i for i, t in enumerate(words) if _SCRIPT.match(t)), None)
    if script is None or (script > 0 and words[0] not in _LAUNCHERS):
        return None
    if script == 0 and (words[0] == "pipeline/run.py" or len(words) == 1):  # a file named, not a command
        return None
    return words[script + 1:]


def doc_commands() -> list[tuple[str, str]]:
    """(page, command line) for every run.py command in the docs, fenced lines and inline spans."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for line in _fenced_lines(text) + _inline_spans(text):
            if _args(line) is not None:
                found.append((page.name, line))
    return found


def _sweep_jobs(args: list[str]) -> list[list[str]]:
    """A --multirun's jobs: every combination of the comma-separated values (Hydra's basic sweeper)."""
    rest = [a for a in args if a not in ("-m", "--multirun")]
    choices = []
    for arg in rest:
        key, eq, value = arg.partition("=")
        if eq and "," in value and value[:1] not in ("[", "{", "'", '"'):
            choices.append([f"{key}={v}" for v in value.split(",")])
        else:
            choices.append([arg])
    return [list(job) for job in itertools.product(*choices)]


def _overrides(args: list[str]) -> list[str]:
    """What Hydra gets from pipeline/run.py's argv: its fix-ups applied, Hydra's own flags (--cfg job) dropped."""
    argv = ["pipeline/run.py", *args]
    quote_name_lists(argv)
    open_trl_keys(argv)
    out, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg in ("--cfg", "-c", "--package", "-p"):
            skip = True
        elif not arg.startswith("-"):
            out.append(arg)
    return out


def _dry_run(overrides: list[str], run_dir: Path) -> str:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return dry_run_report(cfg, plan_run(cfg, run_dir), overrides)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # As typed by a user: no launcher around us, no run id pinned, run from the repo root.
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "RUN_ID", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(REPO)
    register_configs()


def test_every_documented_command_composes_as_a_dry_run(clean_env: None, tmp_path: Path) -> None:
    checked, skipped, failures, seen = 0, 0, [], set()
    for page, line in doc_commands():
        args = _args(line)
        if _PLACEHOLDER.search(" ".join(args)):
            skipped += 1
            continue
        if tuple(args) in seen:  # the same ARGS on two pages (or launched two ways): composed once
            continue
        seen.add(tuple(args))
        jobs = _sweep_jobs(args) if ("-m" in args or "--multirun" in args) else [args]
        refused, broken, valid = [], [], 0
        for i, job in enumerate(jobs):
            try:
                assert "# ---- memory" in _dry_run(_overrides(job), tmp_path / f"run{checked}_{i}")
                valid += 1
            except ConfigError as err:  # validation refused it: fatal for a single run, recorded in a sweep
                refused.append(f"{job}: {err}")
            except Exception as err:  # Hydra's compose errors (a typo'd key, an unknown option): always fatal
                broken.append(f"{job}: {type(err).__name__}: {err}")
        if broken or not valid or (len(jobs) == 1 and refused):
            failures.append(f"{page}: {line}\n    " + "\n    ".join(broken + refused))
        checked += 1
    print(f"{checked} distinct documented commands composed as dry runs, {skipped} skipped (placeholders)")
    assert not failures, "documented commands that do not compose:\n" + "\n".join(failures)
    assert checked >= MIN_COMMANDS, f"only {checked} commands found in the docs (skipped {skipped})"
    assert not any(tmp_path.iterdir()), "a dry run wrote into its run dir"


def test_every_relative_link_points_at_a_file() -> None:
    broken, seen = [], 0
    for page in PAGES:
        text = _INLINE.sub("", _FENCE.sub("", page.read_text(encoding="utf-8")))
        for target in _LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # http(s), mailto, ...: not ours to check; an anchor in the same page: mkdocs checks
            seen += 1
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(REPO)}: ({target}) -> {path} does not exist")
    assert not broken, "\n".join(broken)
    assert seen >= 20, f"only {seen} relative links found: is the link pattern still right?"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs is not installed (dev extra: pip install -c constraints.txt -e '.[dev]')")
def test_docs_build_as_a_site_in_strict_mode(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"), "-d", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "index.html").is_file()
    assert (tmp_path / "configuration" / "index.html").is_file()
