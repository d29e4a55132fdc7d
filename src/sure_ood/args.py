"""Checks of command-line values shared by the stages: one clear line for each bad value.

argparse checks types; these check what it cannot: a JSON option that does not parse, and an
output path whose extension names another format than the one the stage writes (a
``--out scores.csv`` that would hold parquet bytes).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from sure_ood.io import InputError


def json_arg(text: str, option: str) -> Any:
    """Parse the JSON value of ``option``; a malformed one is an InputError naming it."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise InputError(f"{option}: not valid JSON ({e.msg} at char {e.pos}): {shown!r}") from e


def check_suffix(path: str | os.PathLike, option: str, *suffixes: str, what: str = "") -> None:
    """``path`` must end in one of ``suffixes`` (the format the stage writes)."""
    if Path(path).suffix.lower() not in suffixes:
        fmt = what or suffixes[0].lstrip(".")
        raise InputError(
            f"{option} {path}: this stage writes {fmt}; use a name ending in "
            f"{' or '.join(suffixes)}"
        )


def boolean(text: str) -> bool:
    """An explicit ``true`` / ``false`` option value (a flag the workflow always passes, so a
    hand run states it too instead of relying on a default)."""
    value = {"true": True, "false": False}.get(text.strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")
    return value
