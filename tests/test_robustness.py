"""Crashes and numeric faults: nothing is lost, nothing partial is left, every error explained.

- ``kill -9`` of a training job mid-epoch, then a rerun, ends with bit-identical weights to an
  uninterrupted run (CPU, one thread), for the baseline and for a SURE recipe (SAM, RegMixup,
  CRL, SWA);
- a kill while the feature cache is written leaves no cache: SIGTERM leaves nothing at all,
  SIGKILL a hidden temporary file that the rerun sweeps;
- every file the package writes goes through ``sure_ood.io.atomic_path`` (a static scan);
- checkpoints and training states are never unpickled;
- a non-finite loss or feature stops the job, saying where;
- NaN scores are counted and scored as the worst case, never dropped.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import BIN, ROOT

from sure_ood.cli import main
from sure_ood.io import InputError

CFG = yaml.safe_load((ROOT / "config/digits_osr.yaml").read_text())
BENCH = CFG["benchmark"]
MODEL = CFG["models"]["deit3_micro"]
BASELINE = {
    "init": "none",
    "epochs": 2,
    "batch_size": 64,
    "optimizer": "adamw",
    "lr": 0.003,
    "weight_decay": 0.05,
    "head": "linear",
}
SURE = {
    "init": "none",
    "epochs": 2,
    "batch_size": 64,
    "optimizer": "sgd",
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "label_smoothing": 0.1,
    "head": "cosine",
    "cos_temperature": 8.0,
    "mixup_weight": 0.2,
    "mixup_beta": 10.0,
    "crl_weight": 0.5,
    "sam_rho": 0.05,
    "swa_start_epoch": 0,
    "swa_lr": 0.001,
    "swa_anneal_epochs": 2,
}


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """The digits_osr splits, written by ``sure-ood prepare_data``."""
    out = tmp_path_factory.mktemp("digits_data")
    argv = ["prepare_data", "--benchmark", json.dumps(BENCH), "--out-dir", str(out)]
    assert main([*argv, "--part", "all"]) == 0
    return out


def _train_args(recipe: dict, data_dir: Path, run_dir: Path) -> list[str]:
    return [
        "train",
        "--benchmark", json.dumps(BENCH),
        "--model", json.dumps(MODEL),
        "--recipe", json.dumps(recipe),
        "--seed", "3",
        "--data-dir", str(data_dir),
        "--state-dir", str(run_dir / "state"),
        "--log", str(run_dir / "train_log.jsonl"),
        "--summary", str(run_dir / "run.json"),
        "--threads", "1",
        "--device", "cpu",
        "--amp", "none", "--workers", "0", "--pin-memory", "auto",
    ]  # fmt: skip


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    t0 = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the job ended ({proc.returncode}) before the kill")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for the job")
        time.sleep(0.005)


def _log_lines(run_dir: Path) -> int:
    logs = list((run_dir / "state").glob("*/train_log.jsonl"))
    return len(logs[0].read_text().splitlines()) if logs else 0


def _tensors(obj, prefix=""):
    """Every tensor of a nested state (dicts, lists), by a dotted name."""
    import torch

    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")


def _state(run_dir: Path) -> dict:
    import torch

    (path,) = (run_dir / "state").glob("*/state.pt")
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("recipe", [BASELINE, SURE], ids=["baseline", "sure_sam_mixup_crl_swa"])
def test_kill_9_mid_epoch_then_rerun_gives_the_same_weights(tmp_path, data_dir, recipe):
    import torch

    from sure_ood.io import load_state_dict
    from sure_ood.stages.finalize_swa import finalize

    killed, clean = tmp_path / "killed", tmp_path / "clean"
    args = _train_args(recipe, data_dir, killed)
    log = open(tmp_path / "killed.out", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(BIN / "sure-ood"), *args], stdout=log, stderr=subprocess.STDOUT, env=_env()
    )
    try:
        _wait_for(lambda: _log_lines(killed) >= 1, proc)  # the state of epoch 1 is saved
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        log.close()
    assert proc.returncode == -signal.SIGKILL
    done = _log_lines(killed)
    assert 1 <= done < recipe["epochs"], "the kill came after training had finished"
    assert not (killed / "run.json").exists() and not (killed / "train_log.jsonl").exists()

    # rerun (resumes after the last saved epoch), and an uninterrupted run: fresh processes
    # as the killed one, so all three load the math libraries with the same numerics pins
    # (an in-process run would inherit whatever this test process loaded and set before)
    def run(argv):
        return subprocess.run(
            [str(BIN / "sure-ood"), *argv], env=_env(), capture_output=True, text=True
        )

    rerun = run(args)
    assert rerun.returncode == 0, rerun.stderr
    assert f"after epoch {done}" in rerun.stdout, "the rerun did not resume"
    uninterrupted = run(_train_args(recipe, data_dir, clean))
    assert uninterrupted.returncode == 0, uninterrupted.stderr

    a, b = _state(killed), _state(clean)
    assert a["epoch"] == b["epoch"] == recipe["epochs"]
    ta, tb = dict(_tensors(a)), dict(_tensors(b))
    assert ta.keys() == tb.keys() and any(k.startswith(".swa_model") for k in ta) == (
        recipe.get("swa_start_epoch") is not None
    )
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k} differs after kill + resume"

    def lines(p):
        return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in p.open()]

    assert lines(killed / "train_log.jsonl") == lines(clean / "train_log.jsonl")
    assert len(lines(killed / "train_log.jsonl")) == recipe["epochs"], "a log line was lost"
    finalize(killed / "run.json", killed / "final.safetensors")
    finalize(clean / "run.json", clean / "final.safetensors")
    wa = load_state_dict(killed / "final.safetensors")
    wb = load_state_dict(clean / "final.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_non_finite_loss_stops_with_epoch_and_step(tmp_path, data_dir, capsys):
    recipe = dict(BASELINE, lr=1e30, epochs=2)
    assert main(_train_args(recipe, data_dir, tmp_path)) == 4
    err = capsys.readouterr().err
    assert "sure-ood train: numeric error: non-finite loss at epoch 1, step " in err, err
    assert not (tmp_path / "run.json").exists() and not list(tmp_path.rglob("state.pt"))


# ---- extraction ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def test_model(tmp_path_factory) -> Path:
    """A (random) digits model under test, saved as the pipeline saves one."""
    import torch

    from sure_ood.models import build_model, model_spec, save_model

    torch.manual_seed(0)
    spec = model_spec(MODEL, 6, {"head": "linear"})
    path = tmp_path_factory.mktemp("test_model") / "model.safetensors"
    save_model(path, build_model(spec), spec)
    return path


def _extract_args(test_model: Path, data_dir: Path, out: Path) -> list[str]:
    return [
        "extract",
        "--test-model", str(test_model),
        "--benchmark", json.dumps(BENCH),
        "--data-dir", str(data_dir),
        "--split", "id_test",
        "--view", "center",
        "--threads", "1",
        "--device", "cpu",
        "--batch-size", "256", "--amp", "none", "--workers", "0", "--pin-memory", "auto",
        "--num-shards", "1",
        "--out", str(out),
    ]  # fmt: skip


# the .npz writer writes a little, then hangs: the test kills the job in the middle of the write
SLOW_WRITER = """
import sys, time
import numpy as np
def write_array(fh, array, **kw):
    fh.write(b"\\0" * 4096)
    fh.flush()
    print("WRITING", flush=True)
    time.sleep(600)
np.lib.format.write_array = write_array
from sure_ood.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill9", "term"])
def test_kill_during_extraction_leaves_no_cache(tmp_path, data_dir, test_model, sig):
    from sure_ood.cache import load_cache

    out = tmp_path / "features/view~center/split~id_test.npz"
    args = _extract_args(test_model, data_dir, out)
    log = tmp_path / "extract.out"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", SLOW_WRITER, *args], stdout=fh, stderr=fh, env=_env()
        )
        _wait_for(lambda: "WRITING" in log.read_text(), proc)
        proc.send_signal(sig)
        proc.wait(60)
    assert not out.exists(), "a killed extraction left a cache"
    # what is left is only the hidden temporary file of a SIGKILL (no process can catch it);
    # SIGTERM removes it at once
    left = sorted(os.listdir(out.parent))
    if sig == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM and left == [], left
    else:
        assert len(left) == 1 and left[0].startswith(".split~id_test.") and "tmp" in left[0]
    # the rerun sweeps the stale temporary file and writes a complete cache
    assert main(args) == 0
    assert sorted(os.listdir(out.parent)) == ["split~id_test.npz"]
    cache = load_cache(out)
    assert len(cache) > 0 and np.isfinite(cache.logits).all()


def test_non_finite_features_stop_extraction(tmp_path, data_dir, test_model, monkeypatch, capsys):
    import sure_ood.models

    real = sure_ood.models.load_model

    def nan_model(*a, **kw):
        model, spec = real(*a, **kw)
        forward, calls = model.forward_features, []

        def poisoned(x):
            tokens = forward(x).clone()
            if not calls:
                tokens[3] = float("nan")  # one image of the first batch
            calls.append(len(x))
            return tokens

        model.forward_features = poisoned
        return model, spec

    monkeypatch.setattr(sure_ood.models, "load_model", nan_model)
    out = tmp_path / "split~id_test.npz"
    assert main(_extract_args(test_model, data_dir, out)) == 4
    err = capsys.readouterr().err
    assert f"{test_model} on split 'id_test', view 'center': " in err
    assert "1 images have non-finite logits (first at row 3)" in err
    assert not out.exists()


# ---- NaN scores are counted, never dropped -------------------------------------------------
def test_nan_scores_are_counted_and_scored_worst_end_to_end(tmp_path, capsys):
    from sklearn.metrics import roc_auc_score

    from sure_ood.cache import FeatureCache, save_cache

    rng = np.random.default_rng(0)
    c, d = 4, 5
    head = rng.normal(size=(c, d)).astype(np.float32)

    def cache(n, labels, peak, nan_rows):
        logits = rng.normal(size=(n, c)).astype(np.float32)
        logits[np.arange(n), rng.integers(0, c, n)] += peak
        logits[nan_rows] = np.nan
        feats = rng.normal(size=(n, d)).astype(np.float32)
        return FeatureCache(logits, feats, labels, head, "linear", np.zeros(c, np.float32))

    id_nan, ood_nan = [2, 5, 11], [7]
    save_cache(tmp_path / "split~id_test.npz", cache(40, rng.integers(0, c, 40), 4.0, id_nan))
    save_cache(tmp_path / "split~ood_test.npz", cache(30, np.full(30, -1), 1.0, ood_nan))
    s, fused, row = tmp_path / "s.parquet", tmp_path / "fused.parquet", tmp_path / "row.json"
    feats = ["--features", str(tmp_path / "split~id_test.npz")]
    feats += ["--features", str(tmp_path / "split~ood_test.npz")]
    assert main(["score", "--method", "msp", *feats, "--out", str(s)]) == 0
    out = capsys.readouterr()
    assert "msp: 3 of 40 scores" in out.err and "msp: 1 of 30 scores" in out.err
    assert "4 NaN" in out.out
    assert main(["fuse", "--scores", str(s), "--fusion", "mean", "--out", str(fused)]) == 0
    args = ["--row", json.dumps({"method": "msp"}), "--table", "t", "--row-id", "r"]
    assert (
        main(["evaluate", "--scores", str(fused), *args, "--n-boot", "20", "--out", str(row)]) == 0
    )
    res = json.loads(row.read_text())
    assert "4 images have a non-finite score" in capsys.readouterr().out
    assert (res["n_id"], res["n_ood"], res["n_nonfinite"]) == (40, 30, 4)

    # reference: sklearn's AUROC with the NaN images at the worst end (ID lowest, OOD highest)
    import pandas as pd

    df = pd.read_parquet(s)
    is_id = (df["label"] >= 0).to_numpy()
    score = df["id_score"].to_numpy()
    worst = np.where(np.isnan(score), np.where(is_id, -1e9, 1e9), score)
    assert res["auroc"] == pytest.approx(roc_auc_score(is_id, worst), abs=1e-12)
    kept = ~np.isnan(score)
    assert res["auroc"] < roc_auc_score(is_id[kept], score[kept]), "NaN images were dropped"


# ---- safety: no unpickling, every write atomic ---------------------------------------------
def _crafted_pickle(path: Path, marker: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(path, "wb") as fh:
        pickle.dump({"epoch": 1, "model": Evil()}, fh, protocol=2)


def test_crafted_training_state_is_refused_on_resume(tmp_path, data_dir):
    from sure_ood.stages.train import train
    from sure_ood.training.setup import TrainingJob, run_fingerprint

    marker = tmp_path / "pwned"
    from sure_ood.data import TRAIN_SPLITS, read_split_manifests, split_identity

    train_manifest = read_split_manifests(data_dir, TRAIN_SPLITS)  # the training images
    fp = run_fingerprint(
        BENCH, MODEL, BASELINE, 3, None, split_identity(train_manifest, TRAIN_SPLITS)
    )
    (tmp_path / "state" / fp).mkdir(parents=True)
    _crafted_pickle(tmp_path / "state" / fp / "state.pt", marker)
    job = TrainingJob(BENCH, MODEL, BASELINE, 3, data_dir, tmp_path / "state", device="cpu")
    with pytest.raises(InputError, match=r"state\.pt: unreadable training state"):
        train(job, tmp_path / "log.jsonl")
    assert not marker.exists(), "resuming ran code from the state file"


def test_crafted_training_state_is_refused_by_finalize_swa(tmp_path):
    from sure_ood.stages.finalize_swa import finalize

    marker = tmp_path / "pwned"
    _crafted_pickle(tmp_path / "state.pt", marker)
    (tmp_path / "run.json").write_text(json.dumps({"state": str(tmp_path / "state.pt")}))
    with pytest.raises(InputError, match=r"state\.pt: unreadable training state"):
        finalize(tmp_path / "run.json", tmp_path / "final.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "final.safetensors").exists()


PACKAGE = ROOT / "src/sure_ood"


def _calls(tree):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _name(call: ast.Call) -> str:
    f = call.func
    if isinstance(f, ast.Attribute):
        base = f.value.id if isinstance(f.value, ast.Name) else "?"
        return f"{base}.{f.attr}"
    return getattr(f, "id", "?")


def test_checkpoints_are_never_unpickled():
    for f in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(f.read_text())
        for call in _calls(tree):
            name = _name(call)
            kw = {k.arg: k.value for k in call.keywords}
            where = f"{f.relative_to(ROOT)}:{call.lineno}"
            if name == "torch.load":
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value
                assert ok, f"{where}: torch.load without weights_only=True"
            if name.endswith(".load") and "allow_pickle" in kw:
                assert kw["allow_pickle"].value is False, f"{where}: allow_pickle=True"
            assert not name.startswith(("pickle.", "dill.", "cloudpickle.")), where


# write calls: name -> index of the argument that is the written path (None: the receiver)
WRITES = {
    "to_parquet": 0, "to_csv": 0, "to_json": 0, "to_pickle": 0, "savefig": 0, "tofile": 0,
    "np.save": 0, "np.savez": 0, "np.savez_compressed": 0, "torch.save": 1, "json.dump": 1,
    "save_file": 1, "shutil.copyfile": 1, "shutil.copy": 1, "shutil.copy2": 1,
    "shutil.move": 1, "write_text": None, "write_bytes": None,
}  # fmt: skip


def _unsafe_writes(path: Path, base: Path = ROOT) -> list[str]:
    """Writes whose target is not a name bound by ``with atomic_path(...) as NAME`` (or a file
    handle opened on one)."""
    bad: list[str] = []

    def visit(node, safe: frozenset):
        if isinstance(node, ast.With):
            add = set()
            for item in node.items:
                c, v = item.context_expr, item.optional_vars
                if isinstance(c, ast.Call) and isinstance(v, ast.Name):
                    n = _name(c).split(".")[-1]
                    arg0 = c.args[0] if c.args else None
                    # a file handle opened on a safe path, or a zip archive written into one
                    if n == "atomic_path" or (
                        n in ("open", "ZipFile")
                        and isinstance(arg0, ast.Name)
                        and arg0.id in safe | add
                    ):
                        add.add(v.id)
            safe = safe | add
        if isinstance(node, ast.Call):
            name = _name(node)
            short = name.split(".")[-1]
            key = name if name in WRITES else short if short in WRITES else None
            target = None
            if name == "open" or name.endswith(".open"):
                mode = node.args[1] if len(node.args) > 1 else None
                mode = mode or next((k.value for k in node.keywords if k.arg == "mode"), None)
                if isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+"):
                    target = node.args[0] if node.args else node.func.value
                    key = "open"
                    receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
                    if isinstance(receiver, ast.Name) and receiver.id in safe:
                        target = receiver  # a member of an archive opened on a safe path
            elif key is not None:
                idx = WRITES[key]
                if idx is None and (isinstance(node.func, ast.Name) or name.startswith("io.")):
                    key = None  # sure_ood.io.write_text / write_json: atomic helpers
                elif idx is None:
                    target = node.func.value if isinstance(node.func, ast.Attribute) else None
                else:
                    target = node.args[idx] if len(node.args) > idx else None
            if key is not None:
                t = target
                if isinstance(t, ast.Call) and _name(t) == "str" and t.args:
                    t = t.args[0]
                if not (isinstance(t, ast.Name) and t.id in safe):
                    bad.append(f"{path.relative_to(base)}:{node.lineno}: {ast.unparse(node)[:80]}")
        for child in ast.iter_child_nodes(node):
            visit(child, safe)

    visit(ast.parse(path.read_text()), frozenset())
    return bad


def test_every_write_goes_through_atomic_path():
    bad = [b for f in sorted(PACKAGE.rglob("*.py")) for b in _unsafe_writes(f)]
    assert not bad, "writes that bypass sure_ood.io.atomic_path:\n" + "\n".join(bad)


def test_the_write_scan_catches_a_direct_write(tmp_path):
    f = tmp_path / "probe.py"
    f.write_text(
        "def a(df, p):\n    df.to_parquet(p)\n"
        "def b(p):\n    with atomic_path(p) as tmp:\n        tmp.write_text('x')\n"
        "def c(p):\n    with open(p, 'a') as fh:\n        fh.write('x')\n"
        "def d(p, state):\n    torch.save(state, p)\n"
        "def e(p):\n    write_text(p, 'x')\n    Path(p).write_bytes(b'')\n"
        "def f(p, q):\n    with atomic_path(p) as tmp, open(tmp, 'wb') as fh, ZipFile(fh) as z:\n"
        "        z.open('a', 'w')\n"
        "    with ZipFile(q, 'w') as y:\n        y.open('b', 'w')\n"
    )
    assert [b.split(": ")[0] for b in _unsafe_writes(f, tmp_path)] == [
        "probe.py:2",
        "probe.py:7",
        "probe.py:10",
        "probe.py:13",
        "probe.py:18",
    ]


# ---- config values never reach a shell unquoted --------------------------------------------
@pytest.mark.workflow
def test_paths_with_spaces_quotes_and_shell_syntax_are_inert(tmp_path, test_model):
    """The workflow runs in a folder named with a space and a quote, and a recipe's init file
    is named with command substitutions: the jobs run, and nothing is executed."""
    from conftest import copy_workflow, run_snakemake

    work = copy_workflow(tmp_path / "my runs 'quoted'")
    weights = tmp_path / "w $(touch pwned) `touch pwned2` it's; touch pwned3.safetensors"
    weights.write_bytes(test_model.read_bytes())
    cfg = {
        **{k: CFG[k] for k in ("benchmark", "models")},
        "recipes": {"tiny": dict(BASELINE, epochs=1, init={"file": str(weights)})},
        "tables": {
            "t": {"rows": {"r": {"model": "deit3_micro", "recipe": "tiny", "method": "msp"}}}
        },
        "resources": {"default": {"threads": 1}},
    }
    (work / "config/odd.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/digits_osr/runs/model~deit3_micro/recipe~tiny/seed~0/run.json"
    run_snakemake(work, target, "--cores", "2", "--configfile", "config/odd.yaml")
    run = json.loads((work / target).read_text())
    assert run["epochs"] == 1
    log = work / "results/logs/digits_osr/runs/model~deit3_micro/recipe~tiny/seed~0/train.log"
    assert log.exists()
    assert not [p for p in tmp_path.rglob("pwned*")], "a config value was run by a shell"
    assert not list(Path.cwd().glob("pwned*"))


# ---- same inputs, same bytes ---------------------------------------------------------------
def test_identical_inputs_give_byte_identical_outputs(tmp_path, data_dir, test_model):
    """finalize_swa, extract and score, each run twice in fresh processes on the same inputs,
    write files with the same sha256 (the hashes every row's provenance records)."""
    import hashlib

    import torch

    from sure_ood.models import build_model, model_spec

    torch.manual_seed(0)
    spec = model_spec(MODEL, 6, {"head": "linear"})
    state = {"spec": json.dumps(spec), "model": build_model(spec).state_dict(), "epoch": 1}
    torch.save(state, tmp_path / "state.pt")
    summary = tmp_path / "run.json"
    summary.write_text(json.dumps({"state": str(tmp_path / "state.pt"), "epochs": 1}))

    def cli(*args):
        r = subprocess.run([str(BIN / "sure-ood"), *map(str, args)], env=_env(),
                           capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 0, r.stderr

    digests: dict[str, set[str]] = {}
    for i in (1, 2, 3, 4):  # finalize (cheap) four times: an unordered writer shows up
        d = tmp_path / f"try{i}"
        cli("finalize_swa", "--summary", summary, "--out", d / "final.safetensors")
        if i > 2:
            f = d / "final.safetensors"
            digests["final.safetensors"].add(hashlib.sha256(f.read_bytes()).hexdigest())
            continue
        cli(*_extract_args(test_model, data_dir, d / "split~id_test.npz"))
        cli(
            "score", "--method", "knn", "--param", "k=5",
            "--train-features", d / "split~id_test.npz", "--features", d / "split~id_test.npz",
            "--stats-out", d / "stats.npz", "--out", d / "scores.parquet",
        )  # fmt: skip
        for f in sorted(d.iterdir()):
            digests.setdefault(f.name, set()).add(hashlib.sha256(f.read_bytes()).hexdigest())
    assert set(digests) == {
        "final.safetensors", "split~id_test.npz", "stats.npz", "scores.parquet"
    }  # fmt: skip
    differ = sorted(name for name, h in digests.items() if len(h) != 1)
    why = ""
    if "final.safetensors" in differ:
        headers = {_safetensors_parts(tmp_path / f"try{i}/final.safetensors") for i in (1, 2)}
        if len({(json.dumps(json.loads(h), sort_keys=True), t) for h, t in headers}) == 1:
            why = " (final.safetensors: same tensors and metadata, only the key order differs)"
    assert not differ, f"identical runs wrote different bytes: {differ}{why}"


def _safetensors_parts(path: Path) -> tuple[bytes, bytes]:
    """(JSON header, tensor bytes) of a safetensors file."""
    import struct

    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return raw[8 : 8 + n], raw[8 + n :]
