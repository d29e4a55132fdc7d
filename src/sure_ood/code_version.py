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

    The package ``sure_ood.scores`` imports every built-in method in its ``__init__`` (to
    register them). A stage that uses the registry (imports the package itself, as ``score``
    does) covers every method; a stage that imports one method's module only (``odin``:
    ``sure_ood.scores.odin``) runs that ``__init__`` merely as the module's parent package, so
    its version covers that module and the shared ones it imports, not the other methods nor
    the list of them: editing or adding another method reruns none of its jobs.
    """
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    key = (str(root), stage)
    if key not in _CODE_VERSIONS:
        if _module_file(root, f"sure_ood.stages.{stage}") is None:
            raise CodeVersionError(f"code_version: no module sure_ood.{stage}")
        _CODE_VERSIONS[key] = _digest(root, [f"sure_ood.stages.{stage}"], None)
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
        _CODE_VERSIONS[key] = _digest(root, ["sure_ood.stages.score", module], {module})
    return _CODE_VERSIONS[key]


# The package whose ``__init__`` imports every built-in method (to register them).
_METHODS_PACKAGE = "sure_ood.scores"


def _digest(root: Path, starts: list[str], methods: set[str] | None) -> str:
    """Hash of the modules reachable from the CLI and ``starts``.

    Of the modules the scores package's ``__init__`` imports, the method modules are followed
    only if in ``methods``; ``None``: all of them if some reached module imports the package
    itself (uses the registry), none otherwise. Method modules imported directly are always
    followed. The ``__init__`` itself (the list of methods) counts only when all are followed.
    """
    import hashlib

    seen: dict[str, tuple[list[str], bytes, set[str]] | None] = {}
    todo = ["sure_ood.cli", *starts]
    held_back: list[str] = []  # method modules the package imports, not (yet) followed
    while True:
        while todo:
            mod = todo.pop()
            if mod in seen:
                continue
            info = _module_info(root, mod) if mod.startswith("sure_ood") else _foreign(mod)
            seen[mod] = info
            if info is None:
                continue
            deps = info[0]
            if mod == _METHODS_PACKAGE:
                keep = [d for d in deps if not _is_method_module(root, d) or d in (methods or ())]
                held_back = [d for d in deps if d not in keep]
                deps = keep
            todo += deps
        all_methods = methods is None and any(
            _METHODS_PACKAGE in info[2] for info in seen.values() if info
        )
        if not (all_methods and held_back):
            break
        todo, held_back = held_back, []  # the registry is used: follow every method too
    h = hashlib.sha256()
    for mod in sorted(m for m, info in seen.items() if info is not None):
        if mod != _METHODS_PACKAGE or all_methods:
            h.update(mod.encode() + b"\0" + seen[mod][1])
    return h.hexdigest()[:16]


def _is_method_module(root: Path, mod: str) -> bool:
    """A module of ``sure_ood.scores`` that registers a method (``@register``)."""
    if not mod.startswith("sure_ood.scores."):
        return False
    f = _module_file(root, mod)
    return f is not None and "\n@register\n" in f.read_text()


def _foreign(mod: str) -> tuple[list[str], bytes, set[str]] | None:
    """:func:`_module_info` of a module outside the package (a plugin): its own digest, and
    its ``sure_ood`` imports to follow."""
    import importlib.util

    spec = importlib.util.find_spec(mod)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return _parse(Path(spec.origin), mod, None)


_CODE_VERSIONS: dict[tuple[str, str], str] = {}
_MODULES: dict[tuple[str, str], tuple[list[str], bytes, set[str]] | None] = {}


def _module_info(root: Path, mod: str) -> tuple[list[str], bytes, set[str]] | None:
    """(the sure_ood modules ``mod`` imports, digest of its code, the modules and packages it
    imports by name); None if not a module."""
    key = (str(root), mod)
    if key not in _MODULES:
        f = _module_file(root, mod)
        # None: an attribute (from sure_ood.io import atomic_path) or not ours
        _MODULES[key] = None if f is None else _parse(f, mod, root)
    return _MODULES[key]


def _parse(f: Path, mod: str, root: Path | None) -> tuple[list[str], bytes, set[str]]:
    """Imports and digest of the module ``mod`` in file ``f``.

    The deps are every ``sure_ood`` name an import mentions plus the parent packages (they
    run too); "by name" are the modules an import binds, so ``from sure_ood.scores import
    plugins`` uses the module ``plugins``, not the package, while ``from sure_ood.scores import
    get`` uses the package. ``root`` None (a plugin): every ``from P import x`` uses ``P``.
    """
    import ast
    import hashlib

    tree = ast.parse(f.read_text(), str(f))
    parts = mod.split(".")
    deps = [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run too
    used: set[str] = set()
    is_pkg = f.name == "__init__.py"
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
            used.update(names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = parts if is_pkg else parts[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            subs = [f"{base}.{a.name}" for a in node.names]
            names = [base, *subs]
            modules = [n for n in subs if root is not None and _module_file(root, n)]
            used.update(modules)
            if len(modules) < len(subs):
                used.add(base)
        deps += [n for n in names if n == "sure_ood" or n.startswith("sure_ood.")]
    digest = hashlib.sha256(ast.dump(_strip_docstrings(tree)).encode()).digest()
    return deps, digest, used


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
