"""Config semantics shared by the Snakefile and the tests: rows, test models, checks.

The JSON schema (``workflow/schemas/config.schema.yaml``) checks keys and types; this module
checks what a schema cannot (a row naming a missing recipe, an unknown method, a recipe
initialised from itself...) and derives the DAG's ids. Every error names the key path.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from sure_ood.io import InputError

ROW_DEFAULTS = {
    "seeds": [0],
    "ensemble": "soup",
    "drop_final_norm": False,
    "img_size": None,
    "views": "center",
    "fusion": "mean",
}


class ConfigError(InputError):
    """A config problem found before any job runs; the message starts with the key path."""


@dataclass(frozen=True)
class TestModel:
    """A model under test: runs to soup + test-time changes. ``id`` appears in the paths."""

    model: str
    recipe: str
    seeds: tuple[int, ...]
    drop_final_norm: bool = False
    img_size: int | None = None

    @property
    def id(self) -> str:
        parts = [self.model, self.recipe, "s" + "_".join(str(s) for s in self.seeds)]
        if self.drop_final_norm:
            parts.append("noln")
        if self.img_size is not None:
            parts.append(f"r{self.img_size}")
        return "-".join(parts)


def resolve_row(config: dict, table: str, row_id: str) -> dict:
    """A row with its table's ``defaults`` and the global defaults filled in."""
    t = config["tables"][table]
    row = copy.deepcopy(ROW_DEFAULTS)
    row.update(copy.deepcopy(t.get("defaults", {})))
    row.update(copy.deepcopy(t["rows"][row_id]))
    return row


def row_test_models(row: dict) -> list[TestModel]:
    """The test models a row reads: one soup of its seeds, or one per seed (output ensemble)."""
    seeds = tuple(int(s) for s in row["seeds"])
    groups = [seeds] if row.get("ensemble", "soup") == "soup" else [(s,) for s in seeds]
    return [
        TestModel(row["model"], row["recipe"], g, bool(row["drop_final_norm"]), row["img_size"])
        for g in groups
    ]


def method_config(config: dict, method_id: str) -> dict:
    """``{"method": registered name, "params": {...}}`` of a method id of the config.

    A method id is either a key of ``methods`` or, with default parameters, a registered name.
    """
    methods = config.get("methods", {})
    if method_id in methods:
        m = methods[method_id]
        return {"method": m["method"], "params": dict(m.get("params", {}))}
    return {"method": method_id, "params": {}}


def all_rows(config: dict):
    for table, t in config["tables"].items():
        for row_id in t["rows"]:
            yield table, row_id, resolve_row(config, table, row_id)


def all_test_models(config: dict) -> dict[str, TestModel]:
    out = {}
    for _, _, row in all_rows(config):
        for tm in row_test_models(row):
            out[tm.id] = tm
    return out


def check_config(config: dict) -> None:
    """Semantic checks beyond the schema; raise ConfigError naming the key path."""
    from sure_ood import scores

    models, recipes = config.get("models", {}), config.get("recipes", {})
    registered = set(scores.available())
    for mid, m in config.get("methods", {}).items():
        if m["method"] not in registered:
            raise ConfigError(
                f"methods.{mid}.method: unknown method {m['method']!r} "
                f"(registered: {', '.join(sorted(registered))})"
            )
        try:
            scores.get(m["method"], **m.get("params", {}))
        except (InputError, TypeError, ValueError) as e:
            raise ConfigError(f"methods.{mid}.params: {e}") from e
    for rid, r in recipes.items():
        init = r.get("init", "none")
        if isinstance(init, dict) and "recipe" in init:
            _check_init_chain(recipes, rid)
    if not config.get("tables"):
        raise ConfigError("tables: no table to build")
    for table, t in config["tables"].items():
        if not t.get("rows"):
            raise ConfigError(f"tables.{table}.rows: a table needs at least one row")
        for row_id in t["rows"]:
            row = resolve_row(config, table, row_id)
            path = f"tables.{table}.rows.{row_id}"
            for key in ("model", "recipe", "method"):
                if key not in row:
                    raise ConfigError(
                        f"{path}.{key}: missing (set it in the row or the table's defaults)"
                    )
            if row["model"] not in models:
                raise ConfigError(
                    f"{path}.model: unknown model {row['model']!r} (models: {', '.join(models)})"
                )
            if row["recipe"] not in recipes:
                raise ConfigError(
                    f"{path}.recipe: unknown recipe {row['recipe']!r} "
                    f"(recipes: {', '.join(recipes)})"
                )
            method = method_config(config, row["method"])["method"]
            if method not in registered:
                raise ConfigError(
                    f"{path}.method: unknown method {row['method']!r} (not in "
                    f"methods, and not a registered method)"
                )
            if not row["seeds"]:
                raise ConfigError(f"{path}.seeds: at least one seed")
            if len(set(row["seeds"])) != len(row["seeds"]):
                raise ConfigError(f"{path}.seeds: duplicate seeds {row['seeds']}")


def _check_init_chain(recipes: dict, start: str) -> None:
    seen = [start]
    rid = start
    while True:
        init = recipes[rid].get("init", "none")
        if not (isinstance(init, dict) and "recipe" in init):
            return
        nxt = init["recipe"]
        if nxt not in recipes:
            raise ConfigError(f"recipes.{rid}.init.recipe: unknown recipe {nxt!r}")
        if nxt in seen:
            raise ConfigError(
                f"recipes.{start}.init: initialisation cycle {' -> '.join(seen + [nxt])}"
            )
        seen.append(nxt)
        rid = nxt
