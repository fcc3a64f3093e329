"""The fence: a private name (`_x`) of TRL, transformers, torch, DeepSpeed, peft or accelerate may appear only in
pipeline/train/levers/ and pipeline/train/trl_surface.py, and each one used there is listed in
trl_surface.PRIVATE_HOOKS. Private names are taken from the installed libraries' own source, so a name of ours that
happens to look private (`self._said`) is not one, and a library's private method we override is."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from functools import cache
from pathlib import Path

from pipeline.train.trl_surface import PRIVATE_HOOKS

REPO = Path(__file__).resolve().parents[2]
LIBS = ("trl", "transformers", "torch", "deepspeed", "peft", "accelerate")
FENCE = ("pipeline/train/levers/", "pipeline/train/trl_surface.py")
# namedtuple's documented API and Python's own protocol names are public despite the underscore
PUBLIC = {"_replace", "_asdict", "_fields", "_make", "_field_defaults", "_missing_", "_generate_next_value_"}
NAME = re.compile(r"(?:\.|def |class )(_[A-Za-z]\w*)")


@cache
def library_private_names() -> frozenset[str]:
    names: set[str] = set()
    for lib in LIBS:
        root = Path(importlib.util.find_spec(lib).origin).parent
        for file in root.rglob("*.py"):
            names.update(NAME.findall(file.read_text(errors="ignore")))
    return frozenset(names - PUBLIC)


@cache
def _source(cls: type) -> str:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        return ""


def _sets(classes: list[type], attr: str) -> bool:
    """Whether a library class among `classes` keeps `attr` on its instances (`self.attr` in its source)."""
    return any(f"self.{attr}" in _source(c) for c in classes)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


class Uses(ast.NodeVisitor):
    """The `_x` names a module uses, the ones it defines itself, and its methods overriding a library class's."""

    def __init__(self, module: str, namespace: dict | None = None) -> None:
        self.module, self.namespace = module, namespace
        self.used, self.defined, self.overrides = {}, set(), set()
        self.library_bases: list[type] = []  # of the class being visited: the names they own are not ours

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _private(node.attr):
            self.used.setdefault(node.attr, node.lineno)
            owner = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if isinstance(node.ctx, ast.Store) and owner and not _sets(self.library_bases, node.attr):
                self.defined.add(node.attr)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if node.module and node.module.split(".")[0] in LIBS and _private(alias.name):
                self.used.setdefault(alias.name, node.lineno)
            elif alias.asname and _private(alias.asname):
                self.defined.add(alias.asname)

    def visit_Call(self, node: ast.Call) -> None:  # getattr(x, "_name"), monkeypatch.setattr(x, "_name", ...)
        func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if func in ("getattr", "hasattr", "setattr", "delattr") and len(node.args) >= 2:
            arg = node.args[1]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and _private(arg.value):
                self.used.setdefault(arg.value, node.lineno)
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if not any(node.name in vars(c) for c in self.library_bases):
            self.defined.add(node.name)
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.defined.add(node.name)
        cls = None
        if node.bases:
            namespace = self.namespace if self.namespace is not None else vars(importlib.import_module(self.module))
            cls = namespace.get(node.name)
        library = [c for c in getattr(cls, "__mro__", ()) if c.__module__.split(".")[0] in LIBS]
        for item in node.body:  # a method of ours that replaces a library class's private one is a use of it
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and any(item.name in vars(c) for c in library):
                if _private(item.name):
                    self.overrides.add((item.name, item.lineno))
        outer, self.library_bases = self.library_bases, library
        self.generic_visit(node)
        self.library_bases = outer

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store) and _private(node.id):
            self.defined.add(node.id)


def scan() -> dict[str, dict[str, int]]:
    """{file: {library private name: first line}} over the whole package."""
    files = sorted((REPO / "pipeline").rglob("*.py"))
    uses = {}
    for file in files:
        rel = file.relative_to(REPO).as_posix()
        visitor = Uses(rel.removesuffix(".py").replace("/", ".").removesuffix(".__init__"))
        tree = ast.parse(file.read_text())
        visitor.visit(tree)
        visitor.top_level = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                             if isinstance(t, ast.Name)} | {n.name for n in tree.body if isinstance(
                                 n, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)}
        uses[rel] = visitor
    # a module's top-level `_x` may be used elsewhere (`formats._text`); a class's private names only in its module
    shared = set().union(*(u.top_level for u in uses.values()))
    private = library_private_names()
    found = {}
    for rel, u in uses.items():
        names = {n: line for n, line in u.used.items() if n in private and n not in shared | u.defined}
        names |= {n: line for n, line in u.overrides}
        if names:
            found[rel] = names
    return found


def test_library_private_names_appear_only_inside_the_fence() -> None:
    outside = {f: names for f, names in scan().items() if not f.startswith(FENCE)}
    where = "; ".join(f"{f}:{line} {name}" for f, names in outside.items() for name, line in names.items())
    assert not outside, f"move into pipeline/train/levers/ (and list in trl_surface.PRIVATE_HOOKS): {where}"


def test_every_private_name_inside_the_fence_is_listed_with_its_owner() -> None:
    inside = {n for f, names in scan().items() if f.startswith(FENCE) for n in names}
    listed = {hook.name for hook in PRIVATE_HOOKS}
    assert inside, "the scan found no private library name at all: it is broken (the levers use several)"
    assert not inside - listed, f"add to trl_surface.PRIVATE_HOOKS (owner, name, why): {sorted(inside - listed)}"


def test_the_scan_sees_the_kinds_of_use_it_guards(tmp_path) -> None:
    source = inspect.cleandoc('''
        from transformers import Trainer
        from transformers.modeling_utils import _load_state_dict_into_zero3_model

        class Mine(Trainer):
            def _load_from_checkpoint(self, path):
                self._said = set()
                self._signature_columns = None
                return getattr(self, "_buffered_inputs", None), self.model._attn_implementation
    ''')
    namespace: dict = {}
    exec(compile(source, "probe.py", "exec"), namespace)
    visitor = Uses("probe", namespace)
    visitor.visit(ast.parse(source))
    private = library_private_names()
    used = {n for n in visitor.used if n in private and n not in visitor.defined}
    assert {"_load_state_dict_into_zero3_model", "_buffered_inputs", "_attn_implementation"} <= used
    assert "_signature_columns" in used  # the Trainer keeps it on its instances: setting it is using it
    assert "_said" not in used  # ours, though set on a Trainer subclass: no Trainer code knows it
    assert {name for name, _ in visitor.overrides} == {"_load_from_checkpoint"}

