"""Methods from other packages (entry points ``sure_ood.scores``), in fresh processes.

The worked example of docs/adding-a-method.md (examples/sure-ood-plugin-example) is installed
with pip into a temporary folder put on PYTHONPATH, so neither the venv nor this process's
registry is touched. Broken plugins are hand-made ``.dist-info`` folders with an
``entry_points.txt``: that is all ``importlib.metadata`` reads.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from sure_ood.cache import FeatureCache, save_cache

EXAMPLE = ROOT / "examples/sure-ood-plugin-example"


def _env(*paths: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(ROOT / "src")])
    return env


def _sure_ood(paths, *args, check=True):
    r = subprocess.run(
        [sys.executable, "-m", "sure_ood", *map(str, args)],
        env=_env(*paths),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example plugin, pip-installed (no deps, no build isolation) into a temp target."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = shutil.copytree(EXAMPLE, tmp / "src")  # the build writes build/ and egg-info there
    target = tmp / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(src)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return target


@pytest.fixture(scope="module")
def cache_file(tmp_path_factory) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(12, 4))
    cache = FeatureCache(
        logits=z,
        features=rng.normal(size=(12, 3)),
        labels=np.arange(12) % 4,
        head_weight=rng.normal(size=(4, 3)),
    )
    path = tmp_path_factory.mktemp("cache") / "split~id_test.npz"
    save_cache(path, cache)
    return path, z


def _fake_plugin(root: Path, package: str, ep_name: str, module: str, code: str) -> Path:
    """A minimal installed distribution: METADATA, entry_points.txt and one module."""
    dist = root / f"{package.replace('-', '_')}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[sure_ood.scores]\n{ep_name} = {module}:Plugin\n")
    (root / f"{module}.py").write_text(textwrap.dedent(code))
    return root


def test_example_plugin_is_listed_and_scores(installed, cache_file, tmp_path):
    listing = _sure_ood([installed], "score", "--list").stdout
    assert "logit_margin: largest minus second-largest logit" in listing
    assert "from:      plugin 'logit_margin' (package sure-ood-plugin-example)" in listing
    # not in the built-in list (docs/methods.md)
    builtin = _sure_ood([installed], "score", "--list", "--builtin").stdout
    assert "logit_margin" not in builtin

    path, z = cache_file
    out = tmp_path / "s.parquet"
    _sure_ood(
        [installed], "score", "--method", "logit_margin", "--param", "scale=2",
        "--features", path, "--out", out,
    )  # fmt: skip
    top = np.sort(z, axis=1)
    np.testing.assert_allclose(pd.read_parquet(out)["id_score"], 2 * (top[:, -1] - top[:, -2]))


def test_removing_the_plugin_makes_the_method_unknown(cache_file, tmp_path):
    r = _sure_ood(
        [], "score", "--method", "logit_margin", "--features", cache_file[0],
        "--out", tmp_path / "s.parquet", check=False,
    )  # fmt: skip
    assert r.returncode == 2 and "unknown method 'logit_margin'" in r.stderr


def test_a_plugin_changes_no_other_methods_code_version(installed):
    code = (
        "from sure_ood.code_version import method_code_version as v; from sure_ood import scores;"
        "print(v('sure_ood.scores.msp'), v('sure_ood.scores.rp_gradnorm'), scores.available())"
    )
    without = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True
    ).stdout.split(" ", 2)
    with_plugin = subprocess.run(
        [sys.executable, "-c", code], env=_env(installed), capture_output=True, text=True,
        check=True,
    ).stdout.split(" ", 2)  # fmt: skip
    assert "logit_margin" in with_plugin[2] and "logit_margin" not in without[2]
    assert with_plugin[:2] == without[:2]


def test_plugin_that_fails_to_import(tmp_path, cache_file):
    site = _fake_plugin(
        tmp_path, "broken-plugin", "broken", "broken_mod", "raise ImportError('no numpy 9')\n"
    )
    listing = _sure_ood([site], "score", "--list")  # the other methods still work
    assert "msp:" in listing.stdout
    assert "plugin 'broken' (package broken-plugin): cannot import broken_mod:Plugin" in (
        listing.stderr
    )
    r = _sure_ood(
        [site], "score", "--method", "broken", "--features", cache_file[0],
        "--out", tmp_path / "s.parquet", check=False,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0, r.stderr  # one line
    assert "plugin 'broken' (package broken-plugin)" in r.stderr
    assert "ImportError: no numpy 9" in r.stderr


def test_plugin_returning_the_wrong_shape(tmp_path, cache_file):
    site = _fake_plugin(
        tmp_path, "shape-plugin", "bad_shape", "shape_mod",
        """
        import numpy as np
        from sure_ood.scores import Scorer

        class Plugin(Scorer):
            name = "bad_shape"
            needs = frozenset({"logits"})

            def _score(self, cache):
                return np.zeros((len(cache), 2))
        """,
    )  # fmt: skip
    r = _sure_ood(
        [site], "score", "--method", "bad_shape", "--features", cache_file[0],
        "--out", tmp_path / "s.parquet", check=False,
    )  # fmt: skip
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "method 'bad_shape' (plugin 'bad_shape' (package shape-plugin))" in r.stderr
    assert "shape (12, 2), want (12,)" in r.stderr


def test_two_methods_with_one_name(tmp_path):
    site = _fake_plugin(
        tmp_path, "dup-plugin", "msp", "dup_mod",
        """
        from sure_ood.scores import Scorer

        class Plugin(Scorer):
            name = "msp"
        """,
    )  # fmt: skip
    r = _sure_ood([site], "score", "--list", check=False)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert (
        "two methods named 'msp': module sure_ood.scores.msp and plugin 'msp' (package "
        "dup-plugin)" in r.stderr
    )


def test_a_plugin_setting_the_old_fitted_attribute(monkeypatch):
    """Plugins written when a class set ``fitted = True``: it still works where it agrees with
    the needs (a DeprecationWarning names the plugin) and is an error naming it where not."""
    from sure_ood import scores
    from sure_ood.io import InputError
    from sure_ood.scores import scorer

    monkeypatch.setattr(scorer, "_REGISTRY", dict(scorer._REGISTRY))  # leave the real one

    class Legacy(scores.Scorer):
        name = "legacy_centroid"
        needs = frozenset({"features", "train"})
        fitted = True
        _state_keys = ("centre",)

        def _fit(self, train, prior):
            self.centre = np.asarray(train.features, dtype=np.float64).mean(axis=0)

        def _score(self, cache):
            return -np.linalg.norm(np.asarray(cache.features) - self.centre, axis=1)

    origin = "plugin 'legacy_centroid' (package old-plugin)"
    with pytest.warns(
        DeprecationWarning,
        match=re.escape(f"{origin}: method 'legacy_centroid' sets 'fitted', which is deprecated"),
    ):
        scores.register(Legacy, origin=origin)
    method = scores.get("legacy_centroid")
    assert method.requires_fit and not method.is_fitted
    rng = np.random.default_rng(1)
    train, test = rng.normal(size=(20, 3)), rng.normal(size=(5, 3))
    with pytest.raises(RuntimeError, match="must be fitted"):
        method.score(features=test)
    method.fit(scores.arrays(features=train, labels=np.arange(20) % 2))
    np.testing.assert_allclose(
        method.score(features=test), -np.linalg.norm(test - train.mean(axis=0), axis=1)
    )

    class Contradicts(scores.Scorer):
        name = "legacy_contradicts"
        needs = frozenset({"logits"})
        fitted = True

    with pytest.raises(
        InputError,
        match=r"'legacy_contradicts' sets fitted = True but needs "
        r"\['logits'\]",
    ):
        scores.register(Contradicts, origin="plugin 'legacy_contradicts' (package old)")


def test_the_old_helper_module_still_resolves_with_a_warning():
    """Plugins were told to import helpers from sure_ood.scores.base: each old name still
    resolves to the same object, with a DeprecationWarning naming its new module."""
    import sure_ood.scores.base as old
    from sure_ood.scores import array_cache, geometry, numeric, scorer

    for name, module in [
        ("probs", numeric), ("map_rows", numeric), ("check_positive", numeric),
        ("head_logits", geometry), ("head_space", geometry), ("Scorer", scorer),
        ("PercentileScorer", scorer), ("register", scorer), ("train_labelled", array_cache),
    ]:  # fmt: skip
        with pytest.warns(DeprecationWarning, match=f"import it from {module.__name__}$"):
            assert getattr(old, name) is getattr(module, name)
    with pytest.raises(AttributeError, match="no attribute 'no_such_helper'"):
        old.no_such_helper  # noqa: B018


# ---- in the workflow: a copy of the session's digits run, dry runs only ---------------------
@pytest.mark.workflow
def test_installing_a_plugin_reruns_nothing_and_its_row_only_its_jobs(
    digits_run, installed, tmp_path
):
    import yaml
    from conftest import snakemake_env
    from test_reruns import CONFIG, _dry_run, _up_to_date_copy

    env = snakemake_env()
    env["PYTHONPATH"] = os.pathsep.join([str(installed), env.get("PYTHONPATH", "")])
    work = _up_to_date_copy(digits_run, tmp_path / "run")
    assert _dry_run(work, env) == []  # installed: no existing job reruns
    cfg = yaml.safe_load((work / CONFIG).read_text())
    cfg["tables"]["posthoc"]["rows"]["margin"] = {"method": "logit_margin"}
    (work / CONFIG).write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs = _dry_run(work, env)
    rules = sorted(r for r, _ in jobs if r != "all")
    # one score job per replicate's test model (3); the new row joins the posthoc table, and
    # with it the claim "RP+GradNorm is the best of the table's scores" (best_of over every
    # other row): that claim is recomputed too
    assert rules == ["claims", "evaluate", "histogram", *["score"] * 3, "table"], jobs
    assert "/method~logit_margin/" in dict(jobs)["score"]


@pytest.mark.workflow
def test_rerun_one_row_target_first_schedules_one_job(digits_run, tmp_path):
    """The README's form (target, then --forcerun) reruns one job; the other form does not."""
    from conftest import run_snakemake
    from test_reruns import CONFIG, _up_to_date_copy

    work = _up_to_date_copy(digits_run, tmp_path / "run")
    target = "results/digits_osr/rows/posthoc/energy.json"
    r = run_snakemake(work, "-n", f"--configfile={CONFIG}", target, "--forcerun", "evaluate")
    assert re.search(r"^evaluate\s+1$", r.stdout, re.M) and re.search(
        r"^total\s+1$", r.stdout, re.M
    ), r.stdout[-3000:]
    r = run_snakemake(work, "-n", f"--configfile={CONFIG}", "--forcerun", "evaluate", target)
    assert int(re.search(r"^total\s+(\d+)$", r.stdout, re.M).group(1)) > 1
