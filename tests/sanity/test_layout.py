"""The tests' floor plan: tests/ mirrors the package, no test file imports another, and what starts pipeline/run.py
outside tests/e2e/ is marked e2e (so `pytest -m "not e2e"` is the unit suite).

Each rule is a function over a tree or a source, checked on the real tests/ and on a small synthetic case that must
break it (a rule that cannot fail proves nothing)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.helpers.runs import E2E_FIXTURES, PIPELINE_STARTERS, REPO

TESTS = REPO / "tests"
# folders of tests/ that are not a package's mirror
OWN = {"helpers", "fixtures", "e2e", "sanity"}
# top-level folders a tests/ folder may mirror besides pipeline/'s packages
TOP_LEVEL = {"bench"}
# a dotted name of a test module: tests.<...>.test_x or tests.conftest (also as a `_target_` string)
TEST_MODULE = re.compile(r"^tests(\.\w+)*\.(test_\w+|conftest)(\.|$)")


def code_dirs(tests: Path) -> list[Path]:
    """Every folder of tests/ that holds code, relative to tests/ (caches and the own folders left out)."""
    found = []
    for path in sorted(tests.rglob("*")):
        rel = path.relative_to(tests)
        if path.is_dir() and rel.parts[0] not in OWN and "__pycache__" not in rel.parts:
            found.append(rel)
    return found


def unmirrored(tests: Path, repo: Path) -> list[str]:
    """tests/ folders that name no package folder: tests/a/b must be pipeline/a/b (or a top-level a/b, e.g. bench)."""
    bad = []
    for rel in code_dirs(tests):
        mirrored = (repo / "pipeline" / rel).is_dir() or (rel.parts[0] in TOP_LEVEL and (repo / rel).is_dir())
        if not mirrored:
            bad.append(str(rel))
        elif not (tests / rel / "__init__.py").is_file():
            bad.append(f"{rel} (no __init__.py: tests is a package)")
    return bad


def test_every_tests_folder_mirrors_a_package_folder() -> None:
    scanned = code_dirs(TESTS)
    assert {"config", "data", "rewards", "train", "train/levers", "bench"} <= {str(p) for p in scanned}
    assert unmirrored(TESTS, REPO) == []


def test_the_mirror_rule_names_a_stray_folder(tmp_path: Path) -> None:
    for folder in ("pipeline/train/levers", "pipeline/data", "bench"):
        (tmp_path / folder).mkdir(parents=True)
    for folder in ("tests/train/levers", "tests/data", "tests/bench", "tests/train/gadgets", "tests/misc",
                   "tests/helpers", "tests/e2e"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "__init__.py").touch()
    (tmp_path / "tests" / "train" / "__init__.py").touch()
    (tmp_path / "tests" / "train" / "levers" / "__init__.py").unlink()
    assert unmirrored(tmp_path / "tests", tmp_path) == [
        "misc", "train/gadgets", "train/levers (no __init__.py: tests is a package)"]


def imports_of_test_files(source: str) -> list[str]:
    """The test modules (any test_x module under tests, or its conftest) a source imports, or names as a dotted
    string."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = re.findall(r"\btests(?:\.\w+)+", node.value)
        else:
            continue
        found += [f"{getattr(node, 'lineno', '?')}: {name}" for name in names if TEST_MODULE.match(name)]
    return found


def test_no_test_file_imports_another() -> None:
    sources = sorted(TESTS.rglob("*.py"))
    assert len(sources) > 50
    offenders = {str(p.relative_to(REPO)): found for p in sources if (found := imports_of_test_files(p.read_text()))}
    assert offenders == {}, "move what they share into tests/helpers/"


def test_the_import_rule_finds_imports_and_dotted_targets() -> None:
    # spelled with PKG, so that this file's own strings name no test module
    source = '''
from PKG.helpers.runs import TINY
from PKG.data.test_formats import cfg
import PKG.e2e.test_stages
from PKG.conftest import offline_env
from PKG.train import test_trl_surface
TARGET = "reward.terms.x._target_=PKG.rewards.test_calls.breaks_on_x"
OK = "PKG.helpers.rewards.slow_len"
'''.replace("PKG", "tests")
    expected = ["3: PKG.data.test_formats", "3: PKG.data.test_formats.cfg", "4: PKG.e2e.test_stages",
                "5: PKG.conftest", "5: PKG.conftest.offline_env", "6: PKG.train.test_trl_surface",
                "7: PKG.rewards.test_calls.breaks_on_x"]
    assert imports_of_test_files(source) == [line.replace("PKG", "tests") for line in expected]


def unmarked_pipeline_runs(source: str) -> list[str]:
    """Tests that start pipeline/run.py (directly or through a helper function or fixture of their module) but are
    not marked e2e, by decorator, by the module's pytestmark or by an e2e fixture (tests/conftest.py marks those)."""
    tree = ast.parse(source)
    starters = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module in PIPELINE_STARTERS:
            starters |= {a.asname or a.name for a in node.names if a.name in PIPELINE_STARTERS[node.module]}
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    runners = set(starters)
    while True:  # module functions (helpers, fixtures) that reach a starter
        more = {name for name, fn in functions.items() if name not in runners
                and {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)} & runners}
        if not more:
            break
        runners |= more
    module_marked = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                        and "e2e" in ast.unparse(n.value) for n in tree.body)
    bad = []
    for name, fn in functions.items():
        if not name.startswith("test_") or module_marked:
            continue
        params = {a.arg for a in fn.args.args}
        reaches = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)} & runners or params & runners
        marked = any("mark.e2e" in ast.unparse(d) for d in fn.decorator_list) or params & E2E_FIXTURES
        if reaches and not marked:
            bad.append(name)
    return bad


def test_pipeline_runs_outside_e2e_are_marked() -> None:
    sources = [p for p in sorted(TESTS.rglob("test_*.py")) if "e2e" not in p.relative_to(TESTS).parts]
    assert len(sources) > 40
    offenders = {str(p.relative_to(REPO)): bad for p in sources if (bad := unmarked_pipeline_runs(p.read_text()))}
    assert offenders == {}, "mark them @pytest.mark.e2e or move them to tests/e2e/"


def test_the_marking_rule_follows_helpers_and_fixtures() -> None:
    source = '''
import pytest
from tests.helpers.runs import TINY, train_tiny as train

def helper(tmp):
    return train(tmp)

@pytest.fixture
def trained(tmp_path):
    return helper(tmp_path)

def test_direct(tmp_path):
    train(tmp_path)

def test_through_a_fixture(trained):
    assert trained

@pytest.mark.e2e
def test_marked(tmp_path):
    helper(tmp_path)

def test_on_the_shared_run(tiny_run):
    assert tiny_run

def test_unit():
    assert TINY
'''
    assert unmarked_pipeline_runs(source) == ["test_direct", "test_through_a_fixture"]
    assert unmarked_pipeline_runs("import pytest\npytestmark = pytest.mark.e2e\n" + source.split("\n", 2)[2]) == []
