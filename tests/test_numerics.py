"""Portable numerics: the pins, the CLI's mode, byte-identical checkpoints, and `verify`.

Unit tests check that the pins reach the libraries (in fresh processes: a library reads them
when it loads) and override the caller's values; that the safetensors writer gives the same
bytes in every process; and every verdict and bad input of `sure-ood verify` on small
hand-made runs. The workflow tests (marked ``workflow``) run real Snakemake on digits_osr:
one row under 1 vs 2 threads per job and under a caller that caps the instruction sets,
portable and native, and the whole config against the committed reference.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, copy_workflow, snakemake_env

from sure_ood import numerics
from sure_ood.config import ConfigError, load_schema, validate_config
from sure_ood.io import InputError
from sure_ood.stages import verify

# A caller whose environment steers every library to another code path than portable's.
CALLER_CAPS = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "AVX",
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "NUMBA_CPU_NAME": "generic",
    "NPY_DISABLE_CPU_FEATURES": "X86_V3",
    # OpenBLAS's AVX kernels (every AVX2 CPU runs them); portable mode's are Haswell's
    "OPENBLAS_CORETYPE": "Sandybridge",
    "OMP_NUM_THREADS": "2",
    "OPENBLAS_NUM_THREADS": "2",
}


def _python(code: str, env_extra: dict | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != numerics.ENV}
    env.update({"PYTHONPATH": str(ROOT / "src"), **(env_extra or {})})
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip()


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---- the pins -----------------------------------------------------------------------------
def test_portable_overrides_the_callers_values_and_native_keeps_them():
    env = {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "HOME": "/h"}
    portable = dict(env)
    numerics.apply("portable", portable)
    assert portable["ATEN_CPU_CAPABILITY"] == "avx2"
    assert "MKL_ENABLE_INSTRUCTIONS" not in portable  # a pin with no value removes it
    assert portable["NUMBA_CPU_FEATURES"] == "" and portable["OMP_NUM_THREADS"] == "1"
    assert portable["HOME"] == "/h" and portable[numerics.ENV] == "portable"
    assert all(portable.get(p.var) == p.value for p in numerics.PINS if p.value is not None)
    native = dict(env)
    numerics.apply("native", native)
    assert native == {**env, numerics.ENV: "native"}


def test_every_pin_is_one_row_with_a_reason():
    names = [p.var for p in numerics.PINS]
    assert len(names) == len(set(names))
    assert all(len(p.protects) > 20 for p in numerics.PINS)


def test_mode_resolution_and_unknown_values():
    assert numerics.resolve(None, {}) == numerics.DEFAULT
    assert numerics.resolve(None, {numerics.ENV: "native"}) == "native"
    assert numerics.resolve("portable", {numerics.ENV: "native"}) == "portable"
    with pytest.raises(InputError, match="--numerics: unknown numerics mode 'fast'"):
        numerics.resolve("fast", {})
    with pytest.raises(InputError, match="SURE_OOD_NUMERICS: unknown numerics mode 'x'"):
        numerics.resolve(None, {numerics.ENV: "x"})


def test_schema_default_and_choices_are_the_packages():
    prop = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())["properties"][
        "numerics"
    ]
    assert prop["default"] == numerics.DEFAULT and tuple(prop["enum"]) == numerics.MODES
    schema = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
    cfg = yaml.safe_load((ROOT / "config/digits_osr.yaml").read_text())
    cfg["numerics"] = "fastest"
    with pytest.raises(ConfigError, match="numerics"):
        validate_config(cfg, schema)
    for name in ("imagenet_ssb.yaml", "imagenet_ssb_tiny.yaml"):
        assert yaml.safe_load((ROOT / "config" / name).read_text())["numerics"] == "native"


def test_cli_rejects_an_unknown_mode(capsys):
    from sure_ood.cli import main

    assert main(["--numerics", "fast", "score", "--list"]) == 2
    assert "unknown numerics mode 'fast'" in capsys.readouterr().err


def test_cli_logs_the_command_with_its_mode_and_restores_the_env(capsys, monkeypatch):
    from sure_ood.cli import main

    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    monkeypatch.setenv("SURE_OOD_LOG_COMMAND", "1")  # as the workflow's jobs
    assert main(["--numerics", "portable", "score", "--list"]) == 0
    assert "sure-ood: command: sure-ood --numerics portable score --list" in capsys.readouterr().err
    assert os.environ["ATEN_CPU_CAPABILITY"] == "default"
    monkeypatch.delenv("SURE_OOD_LOG_COMMAND")  # by hand: stderr is for errors only
    assert main(["--numerics", "portable", "score", "--list"]) == 0
    assert capsys.readouterr().err == ""


PROBE = """
from sure_ood import numerics
numerics.apply(numerics.resolve(None))
import numba, numpy, torch
numerics.configure_torch(4)
from sure_ood import portable_blas
f = numpy._core._multiarray_umath.__cpu_features__
print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(),
      torch.backends.mkldnn.enabled, torch._C._get_nnpack_enabled(), numba.config.CPU_NAME,
      f["X86_V3"], portable_blas.installed())
"""


def test_portable_pins_reach_each_library_over_a_capped_caller():
    out = _python(PROBE, {**CALLER_CAPS, numerics.ENV: "portable"})
    assert out.split() == ["AVX2", "1", "False", "False", "haswell", "True", "True"]


def test_native_leaves_the_callers_caps_in_force():
    out = _python(PROBE, {**CALLER_CAPS, numerics.ENV: "native"})
    assert out.split() == ["DEFAULT", "4", "True", "True", "generic", "False", "False"]


# ---- byte-identical checkpoints -----------------------------------------------------------
def test_safetensors_bytes_do_not_depend_on_the_process(tmp_path):
    """safetensors orders its metadata by a per-process hash seed: 5 processes, 1 sha256."""
    code = (
        "import sys, torch\nfrom sure_ood.io import save_state_dict\n"
        "save_state_dict(sys.argv[1], {'w': torch.arange(6.).reshape(2, 3), 'b': torch.ones(2)},"
        " {k: k * 3 for k in 'abcdefgh'})"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    paths = [tmp_path / f"{i}.safetensors" for i in range(5)]
    for p in paths:
        subprocess.run([sys.executable, "-c", code, str(p)], env=env, check=True, timeout=120)
    assert len({_sha(p) for p in paths}) == 1
    from safetensors import safe_open

    with safe_open(str(paths[0]), "pt") as f:
        assert f.metadata() == {k: k * 3 for k in "abcdefgh"}
        assert f.get_tensor("w").tolist() == [[0, 1, 2], [3, 4, 5]]


def test_finalize_swa_writes_the_same_bytes_every_time(tmp_path):
    import torch

    from sure_ood.models import build_model

    spec = {
        "arch": "deit3_small_patch16_224",
        "timm_kwargs": {"patch_size": 2, "depth": 1, "embed_dim": 16, "num_heads": 2},
        "img_size": 8,
        "in_chans": 1,
        "num_classes": 3,
        "head": "cosine",
        "cos_temperature": 8.0,
        "feature_clip": None,
        "drop_final_norm": False,
    }
    torch.manual_seed(0)
    model = build_model(spec)
    torch.save({"spec": json.dumps(spec), "model": model.state_dict()}, tmp_path / "state.pt")
    (tmp_path / "run.json").write_text(
        json.dumps({"state": str(tmp_path / "state.pt"), "epochs": 1})
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    outs = [tmp_path / f"final{i}.safetensors" for i in range(4)]
    for out in outs:
        cmd = [sys.executable, "-m", "sure_ood", "finalize_swa"]
        cmd += ["--summary", str(tmp_path / "run.json"), "--out", str(out)]
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    assert len({_sha(p) for p in outs}) == 1


# ---- verify on hand-made runs -------------------------------------------------------------
HEADER = (
    "row,method,n_id,n_ood,auroc,auroc_lo,auroc_hi,fpr_at_95_tpr,fpr_at_95_tpr_lo,fpr_at_95_tpr_hi"
)
ROWS = {
    "a": "a,msp,10,10,0.800000,0.700000,0.900000,0.500000,0.400000,0.600000",
    "b": "b,energy,10,10,0.750000,0.650000,0.850000,0.550000,0.450000,0.650000",
}


def _make_run(root: Path, bench="toy", rows=ROWS, subtree=None) -> Path:
    run = root / "results" / bench
    (run / "tables").mkdir(parents=True)
    lines = [HEADER, *rows.values()]
    (run / "tables" / "t.csv").write_text("\n".join(lines) + "\n")
    (run / "tables" / "t.md").write_text("#### t\n\n| row | AUROC |\n|---|---|\n| a | 80.00 |\n")
    for r in rows:
        cfg = {"benchmark": bench, "row_id": r, "method": {"method": "msp"}, **(subtree or {})}
        path = run / "rows" / "t" / f"{r}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"table": "t", "row": r, "provenance": {"config": cfg}}))
    ckpt = run / "runs" / "model~m" / "recipe~r" / "seed~0" / "final.safetensors"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    return run


def _snapshot(d: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, _sha(p)) for p in d.rglob("*") if p.is_file()}


@pytest.fixture
def ref(tmp_path):
    run = _make_run(tmp_path / "a")
    dest = tmp_path / "reference" / "toy"
    verify.write_reference(run, dest)
    return dest


def _check(tmp_path, ref, **kw):
    run = _make_run(tmp_path / "b", **kw)
    before = _snapshot(run)
    rep = verify.compare_with_reference(run, ref)
    assert _snapshot(run) == before  # verify never writes into the run it checks
    return {r["row"]: r for r in rep["rows"]}, rep


def test_reference_copies_the_claims_table_when_the_run_has_one(tmp_path, ref):
    assert sorted(p.name for p in (ref / "tables").iterdir()) == ["t.csv", "t.md"]
    run = _make_run(tmp_path / "c")
    (run / "tables" / "claims.csv").write_text("claim,verdict\nx,reproduced\n")
    (run / "tables" / "claims.md").write_text("| claim | verdict |\n")
    dest = tmp_path / "reference_c" / "toy"
    m = verify.write_reference(run, dest)
    assert (dest / "tables" / "claims.csv").read_text() == "claim,verdict\nx,reproduced\n"
    assert m["tables"] == ["t"]  # not a table of rows: verify compares rows only
    assert m["files"]["tables/claims.csv"] == _sha(dest / "tables" / "claims.csv")


@pytest.mark.parametrize("bench", ["digits_osr", "mnist_osr"])
def test_committed_reference_files_match_their_manifest(bench):
    """Every file of a committed reference is the run's file its manifest names (sha256)."""
    ref = ROOT / "results" / "reference" / bench
    if not (ref / "manifest.json").exists():
        pytest.skip(f"no committed {bench} reference")
    files = json.loads((ref / "manifest.json").read_text())["files"]
    for p in sorted((ref / "tables").iterdir()):
        rel = f"tables/{p.name}"
        assert rel in files, f"{p}: not in the manifest"
        assert _sha(p) == files[rel], f"{p}: differs from the run the manifest records"


def test_reference_manifest_records_files_config_versions_and_mode(ref):
    m = json.loads((ref / "manifest.json").read_text())
    assert m["benchmark"] == "toy" and m["tables"] == ["t"] and m["numerics"] in numerics.MODES
    assert set(m["row_configs"]) == {"t/a", "t/b"} and len(m["config_sha256"]) == 64
    assert m["files"]["runs/model~m/recipe~r/seed~0/final.safetensors"] == (
        hashlib.sha256(b"weights").hexdigest()
    )
    assert "tables/t.csv" in m["files"] and "torch" in m["versions"]
    assert (ref / "tables" / "t.csv").exists() and (ref / "tables" / "t.md").exists()


def test_identical_run(tmp_path, ref):
    rows, rep = _check(tmp_path, ref)
    assert {r["verdict"] for r in rows.values()} == {"identical"}
    assert rep["files_differing"] == {}


def test_within_and_outside_the_reference_interval(tmp_path, ref):
    moved = {
        "a": "a,msp,10,10,0.810000,0.700000,0.900000,0.500000,0.400000,0.600000",
        "b": "b,energy,10,10,0.950000,0.650000,0.850000,0.550000,0.450000,0.650000",
    }
    rows, rep = _check(tmp_path, ref, rows=moved)
    assert rows["a"]["verdict"] == "within"
    assert rows["b"]["verdict"] == "outside" and rows["b"]["outside"] == ["auroc"]
    assert rep["files_differing"] == {"tables/t.csv": "differs"}


def test_cli_exit_status_and_report_outside_the_run(tmp_path, ref, capsys):
    from sure_ood.cli import main

    run = _make_run(tmp_path / "b")
    out = tmp_path / "report.json"
    assert main(["verify", str(run), "--reference", str(ref), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["rows"][0]["verdict"] == "identical"
    assert main(["verify", str(run), "--reference", str(ref), "--out", str(run / "v.json")]) == 2
    assert "verify never writes there" in capsys.readouterr().err
    (run / "tables" / "t.csv").write_text(
        HEADER + "\n" + ROWS["a"] + "\nb,energy,10,10,0.1,0.6,0.8,0.5,0.4,0.6\n"
    )
    assert main(["verify", str(run), "--reference", str(ref)]) == 1
    assert "| t | b | outside | auroc |" in capsys.readouterr().out


def test_unfinished_run_lists_the_missing_rows(tmp_path, ref):
    run = _make_run(tmp_path / "b")
    (run / "rows" / "t" / "b.json").unlink()
    with pytest.raises(InputError, match="unfinished run; missing: t/b"):
        verify.compare_with_reference(run, ref)


def test_reference_of_another_benchmark(tmp_path, ref):
    run = _make_run(tmp_path / "b", bench="other")
    with pytest.raises(InputError, match="reference of benchmark 'toy', run is 'other'"):
        verify.compare_with_reference(run, ref)


def test_reference_of_another_config(tmp_path, ref):
    run = _make_run(tmp_path / "b", subtree={"model": {"depth": 3}})
    with pytest.raises(InputError, match=r"another config \(rows whose config differs: t/a, t/b"):
        verify.compare_with_reference(run, ref)


@pytest.mark.parametrize(
    "text, message",
    [("{not json", "not valid JSON"), ("[1, 2]", "not a JSON object"), ("{}", "lacks benchmark")],
)
def test_manifest_that_does_not_parse(tmp_path, ref, text, message):
    (ref / "manifest.json").write_text(text)
    with pytest.raises(InputError, match=message):
        verify.compare_with_reference(_make_run(tmp_path / "b"), ref)


def test_published_numbers_with_tolerance(tmp_path):
    run = _make_run(tmp_path / "b")
    pub = {"t": {"a": {"auroc": 80.0, "fpr_at_95_tpr": 50.0}, "b": {"auroc": 85.8}}}
    rows = {r["row"]: r for r in verify.compare_with_published(run, pub, 1.0)["rows"]}
    assert rows["a"]["verdict"] == "identical"
    assert rows["b"]["verdict"] == "within"  # 85.8 in [65 - 1, 85 + 1]
    rows = {r["row"]: r for r in verify.compare_with_published(run, pub, 0.5)["rows"]}
    assert rows["b"]["verdict"] == "outside" and rows["b"]["outside"] == ["auroc"]
    with pytest.raises(InputError, match="unfinished run; missing rows: t/c"):
        verify.compare_with_published(run, {"t": {"c": {"auroc": 1.0}}}, 1.0)


def test_published_numbers_of_the_imagenet_config_are_read():
    pub = verify.published_numbers(ROOT / "config/imagenet_ssb.yaml")
    assert pub["tricks"]["sure_no_ln_480_ensemble_fivecrop"] == {
        "auroc": 81.54,
        "fpr_at_95_tpr": 61.72,
        "id_accuracy": 84.41,
    }


# ---- README -------------------------------------------------------------------------------
def test_readme_section_is_rewritten_between_the_markers(tmp_path, ref):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{verify.README_START}\nold\n{verify.README_END}\nafter\n")
    assert verify.update_readme(readme, ref)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{verify.README_END}\nafter\n")
    assert "| a | 80.00 |" in text and "old" not in text
    assert not verify.update_readme(readme, ref)  # idempotent


CLAIMS_CSV = (
    "claim,text,kind,a,b,metric,auroc_delta,auroc_delta_lo,auroc_delta_hi,"
    "fpr_at_95_tpr_delta,fpr_at_95_tpr_delta_lo,fpr_at_95_tpr_delta_hi,verdict\n"
    "c1,A beats B,pair,a,b,auroc,0.028805,0.003398,0.049141,-0.03,-0.09,0.03,reproduced\n"
    "c2,A is best,best_of,a,e,auroc,0.003584,-0.000635,0.007744,0,0,0,inconclusive\n"
    "c3,F lowers FPR,pair,f,g,fpr_at_95_tpr,0.01,0.2,0.3,0.05,0.021,0.1,contradicted\n"
)


def test_readme_claims_lists_each_verdict_with_its_effect(tmp_path, ref):
    (ref / "tables" / "claims.csv").write_text(CLAIMS_CSV)
    lines = verify.readme_claims(ref).splitlines()
    assert lines[0].startswith("<!-- generated by `make readme` from ") and lines[1] == ""
    assert lines[2:] == [
        "- *reproduced* (1 of 3):",
        "  - A beats B: Δ AUROC +2.88 [+0.34, +4.91]",
        "- *inconclusive* (1 of 3):",
        "  - A is best: Δ AUROC +0.36 [-0.06, +0.77] (closest: e)",
        "- *contradicted* (1 of 3):",
        "  - F lowers FPR: Δ FPR@95 +5.00 [+2.10, +10.00]",
    ]


def test_readme_claims_block_is_rewritten_when_the_readme_has_one(tmp_path, ref):
    (ref / "tables" / "claims.csv").write_text(CLAIMS_CSV)
    readme = tmp_path / "README.md"
    blocks = f"{verify.README_START}\nold\n{verify.README_END}\n"
    readme.write_text(blocks + "text\n")
    assert verify.update_readme(readme, ref)
    assert verify.CLAIMS_START not in readme.read_text()  # no claims markers: left alone
    readme.write_text(f"{blocks}{verify.CLAIMS_START}\nold claims\n{verify.CLAIMS_END}\nend\n")
    assert verify.update_readme(readme, ref)
    text = readme.read_text()
    assert "old claims" not in text and "A beats B: Δ AUROC +2.88" in text
    assert text.endswith(f"{verify.CLAIMS_END}\nend\n")
    assert not verify.update_readme(readme, ref)
    readme.write_text(f"{blocks}{verify.CLAIMS_START}\nno end marker\n")
    with pytest.raises(InputError, match="claims:start"):
        verify.update_readme(readme, ref)


def test_readme_matches_the_committed_reference():
    """The README's section is the generator's output for the committed reference it names:
    mnist_osr's where it is committed, else digits_osr's (`make readme` picks the same)."""
    bench = "mnist_osr"
    if not (ROOT / "results/reference/mnist_osr/manifest.json").exists():
        bench = "digits_osr"
    text = (ROOT / "README.md").read_text()
    section = text.split(verify.README_START, 1)[1].split(verify.README_END, 1)[0]
    assert f"from results/reference/{bench} " in section, f"README: not the {bench} reference"
    assert section == "\n" + verify.readme_section(Path(f"results/reference/{bench}")), (
        "README.md's default-run section is not the committed reference's: run `make readme`"
    )
    claims = text.split(verify.CLAIMS_START, 1)[1].split(verify.CLAIMS_END, 1)[0]
    assert claims == "\n" + verify.readme_claims(Path(f"results/reference/{bench}")), (
        "README.md's claims list is not the committed reference's: run `make readme`"
    )


# ---- workflow: real Snakemake on digits_osr -------------------------------------------------
ROW = "results/digits_osr/rows/sure_vs_baseline/baseline.json"


def _row_run(tmp_path_factory, name: str, *args: str, env_extra: dict | None = None) -> Path:
    """One row of digits_osr (train, finalize, extract, score, evaluate) in a fresh copy."""
    work = copy_workflow(tmp_path_factory.mktemp(name))
    env = {**snakemake_env(), **(env_extra or {})}
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--cores", "2", ROW, *args]
    cmd += ["--configfile", "config/digits_osr.yaml"]
    r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=2400)
    assert r.returncode == 0, r.stderr[-5000:]
    return work / "results/digits_osr"


def _fingerprint(run: Path) -> dict:
    """sha256 of the row's checkpoints and caches, and its metrics (the table's numbers)."""
    files = {
        p.relative_to(run).as_posix(): _sha(p)
        for pattern in ("runs/**/final.safetensors", "test_models/**/*.safetensors", "**/*.npz")
        for p in run.glob(pattern)
    }
    row = json.loads((run / ROW.split("digits_osr/", 1)[1]).read_text())
    metrics = {k: v for k, v in row.items() if k in verify.METRICS or k.endswith("_ci")}
    return {"files": dict(sorted(files.items())), "metrics": metrics}


@pytest.fixture(scope="module")
def portable_row(tmp_path_factory):
    return _fingerprint(_row_run(tmp_path_factory, "portable_t1"))


def _diff(a: dict, b: dict) -> list[str]:
    keys = set(a["files"]) | set(b["files"])
    out = [k for k in sorted(keys) if a["files"].get(k) != b["files"].get(k)]
    out += [k for k in a["metrics"] if a["metrics"][k] != b["metrics"].get(k)]
    return out


@pytest.mark.workflow
def test_portable_row_is_identical_with_two_threads_per_job(tmp_path_factory, portable_row):
    two = _fingerprint(
        _row_run(tmp_path_factory, "portable_t2", "--set-threads", "train=2", "extract=2")
    )
    assert portable_row["files"] and not _diff(portable_row, two)


@pytest.mark.workflow
def test_portable_row_is_identical_under_a_capped_caller(tmp_path_factory, portable_row):
    capped = _fingerprint(_row_run(tmp_path_factory, "portable_caps", env_extra=CALLER_CAPS))
    assert not _diff(portable_row, capped)


@pytest.mark.workflow
def test_native_row_differs_under_a_capped_caller(tmp_path_factory):
    """The control: without the pins the caller's caps change the bits (so the two tests
    above can fail)."""
    args = ("--config", "numerics=native")
    plain = _fingerprint(_row_run(tmp_path_factory, "native", *args))
    capped = _fingerprint(_row_run(tmp_path_factory, "native_caps", *args, env_extra=CALLER_CAPS))
    assert any(k.endswith(".safetensors") for k in _diff(plain, capped))


@pytest.mark.workflow
def test_digits_run_is_identical_to_the_committed_reference(digits_run):
    ref = ROOT / "results/reference/digits_osr"
    rep = verify.compare_with_reference(digits_run / "results/digits_osr", ref)
    rows = [f"{r['table']}/{r['row']}: {r['verdict']}" for r in rep["rows"]]
    bad = [x for x in rows if not x.endswith("identical")]
    assert not bad and not rep["files_differing"], (
        f"digits_osr differs from {ref} (numerics {rep['numerics']}):\n"
        + "\n".join(bad + [f"{s}: {p}" for p, s in rep["files_differing"].items()])
    )
