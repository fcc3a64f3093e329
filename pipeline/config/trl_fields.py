"""What the installed TRL / transformers accept, read from their source files without importing them.

Importing a TRL config class pulls in torch and transformers (~9 s measured on 2 cores); validation must stay
light, so the field names of a config dataclass (and the values of a transformers enum) are read with `ast` from
the installed files, following base classes across modules. tests/config/test_trl_fields.py checks the result against
`dataclasses.fields` of the real classes, so a layout change in TRL fails a test instead of passing silently.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

# Names a package re-exports lazily (its __init__ holds no class body to read): name -> defining module.
_REEXPORTED = {("transformers", "TrainingArguments"): "transformers.training_args"}


def config_fields(ref: str) -> frozenset[str]:
    """Init field names of dataclass `ref` ("module:Class"), its bases' included."""
    module, _, name = ref.partition(":")
    return _class_fields(module, name)


@cache
def enum_values(ref: str) -> tuple[str, ...]:
    """String values of enum class `ref` ("module:Class"), in source order."""
    module, _, name = ref.partition(":")
    node = _class_node(module, name)
    return tuple(
        stmt.value.value for stmt in node.body
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)
    )


@cache
def _class_fields(module: str, name: str) -> frozenset[str]:
    node = _class_node(module, name)
    found: set[str] = set()
    for base in node.bases:
        if isinstance(base, ast.Name):
            found |= _class_fields(*_where(module, base.id))
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and not _is_classvar(stmt):
            found.add(stmt.target.id)
    return frozenset(found)


def _is_classvar(stmt: ast.AnnAssign) -> bool:
    return "ClassVar" in ast.unparse(stmt.annotation)


def _class_node(module: str, name: str) -> ast.ClassDef:
    for node in _tree(module).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise LookupError(f"class {name} not found in {_source(module)} (the installed version changed its layout?)")


def _where(module: str, name: str) -> tuple[str, str]:
    """(module, name) that defines `name` as seen from `module`: itself, or the module it is imported from."""
    for node in _tree(module).body:
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            original = next(a.name for a in node.names if (a.asname or a.name) == name)
            source = _absolute(module, node.module or "", node.level)
            return _REEXPORTED.get((source, original), source), original
    return module, name


def _absolute(module: str, target: str, level: int) -> str:
    if not level:
        return target
    package = module.split(".")[: -level]
    return ".".join([*package, target] if target else package)


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse(_source(module).read_text(encoding="utf-8"))


def _source(module: str) -> Path:
    # find_spec on the top-level name only locates the package; it does not import it.
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"package {top} is not installed")
    base = Path(next(iter(spec.submodule_search_locations))).joinpath(*rest)
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
