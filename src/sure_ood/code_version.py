"""Code versions of the workflow's stages (a Snakemake params trigger and run fingerprints).

Standard library only, and importing nothing from the package: a module that imports this one
must not thereby add other package modules to its own code version.
"""

from __future__ import annotations

import os
from pathlib import Path

from sure_ood.io import InputError


class CodeVersionError(InputError):
    """A stage name with no module."""


def code_version(stage: str, root: str | os.PathLike | None = None) -> str:
    """Short hash of the package code a stage runs: ``sure_ood/stages/<stage>.py``, the CLI,
    and every ``sure_ood`` module they import (transitively, function-level imports included).

    A rule passes it as a param, so Snakemake's params trigger reruns the stage's jobs when
    that code changes. The hash is of the syntax tree without docstrings, so comments,
    docstrings and formatting do not count. ``root`` is the folder holding ``sure_ood/``
    (default: this package's).
    """
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    key = (str(root), stage)
    if key not in _CODE_VERSIONS:
        import hashlib

        if _module_file(root, f"sure_ood.stages.{stage}") is None:
            raise CodeVersionError(f"code_version: no module sure_ood.{stage}")
        todo, seen = ["sure_ood.cli", f"sure_ood.stages.{stage}"], {}
        while todo:
            mod = todo.pop()
            if mod in seen:
                continue
            info = _module_info(root, mod)
            seen[mod] = info
            if info is not None:
                todo += info[0]
        h = hashlib.sha256()
        for mod in sorted(m for m, info in seen.items() if info is not None):
            h.update(mod.encode() + b"\0" + seen[mod][1])
        _CODE_VERSIONS[key] = h.hexdigest()[:16]
    return _CODE_VERSIONS[key]


def method_code_version(module: str, root: str | os.PathLike | None = None) -> str:
    """Code version of one method's score jobs: the ``score`` stage without the other methods.

    Like :func:`code_version` for ``score``, but the package ``sure_ood.scores``, whose
    ``__init__`` imports every built-in method, is followed only into ``module`` (and what the
    methods import stays covered: rw_odin covers odin.py): adding, removing or editing one
    method, or installing a plugin, changes no other method's version. ``module`` may be a plugin's
    module outside ``sure_ood``: its own file is hashed then (not what it imports).
    """
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    key = (str(root), f"score:{module}")
    if key not in _CODE_VERSIONS:
        import hashlib

        todo, seen = ["sure_ood.cli", "sure_ood.stages.score", module], {}
        while todo:
            mod = todo.pop()
            if mod in seen:
                continue
            info = _module_info(root, mod) if mod.startswith("sure_ood") else _foreign(mod)
            seen[mod] = info
            if info is None:
                continue
            deps = info[0]
            if mod == "sure_ood.scores":  # it imports every method: follow only ours
                deps = [d for d in deps if d == module or not _is_method_module(root, d)]
            todo += deps
        h = hashlib.sha256()
        for mod in sorted(m for m, info in seen.items() if info is not None):
            if mod != "sure_ood.scores":  # the list of built-in methods
                h.update(mod.encode() + b"\0" + seen[mod][1])
        _CODE_VERSIONS[key] = h.hexdigest()[:16]
    return _CODE_VERSIONS[key]


def _is_method_module(root: Path, mod: str) -> bool:
    """A module of ``sure_ood.scores`` that registers a method (``@register``)."""
    if not mod.startswith("sure_ood.scores."):
        return False
    f = _module_file(root, mod)
    return f is not None and "\n@register\n" in f.read_text()


def _foreign(mod: str) -> tuple[list[str], bytes] | None:
    """(the sure_ood modules it imports, digest) of a module outside the package (a plugin)."""
    import ast
    import hashlib
    import importlib.util

    spec = importlib.util.find_spec(mod)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    tree = ast.parse(Path(spec.origin).read_text(), spec.origin)
    deps = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sure_ood"):
            deps += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            deps += [a.name for a in node.names if a.name.startswith("sure_ood")]
    return deps, hashlib.sha256(ast.dump(_strip_docstrings(tree)).encode()).digest()


_CODE_VERSIONS: dict[tuple[str, str], str] = {}
_MODULES: dict[tuple[str, str], tuple[list[str], bytes] | None] = {}


def _module_info(root: Path, mod: str) -> tuple[list[str], bytes] | None:
    """(the sure_ood modules ``mod`` imports, digest of its code); None if not a module."""
    import ast
    import hashlib

    key = (str(root), mod)
    if key in _MODULES:
        return _MODULES[key]
    f = _module_file(root, mod)
    if f is None:  # an attribute (from sure_ood.io import atomic_path) or not ours
        _MODULES[key] = None
        return None
    tree = ast.parse(f.read_text(), str(f))
    parts = mod.split(".")
    deps = [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run too
    is_pkg = f.name == "__init__.py"
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = parts if is_pkg else parts[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        deps += [n for n in names if n == "sure_ood" or n.startswith("sure_ood.")]
    digest = hashlib.sha256(ast.dump(_strip_docstrings(tree)).encode()).digest()
    _MODULES[key] = (deps, digest)
    return _MODULES[key]


def _module_file(root: Path, mod: str) -> Path | None:
    base = root.joinpath(*mod.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _strip_docstrings(tree):
    import ast

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree
