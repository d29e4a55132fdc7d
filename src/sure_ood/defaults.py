"""The schema's defaults for a config subtree written by hand.

The schema (``workflow/schemas/config.schema.yaml``) holds every default. In the workflow,
Snakemake's ``validate`` fills them in before a rule passes a subtree (a recipe, a model, a
claim) to its stage, so the library reads those keys as they are and never restates a default
(a second copy would drift). A Python caller (a test, a benchmark, a notebook) or a hand-run
command that passes a partial subtree gets the same defaults from :func:`with_defaults`, which
the library's entry points call (``model_spec``, ``TrainingJob``, ``run_fingerprint``,
``make_optimizer``, ``num_epochs``, ``evaluate_claim``). On a validated subtree it changes
nothing.

Imports only the standard library, PyYAML and :mod:`sure_ood.io`: the train and claims stages
import it, so it is part of their code version (:mod:`sure_ood.code_version`).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from sure_ood.io import InputError

# The schema ships with the workflow, beside the package's source folder (the package is
# installed editable from the repository, as envs/sure-ood.yaml and the README do).
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

# A subtree's name -> its node in the schema: (top-level key, whether the key is a map of ids,
# each of whose values is one such subtree).
SUBTREES = {
    "recipe": ("recipes", True),
    "model": ("models", True),
    "claim": ("claims", True),
    "benchmark": ("benchmark", False),
}


@functools.cache
def schema_defaults(subtree: str) -> dict[str, Any]:
    """``{key: default}`` of every property of ``subtree`` (a key of :data:`SUBTREES`) that has
    a default in the schema."""
    import yaml

    if subtree not in SUBTREES:
        raise ValueError(f"no schema defaults for {subtree!r} (one of {', '.join(SUBTREES)})")
    if not SCHEMA_PATH.is_file():
        raise InputError(
            f"{SCHEMA_PATH}: config schema not found (the package reads its defaults from the "
            "workflow's schema; install the package from the repository with `pip install -e .`)"
        )
    key, id_map = SUBTREES[subtree]
    node = yaml.safe_load(SCHEMA_PATH.read_text())["properties"][key]
    if id_map:
        node = node["additionalProperties"]
    return {
        k: sub["default"]
        for k, sub in node.get("properties", {}).items()
        if isinstance(sub, dict) and "default" in sub
    }


def with_defaults(subtree: str, values: dict) -> dict:
    """A copy of ``values`` (one ``subtree``: a key of :data:`SUBTREES`) with the
    schema's default of every key it lacks, as Snakemake's ``validate`` fills them in. The
    given keys keep their values and order, so a validated subtree comes back equal."""
    out = dict(values)
    for k, v in schema_defaults(subtree).items():
        out.setdefault(k, copy.deepcopy(v))
    return out
