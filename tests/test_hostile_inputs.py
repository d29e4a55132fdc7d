"""Hostile inputs: configs that are code or bombs, bad caches, colliding names, leftovers.

Each test asserts the exact behaviour: a one-line message naming the file/key and what is
wrong, or a correct result. The families:

- configs are data: YTE templates refused before Snakemake loads them, size/nesting bounded,
  ids bounded by file-name limits, split fractions that empty a split rejected by key;
- inputs validated at the door (``sure_ood.inputs``): dtype kinds, label range, train/test
  agreement on D and C, non-finite training rows, colliding split names, ``--out`` among the
  inputs, unreadable files;
- writes (``sure_ood.io.atomic_path``): no temp file left on SIGTERM or after SIGKILL + rerun,
  the caller's umask, disk-full / read-only errors naming the file, byte-identical outputs.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import yaml
from conftest import ROOT, copy_workflow, run_snakemake

from sure_ood import scores
from sure_ood.cache import FeatureCache, load_cache, save_cache
from sure_ood.cli import main
from sure_ood.config import ConfigError, check_config, load_schema, validate_config
from sure_ood.io import (
    InputError,
    OutputError,
    atomic_path,
    save_npz,
    sweep_stale_temporaries,
    write_json,
)
from sure_ood.trust import (
    ALLOW_YTE_ENV,
    MAX_CONFIG_DEPTH,
    ConfigTrustError,
    check_config_file,
    check_config_tree,
)

SCHEMA = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
DIGITS = (ROOT / "config/digits_osr.yaml").read_text()
BASE = yaml.safe_load(DIGITS)

# a config whose one templated value would create a marker file when rendered
YTE_PAYLOAD = "?__import__('pathlib').Path('{marker}').touch() or 'digits_osr'"


def _yte_config(marker) -> str:
    payload = YTE_PAYLOAD.format(marker=marker)
    return DIGITS.replace(
        "benchmark:\n  name: digits_osr", f'__use_yte__: true\nbenchmark:\n  name: "{payload}"'
    )


def _alias_bomb(levels: int = 30, width: int = 2) -> str:
    """``l0: [x, x]``, ``l1: [*l0, *l0]``, ...: a few hundred bytes, 2**levels values."""
    items = ", ".join(["x"] * width)
    parts = [f"l0: &l0 [{items}]"]
    for i in range(1, levels):
        refs = ", ".join([f"*l{i - 1}"] * width)
        parts.append(f"l{i}: &l{i} [{refs}]")
    return DIGITS.replace("init_values: 0}", "init_values: 0, bomb: {" + ", ".join(parts) + "}}")


# ---- configs are data ----------------------------------------------------------------------
def test_yte_template_is_refused_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_YTE_ENV, raising=False)
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(_yte_config(marker))
    with pytest.raises(ConfigTrustError, match=r"evil\.yaml: __use_yte__: true - this config is a"):
        check_config_file(cfg)
    assert not marker.exists()


def test_yte_opt_in_is_explicit(tmp_path, monkeypatch):
    cfg = tmp_path / "templated.yaml"
    cfg.write_text(_yte_config(tmp_path / "marker"))
    monkeypatch.setenv(ALLOW_YTE_ENV, "1")
    check_config_file(cfg)  # allowed: the user opted in
    monkeypatch.setenv(ALLOW_YTE_ENV, "yes")  # only "1" opts in
    with pytest.raises(ConfigTrustError, match="__use_yte__"):
        check_config_file(cfg)


@pytest.mark.workflow
@pytest.mark.parametrize("profile", [[], ["--workflow-profile", "profiles/default"]])
def test_snakemake_dry_run_never_renders_a_yte_config(tmp_path, profile):
    """The payload would create a marker file: under `snakemake -n`, with the default or the
    local workflow profile, it is refused before Snakemake loads the file."""
    work = copy_workflow(tmp_path / "wf")
    marker = tmp_path / "pwned"
    (work / "config/evil.yaml").write_text(_yte_config(marker))
    r = run_snakemake(work, "-n", *profile, "--configfile", "config/evil.yaml", check=False)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "config/evil.yaml: __use_yte__: true - this config is a YTE template" in out
    assert not marker.exists(), "the config's template ran"


def test_yte_is_off_after_the_guard(tmp_path):
    """After the profiles' guard, a templated file that reaches YTE by any route is refused
    (checked in a fresh process: the guard changes process-wide state)."""
    marker = tmp_path / "pwned"
    code = textwrap.dedent(
        f"""
        import yte, sure_ood.trust
        sure_ood.trust.guard_snakemake_command(["-n"])
        try:
            yte.process_yaml({_yte_config(marker)!r}, require_use_yte=True)
        except Exception as e:
            print("REFUSED", type(e).__name__, e)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "REFUSED" in r.stdout and "configs are data here" in r.stdout, r.stdout + r.stderr
    assert not marker.exists()


def test_alias_bomb_is_refused_before_anything_expands_it(tmp_path):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(_alias_bomb(levels=30))
    with pytest.raises(ConfigTrustError, match=r"bomb\.yaml: models\.deit3_micro\.timm_kwargs"):
        check_config_file(cfg)
    # wide and shallow: bounded by the number of values, not by depth
    cfg.write_text(_alias_bomb(levels=6, width=10))
    with pytest.raises(ConfigTrustError, match=r"expands to more than 100000 values"):
        check_config_file(cfg)
    # the loaded (shared-object) form is bounded the same way
    bomb = yaml.safe_load(_alias_bomb(levels=6, width=10))
    with pytest.raises(ConfigTrustError, match=r"config: the config expands to more than"):
        check_config_tree(bomb)


def test_deep_nesting_and_huge_files_are_refused(tmp_path):
    deep = {"a": 1}
    for _ in range(MAX_CONFIG_DEPTH + 1):
        deep = {"k": deep}
    with pytest.raises(ConfigTrustError, match=r"nested more than 32 levels"):
        check_config_tree({"models": deep})
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n" + DIGITS)
    with pytest.raises(ConfigTrustError, match=r"big\.yaml: config file of \d+ bytes"):
        check_config_file(big)
    check_config_file(ROOT / "config/digits_osr.yaml")  # the shipped configs pass
    check_config_tree(BASE)


@pytest.mark.workflow
def test_snakemake_refuses_an_alias_bomb_fast(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    (work / "config/bomb.yaml").write_text(_alias_bomb())
    r = run_snakemake(work, "-n", "--configfile", "config/bomb.yaml", check=False, timeout=120)
    assert r.returncode != 0
    assert "config/bomb.yaml: models.deit3_micro.timm_kwargs.bomb" in r.stdout + r.stderr
    # without the profile the Snakefile's own check stops it
    r = run_snakemake(
        work, "-n", "--workflow-profile", "none", "--configfile", "config/bomb.yaml",
        check=False, timeout=120,
    )  # fmt: skip
    assert r.returncode != 0 and "models.deit3_micro.timm_kwargs.bomb" in r.stdout + r.stderr


def _validated(cfg: dict) -> None:
    from snakemake.utils import validate

    validate_config(cfg, SCHEMA)
    validate(cfg, str(ROOT / "workflow/schemas/config.schema.yaml"))
    check_config(cfg)


def test_a_300_character_row_id_is_refused_at_validation():
    cfg = copy.deepcopy(BASE)
    rows = cfg["tables"]["posthoc"]["rows"]
    rows["r" * 300] = rows.pop("msp")
    with pytest.raises(ConfigError) as e:
        _validated(cfg)
    msg = str(e.value)
    assert msg.startswith(f"tables.posthoc.rows.{'r' * 40}...: 300 characters, more than 64;")
    assert "at most 64 characters" in msg and len(msg) < 300


def test_a_test_model_id_too_long_for_a_file_name_is_refused():
    cfg = copy.deepcopy(BASE)
    cfg["tables"]["posthoc"]["rows"]["msp"]["seeds"] = list(range(100))
    with pytest.raises(ConfigError, match=r"^tables\.posthoc\.rows\.msp\.seeds: the test-model "):
        _validated(cfg)


@pytest.mark.parametrize(
    "key, value, pattern",
    [
        ("id_test", 0.001, r"^benchmark\.split\.id_test: 0\.001 leaves a split without"),
        ("ood_fraction", 0.999, r"^benchmark\.ood_fraction: 0\.999 leaves a split without"),
    ],
)
def test_split_fractions_that_empty_a_split_are_refused_by_key(key, value, pattern):
    cfg = copy.deepcopy(BASE)
    if key == "ood_fraction":
        cfg["benchmark"]["ood_fraction"] = value
    else:
        cfg["benchmark"]["split"][key] = value
    with pytest.raises(ConfigError, match=pattern):
        _validated(cfg)


def test_small_but_sufficient_fractions_pass():
    cfg = copy.deepcopy(BASE)
    cfg["benchmark"]["split"]["val"] = 0.02  # ~3 images per class: small, not empty
    _validated(cfg)


# ---- inputs at the door --------------------------------------------------------------------


C, D = 4, 6


def _cache(n=40, seed=0, d=D, c=C, labelled=True, source="<test>") -> FeatureCache:
    """Features near the head rows, logits through the (linear) head, every class present."""
    w = np.random.default_rng(100).normal(size=(c, d))
    b = np.random.default_rng(101).normal(size=c)
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    h = rng.normal(size=(n, d)) + 1.5 * w[y]
    return FeatureCache(
        logits=h @ w.T + b,
        features=h,
        labels=y if labelled else -np.ones(n, dtype=np.int64),
        head_weight=w,
        head_bias=b,
        prenorm_features=h + 0.1,
        source=source,
        extra={"odin_score": rng.normal(size=n)},
    )


def _cli(*argv) -> int:
    return main([str(a) for a in argv])


def _one_line_error(capsys, *names: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for name in names:
        assert name in err, err
    return err


@pytest.fixture()
def caches(tmp_path):
    save_cache(tmp_path / "split~train.npz", _cache(60, 1))
    save_cache(tmp_path / "split~id_test.npz", _cache(20, 2))
    save_cache(tmp_path / "split~ood_test.npz", _cache(20, 3, labelled=False))
    return tmp_path


def _arrays(**change) -> dict:
    a = _cache(8).to_arrays()
    a.update(change)
    return a


@pytest.mark.parametrize(
    "change, pattern",
    [
        (
            {"labels": np.array([0, 1, 2.5, 3, 0, 1, 2, 3])},
            r"'labels' must be integers \(class index, -1 = OOD\), got dtype float64",
        ),
        (
            {"logits": np.ones((8, C)) * (1 + 1j)},
            r"'logits' is complex \(complex128\); logits, features and head parameters",
        ),
        ({"features": np.ones((8, D), np.complex64)}, r"'features' is complex \(complex64\)"),
        ({"features": np.ones((8, D), bool)}, r"'features' must be floating-point numbers"),
        (
            {"labels": np.array([0, 1, 17, 3, -5, 1, 2, 3])},
            r"2 label\(s\) outside \[-1, 3\] \(e\.g\. \[-5, 17\]\)",
        ),
        (
            {"logits": np.ones((8, 0)), "head_weight": np.ones((0, D)), "head_bias": np.ones(0)},
            r"no classes \('head_weight' has shape \(0, 6\), C = 0\)",
        ),
    ],
    ids=[
        "float_labels",
        "complex_logits",
        "complex_features",
        "bool_features",
        "labels_out_of_range",
        "no_classes",
    ],  # fmt: skip
)
def test_bad_cache_contents_are_refused_naming_the_file(tmp_path, capsys, change, pattern):
    bad = tmp_path / "split~id_test.npz"
    save_npz(bad, **_arrays(**change))
    with pytest.raises(InputError, match=r"split~id_test\.npz: " + pattern):
        load_cache(bad)
    # and through the CLI: exit 2, one line naming the file
    assert _cli("score", "--method", "msp", "--features", bad, "--out", tmp_path / "s.pq") == 2
    _one_line_error(capsys, str(bad))
    assert not (tmp_path / "s.pq").exists()


FITTED = [m for m in scores.available() if "train" in scores.get(m).needs]


def test_every_train_fitted_method_is_listed():
    # the families the door must cover; a new fitted method joins the parametrized tests
    assert {"knn", "mahalanobis", "relative_mahalanobis", "vim", "react", "dice"} <= set(FITTED)


@pytest.mark.parametrize("method", FITTED)
def test_train_and_test_must_agree_on_the_feature_size(method, tmp_path, capsys):
    save_cache(tmp_path / "split~train.npz", _cache(60, 1, d=40))
    save_cache(tmp_path / "split~id_test.npz", _cache(20, 2, d=48))
    rc = _cli(
        "score", "--method", method, "--train-features", tmp_path / "split~train.npz",
        "--features", tmp_path / "split~id_test.npz", "--out", tmp_path / "s.parquet",
    )  # fmt: skip
    assert rc == 2
    err = _one_line_error(capsys, "split~id_test.npz: 48 feature dimensions", "split~train.npz")
    assert "has 40" in err
    assert not (tmp_path / "s.parquet").exists()


def _with_nan_rows(cache: FeatureCache, rows, key="features") -> FeatureCache:
    arrays = {k: np.array(v, copy=True) for k, v in cache.to_arrays().items()}
    arrays[key][rows] = np.inf if key == "logits" else np.nan
    return FeatureCache(
        logits=arrays["logits"], features=arrays["features"], labels=arrays["labels"],
        head_weight=arrays["head_weight"], head_bias=arrays["head_bias"],
        prenorm_features=arrays["prenorm_features"], source="train.npz",
        extra={"odin_score": arrays["odin_score"]},
    )  # fmt: skip


def _subset(cache: FeatureCache, keep) -> FeatureCache:
    return FeatureCache(
        logits=cache.logits[keep], features=cache.features[keep], labels=cache.labels[keep],
        head_weight=cache.head_weight, head_bias=cache.head_bias,
        prenorm_features=cache.prenorm_features[keep], source="clean.npz",
    )  # fmt: skip


@pytest.mark.parametrize("method", scores.available())
@pytest.mark.parametrize("key", ["features", "logits"])
def test_non_finite_training_rows_never_change_scores_silently(method, key, caplog):
    """Every method: two non-finite training rows give exactly the scores of a fit on the
    finite rows (with a warning counting them when the method fits on training rows)."""
    train, test = _cache(60, 1), _cache(30, 2)
    bad_rows = [3, 17]
    poisoned = _with_nan_rows(train, bad_rows, key)
    keep = np.setdiff1d(np.arange(len(train)), bad_rows)
    needs = scores.get(method).needs
    # temperature_scaling fits on the validation split: the same cache in that role
    split = "validation" if "val" in needs else "training"

    def fit(cache):
        return scores.get(method).fit(**({"val": cache} if "val" in needs else {"train": cache}))

    reference = fit(_subset(train, keep)).score(test)
    if not {"train", "val"} & set(needs):
        # prior from the labels only, or nothing fitted: every row is kept, nothing changes
        reference = fit(train).score(test)
    with caplog.at_level("WARNING"):
        got = fit(poisoned).score(test)
    np.testing.assert_allclose(got, reference, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert np.isfinite(got).all() or not np.isfinite(reference).all()
    warned = f"2 of 60 {split} rows of train.npz have non-finite logits or features" in caplog.text
    assert warned == bool({"train", "val"} & set(needs))
    doc = sys.modules[type(scores.get(method)).__module__].__doc__
    if scores.get(method).requires_fit or "train" in needs:
        assert f"{split} rows" in doc.lower(), f"{method}: policy not documented"


@pytest.mark.parametrize("method", FITTED)
def test_a_class_without_finite_training_rows(method, caplog):
    train, test = _cache(100, 1), _cache(30, 2)
    poisoned = _with_nan_rows(train, np.flatnonzero(train.labels == 2))
    scorer = scores.get(method)
    if scorer.per_class_fit:
        with pytest.raises(InputError, match=r"every training row of class\(es\) \[2\] has"):
            scorer.fit(poisoned)
        return
    keep = np.flatnonzero(train.labels != 2)
    reference = scores.get(method).fit(_subset(train, keep)).score(test)
    np.testing.assert_allclose(scorer.fit(poisoned).score(test), reference, rtol=1e-9)


def test_all_training_rows_non_finite_is_refused():
    train = _with_nan_rows(_cache(10, 1), slice(None))
    with pytest.raises(InputError, match=r"train\.npz: all 10 training rows have non-finite"):
        scores.get("knn", k=2).fit(train)


def test_colliding_split_names_are_refused(caches, tmp_path, capsys):
    other = tmp_path / "elsewhere"
    other.mkdir()
    save_cache(other / "split~id_test.npz", _cache(20, 9))
    rc = _cli(
        "score", "--method", "msp", "--features", caches / "split~id_test.npz",
        "--features", other / "split~id_test.npz", "--out", tmp_path / "s.parquet",
    )  # fmt: skip
    assert rc == 2
    _one_line_error(capsys, f"{other / 'split~id_test.npz'}: split name 'id_test' collides")
    assert not (tmp_path / "s.parquet").exists()


def _score(caches, out, method="msp"):
    return _cli(
        "score", "--method", method, "--features", caches / "split~id_test.npz",
        "--features", caches / "split~ood_test.npz", "--out", out,
    )  # fmt: skip


def test_duplicate_images_in_a_score_table_are_refused_by_evaluate(caches, capsys):
    import pandas as pd

    assert _score(caches, caches / "s.parquet") == 0
    df = pd.read_parquet(caches / "s.parquet")
    pd.concat([df, df[df["split"] == "id_test"]]).to_parquet(caches / "doubled.parquet")
    capsys.readouterr()
    args = ["--row", "{}", "--table", "t", "--row-id", "r", "--n-boot", "0"]
    rc = _cli("evaluate", "--scores", caches / "doubled.parquet", *args, "--out", caches / "r.json")
    assert rc == 2
    _one_line_error(capsys, "doubled.parquet", "20 duplicate (split, index) rows")


@pytest.mark.parametrize("stage", ["score", "score_stats", "fuse", "evaluate", "merge_features"])
def test_out_equal_to_an_input_is_refused_and_the_input_kept(caches, capsys, stage):
    feats = caches / "split~id_test.npz"
    assert _score(caches, caches / "s.parquet") == 0
    capsys.readouterr()
    victim = feats if stage in ("score", "score_stats", "merge_features") else caches / "s.parquet"
    before = victim.read_bytes()
    if stage == "score":
        rc = _score(caches, feats)
    elif stage == "score_stats":
        rc = _cli("score", "--method", "msp", "--features", feats, "--stats-out", feats,
                  "--out", caches / "x.parquet")  # fmt: skip
    elif stage == "fuse":
        rc = _cli("fuse", "--scores", victim, "--out", victim)
    elif stage == "merge_features":
        rc = _cli("merge_features", "--shards", feats, "--out", feats)
    else:
        rc = _cli("evaluate", "--scores", victim, "--row", "{}", "--table", "t", "--row-id",
                  "r", "--n-boot", "0", "--out", victim)  # fmt: skip
    assert rc == 2
    _one_line_error(capsys, "is also an input", str(victim))
    assert victim.read_bytes() == before


def _corrupt_npz(path, how: str):
    good = path.read_bytes()
    if how == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif how == "bad_crc":
        i = good.index(b"\x93NUMPY") + 300  # inside the first array's data
        path.write_bytes(good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1 :])
    elif how == "npy_renamed":
        with open(path, "wb") as fh:
            np.save(fh, np.zeros(3))
    elif how == "directory":
        path.unlink()
        path.mkdir()


@pytest.mark.parametrize(
    "how, why",
    [
        ("truncated", "not a readable .npz file (BadZipFile"),
        ("bad_crc", "not a readable .npz file (BadZipFile: Bad CRC-32"),
        ("npy_renamed", "a single .npy array, not an .npz archive"),
        ("directory", "is a directory, not an .npz file"),
    ],
)
@pytest.mark.parametrize("role", ["--features", "--train-features"])
def test_unreadable_caches_get_one_line(caches, capsys, how, why, role):
    target = caches / ("split~id_test.npz" if role == "--features" else "split~train.npz")
    _corrupt_npz(target, how)
    rc = _cli(
        "score", "--method", "knn", "--train-features", caches / "split~train.npz",
        "--features", caches / "split~id_test.npz", "--out", caches / "s.parquet",
    )  # fmt: skip
    assert rc == 2
    _one_line_error(capsys, f"{target}: {why}")


@pytest.mark.parametrize(
    "make, why",
    [
        (lambda p: p.mkdir(), "is a directory, not a .parquet score file"),
        (lambda p: p.write_bytes(b"PAR1 not really"), "cannot read scores: not a parquet file"),
        (
            lambda p: __import__("pandas").DataFrame({"a": [1]}).to_parquet(p),
            "missing score columns ['split', 'index', 'label', 'id_score', 'pred'] (has ['a'])",
        ),
        (
            lambda p: (
                __import__("pandas")
                .DataFrame(
                    {"split": ["a"], "index": [0], "label": [0.5], "id_score": [1.0], "pred": [0]}
                )  # fmt: skip
                .to_parquet(p)
            ),
            "column 'label' must be integers, got float64",
        ),
    ],
    ids=["directory", "not_parquet", "wrong_columns", "float_labels"],
)
def test_unreadable_score_tables_get_one_line(tmp_path, capsys, make, why):
    bad = tmp_path / "scores.parquet"
    make(bad)
    evaluate = ["evaluate", "--scores", bad, "--row", "{}", "--table", "t", "--row-id", "r"]
    for argv, out in (
        ([*evaluate, "--n-boot", "0"], "o.json"),
        (["fuse", "--scores", bad], "o.parquet"),
    ):
        assert _cli(*argv, "--out", tmp_path / out) == 2
        _one_line_error(capsys, f"{bad}: {why}")


def test_npz_given_as_prior_and_corrupt_prior(caches, capsys):
    prior = caches / "prior.npz"
    np.savez(prior, prior=np.full(C, 1 / C))
    argv = ["score", "--method", "rp_msp", "--features", caches / "split~id_test.npz"]
    assert _cli(*argv, "--prior", prior, "--out", caches / "s.parquet") == 2
    _one_line_error(capsys, f"{prior}: an .npz archive; --prior takes a .npy vector")
    bad = caches / "prior.npy"
    bad.write_bytes(b"\x93NUMPY garbage")
    assert _cli(*argv, "--prior", bad, "--out", caches / "s.parquet") == 2
    _one_line_error(capsys, f"{bad}: not a readable .npy file")


def test_non_json_model_spec_is_named(tmp_path):
    import torch
    from safetensors.torch import save_file

    from sure_ood.models import SPEC_KEY, read_spec

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={SPEC_KEY: "{not json"})
    with pytest.raises(InputError, match=r"model\.safetensors: metadata 'sure_ood_model_spec' is"):
        read_spec(path)
    save_file({"w": torch.zeros(2)}, str(path), metadata={SPEC_KEY: json.dumps([1, 2])})
    with pytest.raises(InputError, match=r"is not a JSON object"):
        read_spec(path)


# ---- writes that leave nothing behind -------------------------------------------------------


def _listing(folder) -> list[str]:
    """Every name in ``folder``, hidden ones included (a glob like ``split~*`` misses them)."""
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_callers_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        write_json(tmp_path / "row.json", {"a": 1})
        save_npz(tmp_path / "c.npz", x=np.zeros(2))
    finally:
        os.umask(old)
    for name in ("row.json", "c.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


WRITER = """
import sys, time
from sure_ood.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"partial")
    print("WRITING", flush=True)
    time.sleep(120)
"""


def _start_writer(out):
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "WRITING"
    return proc


def test_sigterm_during_a_write_leaves_nothing(tmp_path):
    out = tmp_path / "split~id_test.npz"
    proc = _start_writer(out)
    assert len(_listing(tmp_path)) == 1  # the hidden temporary file
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == -signal.SIGTERM  # still dies of the signal (Snakemake sees it)
    assert _listing(tmp_path) == []


def test_a_sigkilled_writers_temporary_is_swept_by_the_next_write(tmp_path):
    out = tmp_path / "split~id_test.npz"

    def temporaries(prefix=".split~id_test."):
        return [n for n in _listing(tmp_path) if n.startswith(prefix)]

    first = _start_writer(out)
    (first_tmp,) = temporaries()
    second = _start_writer(out)  # a running writer's temporary file is never swept
    other = _start_writer(tmp_path / "other.npz")  # another file's writer
    assert len(temporaries()) == 2
    first.kill()
    first.wait(60)
    assert sweep_stale_temporaries(out) == [tmp_path / first_tmp]
    assert len(temporaries()) == 1 and first_tmp not in temporaries()
    for p in (second, other):
        p.kill()
        p.wait(60)
    save_npz(out, x=np.zeros(2))  # the rerun sweeps the dead writer's file
    assert temporaries() == [] and "split~id_test.npz" in _listing(tmp_path)
    assert len(temporaries(".other.")) == 1  # not a temporary of this file: left alone


def test_a_long_name_still_fits_its_temporary_file(tmp_path):
    out = tmp_path / ("r" * 250 + ".json")
    write_json(out, {"ok": True})
    assert json.loads(out.read_text()) == {"ok": True} and _listing(tmp_path) == [out.name]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_disk_full_and_read_only_name_the_file(caches, capsys, monkeypatch, code):
    import pandas as pd

    def fail(self, path, *a, **kw):
        with open(path, "wb") as fh:
            fh.write(b"PAR1")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", fail)
    out = caches / "out" / "s.parquet"
    assert _score(caches, out) == 2
    err = _one_line_error(capsys, f"{out}: cannot write the output ({os.strerror(code)}")
    assert ("the disk is full" in err) == (code == errno.ENOSPC)
    assert _listing(out.parent) == []


@pytest.fixture()
def tiny_fs(tmp_path):
    """A 64 kB tmpfs (root only): a real full disk."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_a_really_full_disk_names_the_file(caches, tiny_fs, capsys):
    filler = tiny_fs / "filler"
    with open(filler, "wb", buffering=0) as fh:  # fill the disk to its last byte
        with contextlib.suppress(OSError):
            while True:
                fh.write(b"x" * 512)
    out = tiny_fs / "scores.parquet"
    assert _score(caches, out) == 2
    _one_line_error(capsys, f"{out}: cannot write the output (No space left on device")
    assert _listing(tiny_fs) == ["filler"]
    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    assert _score(caches, tiny_fs / "s.parquet") == 2
    _one_line_error(capsys, f"{tiny_fs / 's.parquet'}: cannot write the output (Read-only")


def test_npz_and_json_bytes_do_not_depend_on_time_or_order(tmp_path, monkeypatch):
    import time

    arrays = {"b": np.arange(3.0), "a": np.ones((2, 2), np.float32)}
    save_npz(tmp_path / "1.npz", **arrays)
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)
    save_npz(tmp_path / "2.npz", **dict(reversed(arrays.items())))
    assert (tmp_path / "1.npz").read_bytes() == (tmp_path / "2.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "1.npz") as zf:
        assert [i.filename for i in zf.infolist()] == ["a.npy", "b.npy"]
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert load_cache is not None and np.load(tmp_path / "1.npz")["b"].tolist() == [0, 1, 2]
    write_json(tmp_path / "1.json", {"z": 1, "a": {"y": 2, "b": 3}})
    write_json(tmp_path / "2.json", {"a": {"b": 3, "y": 2}, "z": 1})
    assert (tmp_path / "1.json").read_bytes() == (tmp_path / "2.json").read_bytes()


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer bug")
    assert _listing(tmp_path) == []
    assert issubclass(OutputError, InputError)
