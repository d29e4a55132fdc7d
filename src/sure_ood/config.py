"""Config semantics shared by the Snakefile and the tests: rows, test models, checks.

The JSON schema (``workflow/schemas/config.schema.yaml``) checks keys and types; this module
checks what a schema cannot (a row naming a missing recipe, an unknown method, a recipe
initialised from itself...) and derives the DAG's ids. Every error names the key path.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sure_ood.io import InputError
from sure_ood.settings import OdinSettings

ROW_DEFAULTS = {
    "seeds": [0],
    "ensemble": "soup",
    "drop_final_norm": False,
    "img_size": None,
    "views": "center",
    "fusion": "mean",
}


# Defaults of the `odin` rule (OpenOOD: T = 1000, eps = 0.0014 in pixel units, i.e. the
# gradient sign divided by the normalisation std; docs/method.md#odin).
ODIN_PARAMS = {"temperature": 1000.0, "epsilon": 0.0014, "std_scaled": True}

# Named ODIN settings (``methods.<id>.params.preset``; explicit parameters override them):
# - reference: the SURE-OOD reference code (SSB-OSR utils/funcs.py test_predict_ODIN and
#   test_predict_ODIN_RW, called with their defaults): T = 1000, eps = 0, no std scaling,
#   i.e. temperature-scaled MSP; RW+ODIN multiplies it by 1 - cos(p, prior), p clean at T = 1;
# - openood: OpenOOD's odin.yml (T = 1000, eps = 0.0014 in [0, 1]-pixel units), the default.
ODIN_PRESETS = {
    "reference": {"temperature": 1000.0, "epsilon": 0.0, "std_scaled": False},
    "openood": dict(ODIN_PARAMS),
}


def odin_params(params: dict, where: str = "params") -> dict:
    """The full ODIN settings of a method's ``params``: the defaults, then its ``preset``,
    then its explicit keys. An unknown preset is a ConfigError naming ``<where>.preset``."""
    params = dict(params or {})
    preset = params.pop("preset", None)
    base = dict(ODIN_PARAMS)
    if preset is not None:
        if preset not in ODIN_PRESETS:
            raise ConfigError(
                f"{where}.preset: unknown ODIN preset {preset!r} "
                f"(known: {', '.join(sorted(ODIN_PRESETS))})"
            )
        base.update(ODIN_PRESETS[preset])
    return {**base, **params}


class ConfigError(InputError):
    """A config problem found before any job runs; the message starts with the key path."""


def odin_settings(params: dict, where: str = "params") -> OdinSettings:
    """The typed ODIN settings of a method's ``params`` (:func:`odin_params`)."""
    p = odin_params(params, where)
    return OdinSettings(float(p["temperature"]), float(p["epsilon"]), bool(p["std_scaled"]))


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


# The benchmark keys that define the splits (prepare_data's command gets them; each part's rerun
# trigger is its share of them, sure_ood.data.prepare_identity).
SPLIT_KEYS = (
    "name",
    "source",
    "known_classes",
    "unknown_classes",
    "split",
    "ood_fraction",
    "seed",
    "data_root",
    "splits",
    "ssb_splits",
    "skip_unreadable",
    "ood_splits",
    "val_fraction",
    "verify_images",
)


def split_config(bench: dict, with_location: bool = True) -> dict:
    """The split-defining keys of a benchmark; without ``data_root`` for prepare_data's rerun
    trigger (its manifest's paths are relative to data_root: moving the data changes nothing).
    """
    keys = [k for k in SPLIT_KEYS if with_location or k != "data_root"]
    return {k: v for k, v in bench.items() if k in keys}


def resolve_row(config: dict, table: str, row_id: str) -> dict:
    """A row with its table's ``defaults``, the config's ``replicates`` and the global defaults
    filled in."""
    t = config["tables"][table]
    row = copy.deepcopy(ROW_DEFAULTS)
    if "replicates" in config:
        row["replicates"] = config["replicates"]
    row.update(copy.deepcopy(t.get("defaults", {})))
    row.update(copy.deepcopy(t["rows"][row_id]))
    return row


# ---- training replicates -------------------------------------------------------------------
#: Replicate r of a row trains with seeds ``REPLICATE_STRIDE * r + s`` for each seed s of the
#: row's ``seeds`` (which must stay below it), so replicates never share a run, and every row of
#: a config uses the same seeds in replicate r: the paired comparisons pair runs that share
#: their parent (see :func:`parent_run`).
REPLICATE_STRIDE = 100


def _explicit_groups(row: dict) -> list[list[int]] | None:
    reps = row.get("replicates")
    if isinstance(reps, list) and reps and isinstance(reps[0], list):
        return [[int(s) for s in g] for g in reps]
    return None


def row_replicates(row: dict) -> list[int]:
    """The row's replicate ids: ``replicates: N`` -> 0..N-1; a list of ids as given; a list of
    seed groups -> 0..len-1; none -> ``[0]``."""
    reps = row.get("replicates")
    if reps is None:
        return [0]
    if isinstance(reps, int):
        return list(range(int(reps)))
    groups = _explicit_groups(row)
    if groups is not None:
        return list(range(len(groups)))
    return [int(r) for r in reps]


def replicate_seeds(row: dict, replicate: int = 0) -> tuple[int, ...]:
    """Training seeds of a row's test models in one replicate.

    Replicate ``r`` uses ``REPLICATE_STRIDE * r + s`` for every seed ``s`` of ``row["seeds"]``
    (seeds ``[0]`` -> ``[100 r]``, ``[0, 1]`` -> ``[100 r, 100 r + 1]``): replicates never share
    a run, and a soup's runs share the parent run of their replicate. Replicate 0 is the row
    itself. ``replicates`` given as seed groups (``[[0, 1], [2, 3]]``) names them directly.
    """
    groups = _explicit_groups(row)
    if groups is not None:
        return tuple(groups[int(replicate)])
    return tuple(int(s) + int(replicate) * REPLICATE_STRIDE for s in row["seeds"])


def parent_run(config: dict, recipe_id: str, seed: int) -> tuple[str, int] | None:
    """(recipe, seed) of the run that run ``seed`` of ``recipe_id`` fine-tunes, or None.

    ``init: {recipe: R, seed: S}`` names the parent run (R, S): every run starts from the same
    one. ``init: {recipe: R}`` follows the replicate: the parent is run ``seed - seed % 100`` of
    R, i.e. the same seed for a single-seed row (``init`` of seed 200 = R's seed 200) and the
    replicate's first seed for the other members of a soup (seed 201 also starts from R's seed
    200, as SURE-OOD's two averaged runs start from the same pretrained weights).
    """
    init = config["recipes"][recipe_id].get("init")  # absent: none (no parent run)
    if not (isinstance(init, dict) and "recipe" in init):
        return None
    if init.get("seed") is not None:
        return init["recipe"], int(init["seed"])
    return init["recipe"], int(seed) - int(seed) % REPLICATE_STRIDE


def row_test_models(row: dict, replicate: int = 0) -> list[TestModel]:
    """The test models a row reads in one replicate: one soup of its seeds, or one per seed
    (output ensemble); seeds as :func:`replicate_seeds`."""
    seeds = replicate_seeds(row, replicate)
    ensemble = row.get("ensemble", ROW_DEFAULTS["ensemble"])
    groups = [seeds] if ensemble == "soup" else [(s,) for s in seeds]
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
        for rep in row_replicates(row):
            for tm in row_test_models(row, rep):
                out[tm.id] = tm
    return out


def row_config_subtree(config: dict, table: str, row_id: str) -> dict:
    """Everything of the config that defines a row's numbers, for its provenance: the resolved
    row, its model, its recipe and every recipe it is initialised from, and its method."""
    row = resolve_row(config, table, row_id)
    recipes, rid = {}, row["recipe"]
    while rid in config["recipes"] and rid not in recipes:
        recipes[rid] = copy.deepcopy(config["recipes"][rid])
        init = recipes[rid].get("init")
        rid = init.get("recipe") if isinstance(init, dict) else None
    return {
        "benchmark": config["benchmark"]["name"],
        "table": table,
        "row_id": row_id,
        "row": row,
        "replicates": {
            str(r): {
                "seeds": list(replicate_seeds(row, r)),
                "test_models": [tm.id for tm in row_test_models(row, r)],
            }
            for r in row_replicates(row)
        },
        "model": copy.deepcopy(config["models"][row["model"]]),
        "recipes": recipes,
        "method": method_config(config, row["method"]),
    }


def _filled(mapping: dict, key: str, path: str = "") -> Any:
    """``mapping[key]``, a key the schema gives a default (``path``: the mapping's key path);
    missing only if the defaults were never filled in, which is named instead of a KeyError."""
    try:
        return mapping[key]
    except KeyError:
        where = f"{path}.{key}" if path else key
        raise ConfigError(
            f"{where}: missing; the config's checks read the validated config, with the "
            "schema's defaults filled in (snakemake.utils.validate, as the Snakefile does)"
        ) from None


def check_config(config: dict, base_dir: str | os.PathLike | None = None) -> None:
    """Semantic checks beyond the schema; raise ConfigError naming the key path.

    ``base_dir`` is the folder relative file paths of the config (``init.file``) are read
    from (the working directory by default). Runs on the validated config, the schema's
    defaults filled in (the Snakefile runs Snakemake's ``validate`` first), so it reads a
    defaulted key as it is and restates no default (:func:`_filled`).
    """
    from sure_ood import scores

    _check_benchmark(config.get("benchmark", {}))
    _check_models(config)
    _check_recipes(config, Path(base_dir) if base_dir is not None else Path.cwd())
    _check_published(config)
    _check_split_sizes(config.get("benchmark", {}))
    _check_precision(config)
    models, recipes = config.get("models", {}), config.get("recipes", {})
    registered = set(scores.available())
    for mid, m in config.get("methods", {}).items():
        if m["method"] not in registered:
            raise ConfigError(
                f"methods.{mid}.method: unknown method {m['method']!r} "
                f"(registered: {', '.join(sorted(registered))})"
            )
        params = m.get("params", {})
        if "network" in scores.get(m["method"]).needs:
            # ODIN-style methods: the hyper-parameters belong to the `odin` rule
            bad = sorted(set(params) - set(ODIN_PARAMS) - {"preset"})
            if bad:
                raise ConfigError(
                    f"methods.{mid}.params: unknown parameter(s) {bad} for "
                    f"{m['method']!r} (known: {sorted([*ODIN_PARAMS, 'preset'])})"
                )
            odin_params(params, f"methods.{mid}.params")
            continue
        try:
            scores.get(m["method"], **params)
        except (InputError, TypeError, ValueError) as e:
            raise ConfigError(f"methods.{mid}.params: {e}") from e
    for rid, r in recipes.items():
        init = r.get("init")
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
            _check_replicates(path, row)
            _check_row_options(config, path, row)
            _check_name_lengths(path, row)
        ref = t.get("reference_row")
        if ref is not None and ref not in t["rows"]:
            raise ConfigError(
                f"tables.{table}.reference_row: {ref!r} is not a row of the table "
                f"(rows: {', '.join(t['rows'])})"
            )
    _check_claims(config)


# ---- claims: published statements checked against the rows (stage `claims`) ----------------
CLAIM_DIRECTIONS = ("better", "worse")


def claim_rows(config: dict, claim: dict) -> list[str]:
    """Every row a claim compares, the claimed row first: ``[a, b]`` for a pair, ``[a, *among]``
    for best_of (``among`` defaults to every other row of the table)."""
    if claim["kind"] == "pair":
        return [claim["a"], claim["b"]]
    among = claim.get("among") or [r for r in config["tables"][claim["table"]]["rows"]]
    return [claim["a"]] + [r for r in among if r != claim["a"]]


def claim_table_rows(config: dict) -> list[tuple[str, str]]:
    """(table, row) of every row a claim compares, in config order, without repeats."""
    out: list[tuple[str, str]] = []
    for claim in (config.get("claims") or {}).values():
        for row_id in claim_rows(config, claim):
            if (claim["table"], row_id) not in out:
                out.append((claim["table"], row_id))
    return out


def _check_claims(config: dict) -> None:
    tables = config.get("tables", {})
    if config.get("claims") and _filled(config, "bootstrap") == 0:
        raise ConfigError(
            "bootstrap: 0 switches the intervals off, but the claims section needs them for its "
            "verdicts (set bootstrap > 0, or drop claims)"
        )
    if "claims" in tables:
        raise ConfigError(
            "tables.claims: a reserved name (the claims stage writes tables/claims.*); rename "
            "this table"
        )
    for cid, c in (config.get("claims") or {}).items():
        path = f"claims.{cid}"
        if c.get("expect") not in CLAIM_DIRECTIONS:
            raise ConfigError(
                f"{path}.expect: unknown direction {c.get('expect')!r} "
                f"(one of: {', '.join(CLAIM_DIRECTIONS)})"
            )
        table = c.get("table")
        if table not in tables:
            raise ConfigError(
                f"{path}.table: {table!r} is not a table of the config (tables: "
                f"{', '.join(tables)})"
            )
        kind = _filled(c, "kind", path)
        if kind != "pair" and "b" in c:
            raise ConfigError(f"{path}.b: a {kind} claim compares a with `among`, not with b")
        keys = ["a", "b"] if kind == "pair" else ["a", "among"]
        for key in keys:
            if key == "among" and key not in c:
                continue
            if key not in c:
                raise ConfigError(f"{path}.{key}: missing (a {kind} claim names rows a and b)")
            names = c[key] if isinstance(c[key], list) else [c[key]]
            for name in names:
                if name not in tables[table]["rows"]:
                    raise ConfigError(
                        f"{path}.{key}: {name!r} is not a row of table {table!r} (rows: "
                        f"{', '.join(tables[table]['rows'])})"
                    )
        if len(set(claim_rows(config, c))) < 2:
            raise ConfigError(f"{path}: compares row {c['a']!r} with nothing")


def _check_init_chain(recipes: dict, start: str) -> None:
    seen = [start]
    rid = start
    while True:
        init = recipes[rid].get("init")
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


# ---- semantic checks of the parts (called by check_config) ---------------------------------
def _check_benchmark(bench: dict) -> None:
    known, unknown = bench.get("known_classes", []), bench.get("unknown_classes", [])
    both = [c for c in unknown if c in known]
    if both:
        raise ConfigError(
            f"benchmark.unknown_classes: {both} are also known classes "
            "(benchmark.known_classes); a class is either known or unknown"
        )
    split = bench.get("split", {})
    total = sum(float(v) for v in split.values())
    if total > 1.0 + 1e-9:
        parts = " + ".join(f"{k} {v}" for k, v in split.items())
        raise ConfigError(
            f"benchmark.split: the fractions sum to {total:g} > 1 ({parts}); "
            "they are shares of each known class"
        )
    norm = bench.get("normalization", {})
    mean, std = norm.get("mean", []), norm.get("std", [])
    if len(mean) != len(std):
        raise ConfigError(
            f"benchmark.normalization.std: {len(std)} value(s), but "
            f"benchmark.normalization.mean has {len(mean)} (one per image channel)"
        )


def patch_size(model: dict) -> int | None:
    """The ViT patch size of a model config (``timm_kwargs.patch_size``, else the ``patchNN``
    of the timm name); None for models without patches."""
    kw = model.get("timm_kwargs") or {}
    if "patch_size" in kw:
        p = kw["patch_size"]
        return int(p[0] if isinstance(p, (list, tuple)) else p)
    m = re.search(r"patch(\d+)", str(model.get("arch", "")))
    return int(m.group(1)) if m else None


def _check_models(config: dict) -> None:
    norm = config.get("benchmark", {}).get("normalization", {})
    n_mean = len(norm.get("mean", []))
    for mid, m in config.get("models", {}).items():
        path = f"models.{mid}"
        in_chans = int(_filled(m, "in_chans", path))
        if n_mean and n_mean != in_chans:
            raise ConfigError(
                f"{path}.in_chans: {in_chans} channel(s), but benchmark.normalization.mean "
                f"and .std have {n_mean} value(s); give one mean and std per channel"
            )
        p = patch_size(m)
        if p and int(m.get("img_size", 0)) % p:
            kw = m.get("timm_kwargs") or {}
            src = "timm_kwargs.patch_size" if "patch_size" in kw else "arch"
            raise ConfigError(
                f"{path}.img_size: {m['img_size']} is not a multiple of the patch size {p} "
                f"(from {path}.{src})"
            )


def _check_recipes(config: dict, base_dir: Path) -> None:
    for rid, r in config.get("recipes", {}).items():
        path = f"recipes.{rid}"
        epochs = int(r["epochs"]) + (1 if _filled(r, "extra_final_epoch", path) else 0)
        swa = r.get("swa_start_epoch")
        if swa is not None:
            if int(swa) >= epochs:
                raise ConfigError(
                    f"{path}.swa_start_epoch: {swa} >= the {epochs} epoch(s) trained, so SWA "
                    "would never average a model (null switches SWA off)"
                )
            if "swa_lr" not in r:
                raise ConfigError(f"{path}.swa_lr: required when swa_start_epoch is set (SWA on)")
        if r.get("sam_adaptive") and not float(r.get("sam_rho", 0.0)) > 0:
            raise ConfigError(
                f"{path}.sam_adaptive: true, but sam_rho is 0 (SAM off); set sam_rho > 0 or "
                "drop sam_adaptive"
            )
        head = _filled(r, "head", path)
        if r.get("feature_clip") is not None and head != "cosine":
            raise ConfigError(
                f"{path}.feature_clip: only the cosine head clips features, but head is {head!r}"
            )
        init = r.get("init")
        if isinstance(init, dict) and init.get("file") is not None:
            f = Path(os.path.expanduser(str(init["file"])))
            f = f if f.is_absolute() else base_dir / f
            if not f.is_file():
                raise ConfigError(f"{path}.init.file: file not found: {f}")


def _check_replicates(path: str, row: dict) -> None:
    """Replicate ids without duplicates; seed groups disjoint and of one size; seeds below the
    replicate stride."""
    reps = row.get("replicates")
    groups = _explicit_groups(row)
    if groups is not None:
        flat = [s for g in groups for s in g]
        dup = sorted({s for s in flat if flat.count(s) > 1})
        if dup:
            raise ConfigError(
                f"{path}.replicates: duplicate seeds {dup} in the seed groups {groups}; "
                "replicates must not share a training run"
            )
        sizes = [len(g) for g in groups]
        if len(set(sizes)) > 1:
            raise ConfigError(
                f"{path}.replicates: {len(flat)} seeds do not split into equal groups (sizes "
                f"{sizes} in {groups}); every replicate must combine the same number of runs"
            )
        return
    if isinstance(reps, list) and len(set(reps)) != len(reps):
        raise ConfigError(f"{path}.replicates: duplicate replicates (seeds) {reps}")
    big = [s for s in row["seeds"] if int(s) >= REPLICATE_STRIDE]
    if big and row_replicates(row) != [0]:
        raise ConfigError(
            f"{path}.seeds: {big} >= {REPLICATE_STRIDE}; replicate r trains seeds "
            f"{REPLICATE_STRIDE} r + s, so a replicated row's seeds stay below {REPLICATE_STRIDE}"
        )


def _check_row_options(config: dict, path: str, row: dict) -> None:
    n_seeds = len(replicate_seeds(row, row_replicates(row)[0]))
    if row["ensemble"] == "output" and n_seeds < 2:
        raise ConfigError(
            f"{path}.ensemble: 'output' averages the scores of several seeds, but seeds is "
            f"{list(replicate_seeds(row, row_replicates(row)[0]))}; give two or more seeds "
            "(or ensemble: soup)"
        )
    size = row.get("img_size")
    p = patch_size(config["models"][row["model"]])
    if size is not None and p and int(size) % p:
        raise ConfigError(
            f"{path}.img_size: test resolution {size} is not a multiple of the patch size {p} "
            f"of model {row['model']!r}"
        )


def _check_precision(config: dict) -> None:
    """A precision no device can train with fails here, before any job (what a given GPU
    cannot run is checked when its job starts: sure_ood.distributed.check_precision)."""
    amp = _filled(_filled(config, "compute"), "amp", "compute")
    training = [rid for rid, r in config.get("recipes", {}).items() if int(r["epochs"])]
    if amp == "fp16" and training:
        raise ConfigError(
            f"compute.amp: fp16 cannot train recipe {training[0]!r} (it needs loss scaling, "
            "which the SAM step does not do); use bf16, tf32 or none"
        )


def _check_published(config: dict) -> None:
    for table, t in config.get("tables", {}).items():
        for row_id, numbers in (t.get("published", {}) or {}).items():
            if row_id not in t.get("rows", {}):
                raise ConfigError(
                    f"tables.{table}.published.{row_id}: not a row of the table "
                    f"(rows: {', '.join(t.get('rows', {}))})"
                )
            for key, v in (numbers or {}).items():
                if isinstance(v, (int, float)) and not 0 <= v <= 100:
                    raise ConfigError(
                        f"tables.{table}.published.{row_id}.{key}: {v} is outside [0, 100] "
                        "(published numbers are percentages)"
                    )


# ---- hostile values: names within file-system limits, splits that leave no class empty ----
MAX_NAME_BYTES = 255  # longest file or folder name on common file systems (ext4, xfs, APFS)
# a split share below this is checked against the data (the built-in sources have >= 170
# images per class and <= 10 classes, so larger shares always leave every class a few images)
RISKY_SHARE = 0.05


def _check_name_lengths(path: str, row: dict) -> None:
    """A test model's id (model, recipe, seeds and test-time switches) is a folder name."""
    for rep in row_replicates(row):
        for tm in row_test_models(row, rep):
            n = len(tm.id.encode())
            if n > MAX_NAME_BYTES:
                raise ConfigError(
                    f"{path}.seeds: the test-model id {tm.id[:60]!r}... built from the row's "
                    f"model, recipe and seeds is {n} bytes; file names are limited to "
                    f"{MAX_NAME_BYTES} (use shorter ids or fewer seeds)"
                )


def _check_split_sizes(bench: dict) -> None:
    """A split fraction that leaves a split (or a class in it) without images is an error
    naming the key, found before any job runs. Built-in sources only: image folders are
    counted by ``prepare_data``. The check runs the real split on the class ids, and only
    when a share is small enough to be at risk (loading the source costs a second)."""
    from sure_ood.data import ARRAY_SOURCES, load_array_source, split_open_set

    split = bench.get("split")
    if bench.get("source") not in ARRAY_SOURCES or not split or len(split) < 3:
        return
    total = sum(float(v) for v in split.values())
    if total <= 0:
        return
    share = {f"benchmark.split.{k}": float(v) / total for k, v in split.items()}
    ood = float(_filled(bench, "ood_fraction", "benchmark"))
    if ood < 1.0:
        share["benchmark.ood_fraction"] = min(ood, 1.0 - ood)
    key = min(share, key=share.get)
    if share[key] >= RISKY_SHARE:
        return
    value = split.get(key.rsplit(".", 1)[1], ood)
    known, unknown = bench.get("known_classes", []), bench.get("unknown_classes", [])
    _, class_ids = load_array_source(bench["source"])
    try:
        idx = split_open_set(class_ids, known, unknown, split, ood, bench["seed"])
    except ValueError as e:
        raise ConfigError(
            f"{key}: {value} leaves a split without an image of some class of "
            f"{bench['source']!r} ({e})"
        ) from e
    for name, classes in (
        ("train", known),
        ("val", known),
        ("id_test", known),
        ("ood_test", unknown),
    ):
        empty = sorted(set(classes) - set(class_ids[idx[name]].tolist()))
        if empty:
            where = "benchmark.ood_fraction" if name == "ood_test" else f"benchmark.split.{name}"
            raise ConfigError(
                f"{where}: split {name!r} gets no image of class(es) {empty} of "
                f"{bench['source']!r}; raise the fraction"
            )


# ---- schema validation with key paths ------------------------------------------------------
ID_HINT = "ids are lowercase letters, digits and underscores ([a-z0-9_]+)"


def key_path(parts) -> str:
    """``["recipes", "sure", "init", 0]`` -> ``recipes.sure.init[0]``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def schema_errors(config: Any, schema: dict) -> list[str]:
    """Every schema violation of ``config``, one message each, starting with its key path."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    errors = sorted(
        cls(schema).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]
    )
    out: list[str] = []
    for e in errors:
        for msg in _describe(e):
            if msg not in out:
                out.append(msg)
    return out


def _describe(e) -> list[str]:
    import jsonschema

    path = key_path(e.absolute_path)
    where = path or "<config>"
    if "propertyNames" in e.absolute_schema_path:
        return [_bad_id(e)]
    if e.validator == "additionalProperties" and isinstance(e.instance, dict):
        allowed = list(e.schema.get("properties", {}))
        patterns = list(e.schema.get("patternProperties", {}))
        extra = [
            k
            for k in e.instance
            if k not in allowed and not any(re.search(p, str(k)) for p in patterns)
        ]
        hint = f"allowed: {', '.join(allowed)}" if allowed else f"keys must match {patterns}"
        return [f"{key_path([*e.absolute_path, k])}: unknown key ({hint})" for k in extra]
    if e.validator == "required" and isinstance(e.instance, dict):
        missing = [k for k in e.validator_value if k not in e.instance]
        return [f"{key_path([*e.absolute_path, k])}: missing required key" for k in missing]
    if e.validator in ("oneOf", "anyOf") and e.context:
        # the closest form: the branch whose required keys the value has, else jsonschema's pick
        branches = e.validator_value
        near = [
            i
            for i, b in enumerate(branches)
            if isinstance(e.instance, dict)
            and b.get("type") == "object"
            and all(k in e.instance for k in b.get("required", []))
        ]
        sub = [s for s in e.context if near and s.relative_schema_path[0] == near[0]]
        best = sub[0] if sub else jsonschema.exceptions.best_match(e.context)
        detail = "; ".join(_describe(best)) if best is not None else ""
        what = e.schema.get("description", "one of the allowed forms")
        return [f"{where}: {e.instance!r} is not valid; expected {what} (closest: {detail})"]
    return [f"{where}: {e.message}"]


def _bad_id(e) -> str:
    """A bad id (a key of models, recipes, tables, rows...): what is wrong, and the rule. Long
    ids are shown shortened: the limit keeps every file name built from an id under 255 bytes."""
    ident = str(e.instance)
    shown = ident if len(ident) <= 40 else f"{ident[:40]}..."
    limit = e.schema.get("maxLength")
    if e.validator == "maxLength":
        why = f"{len(ident)} characters, more than {limit}"
    else:
        why = f"bad id {shown!r}"
    rule = f"{ID_HINT}, at most {limit} characters" if limit else ID_HINT
    return f"{key_path([*e.absolute_path, shown])}: {why}; {rule}"


def load_schema(path: str | os.PathLike) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text())


def validate_config(config: Any, schema: dict | str | os.PathLike) -> None:
    """Check ``config`` against the JSON schema; raise ConfigError listing every violation,
    each starting with its key path (``recipes.sure.epochs: -1 is less than ...``)."""
    if not isinstance(schema, dict):
        schema = load_schema(schema)
    errors = schema_errors(config, schema)
    if errors:
        more = f"\n({len(errors)} problems in the config)" if len(errors) > 1 else ""
        raise ConfigError("\n".join(errors) + more)


# ---- code versions: editing a stage's package code reruns its jobs --------------------------


# Stage code versions live in their own stdlib-only module, so that a stage importing it
# (train fingerprints its runs) does not pull this module, and through it the score registry,
# into its own code version.
from sure_ood.code_version import code_version  # noqa: E402, F401
