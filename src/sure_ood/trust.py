"""The trust model of config files: a config is data, never code, and its size is bounded.

Snakemake renders a config file as a YTE template when its top level says
``__use_yte__: true``: every ``?expr`` value is evaluated as Python while the file is loaded,
before the workflow can look at it (even under ``snakemake -n``). This project refuses such
files unless the user opts in with the environment variable :data:`ALLOW_YTE_ENV` = ``1``.

Two guards use the functions below:

- :func:`guard_snakemake_command`, run by the repository's workflow profiles
  (``profiles/default``, ``workflow/profiles/*``) while Snakemake parses its command line, i.e.
  *before* Snakemake loads any ``--configfile``: it checks every config file named on the
  command line (templating, size, nesting) and then disables YTE evaluation for the rest of
  the process, so a templated file that reached Snakemake by another route still cannot run;
- :func:`check_config_files` and :func:`check_config_tree`, run by the Snakefile before any
  validation: the same checks on the config files Snakemake was given and on the merged
  config, for runs that bypass the profiles (``--workflow-profile none``, the Python API).

Bounds: a YAML alias bomb (``&a [*b, *b]`` nested 30 levels) is a few hundred bytes but
expands to billions of values the moment anything serialises it (Snakemake hashes the config
as JSON); configs are therefore bounded in bytes, in expanded values and in nesting depth
before anything walks them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sure_ood.io import InputError

ALLOW_YTE_ENV = "SURE_OOD_ALLOW_YTE"
MAX_CONFIG_BYTES = 1 << 20  # a config file; the shipped ones are < 10 kB
MAX_CONFIG_VALUES = 100_000  # scalars + containers after YAML aliases are expanded
MAX_CONFIG_DEPTH = 32  # nesting of mappings / lists


class ConfigTrustError(InputError):
    """A config file refused before it is used; the message names the file (and key)."""


def yte_allowed() -> bool:
    """True when the user opted in to YTE templates in config files."""
    return os.environ.get(ALLOW_YTE_ENV, "") == "1"


def check_config_file(path: str | os.PathLike) -> None:
    """Refuse a config file that is too large, too deep, expands too far, or is a template.

    Reads the raw text and composes the YAML node graph (no Python objects are built and no
    alias is expanded), so the check itself is bounded by the file size.
    """
    import yaml

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ConfigTrustError(f"{path}: cannot read the config file ({e.strerror})") from e
    if size > MAX_CONFIG_BYTES:
        raise ConfigTrustError(
            f"{path}: config file of {size} bytes; configs are limited to {MAX_CONFIG_BYTES} bytes"
        )
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigTrustError(f"{path}: not valid YAML or JSON ({e})") from e
    if root is None:
        return
    _count_nodes(root, str(path))
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value == "__use_yte__" and not yte_allowed():
                raise ConfigTrustError(
                    f"{path}: __use_yte__: {value.value} - this config is a YTE template, "
                    "whose '?' values would run as Python when Snakemake loads it; configs "
                    f"are data here. Render it yourself, or set {ALLOW_YTE_ENV}=1 if you "
                    "trust this file"
                )


def _check_bounds(count: int, depth: int, key: str, where: str) -> None:
    """The two bounds of a config walk: values seen so far, and the nesting depth of ``key``."""
    if count > MAX_CONFIG_VALUES:
        raise ConfigTrustError(
            f"{where}: the config expands to more than {MAX_CONFIG_VALUES} values "
            f"(near {key[:120] or '<top>'}; YAML aliases repeated?)"
        )
    if depth > MAX_CONFIG_DEPTH:
        raise ConfigTrustError(
            f"{where}: {key[:120]}: nested more than {MAX_CONFIG_DEPTH} levels deep"
        )


def _count_nodes(root, where: str) -> None:
    """Walk the node graph as it would be expanded (aliases followed each time), stopping
    as soon as :data:`MAX_CONFIG_VALUES` or :data:`MAX_CONFIG_DEPTH` is passed."""
    import yaml

    count = 0
    stack = [(root, 1, "")]
    while stack:
        node, depth, key = stack.pop()
        count += 1
        _check_bounds(count, depth, key, where)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                name = f"{key}.{k.value}" if key else str(k.value)
                stack.append((k, depth + 1, name))
                stack.append((v, depth + 1, name))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, depth + 1, f"{key}[{i}]") for i, v in enumerate(node.value))


def check_config_tree(config: Any, where: str = "config") -> None:
    """The same bounds on an in-memory config (shared sub-objects counted once per use)."""
    count = 0
    stack = [(config, 1, "")]
    while stack:
        obj, depth, key = stack.pop()
        count += 1
        _check_bounds(count, depth, key, where)
        if isinstance(obj, dict):
            for k, v in obj.items():
                stack.append((v, depth + 1, f"{key}.{k}" if key else str(k)))
        elif isinstance(obj, (list, tuple)):
            stack.extend((v, depth + 1, f"{key}[{i}]") for i, v in enumerate(obj))


def check_config_files(paths: Iterable[str | os.PathLike]) -> None:
    for p in paths:
        check_config_file(p)


def snakemake_configfiles(argv: list[str]) -> list[str]:
    """The ``--configfile(s)`` values of a Snakemake command line, parsed by Snakemake's own
    argument parser (abbreviations and ``--opt=value`` forms included)."""
    from snakemake.cli import get_argument_parser

    args, _ = get_argument_parser().parse_known_args(argv)
    return [str(p) for p in (args.configfile or [])]


# What the workflow profiles run (a profile is parsed again when Snakemake re-reads its
# command line, so these statements stay allowed after YTE is turned off).
GUARD_STATEMENTS = ("import sure_ood.trust", "sure_ood.trust.guard_snakemake_command()")


def disable_yte() -> None:
    """From now on, any YTE expression in this process raises instead of running (the
    profiles' own guard statements excepted)."""
    import yte

    handler = yte.DEFAULT_CODE_HANDLER
    if getattr(handler, "_sure_ood_locked", False):
        return
    run_eval, run_exec = handler._eval_func, handler._exec_func

    def refuse(source, variables=None):
        if str(source).strip() in GUARD_STATEMENTS:
            return run_exec(source, variables)
        raise ConfigTrustError(
            f"a YTE expression ({str(source)[:60]!r}) in a config file was refused: configs "
            f"are data here (set {ALLOW_YTE_ENV}=1 to allow templates you trust)"
        )

    del run_eval
    handler._eval_func = refuse
    handler._exec_func = refuse
    handler._sure_ood_locked = True


def guard_snakemake_command(argv: list[str] | None = None) -> None:
    """Run by the workflow profiles: check the command line's config files, then turn YTE
    off for the rest of the Snakemake process. Exits with a one-line message on refusal."""
    if yte_allowed():
        return
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        check_config_files(snakemake_configfiles(argv))
    except ConfigTrustError as e:
        print(f"sure-ood: refused config: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    disable_yte()
