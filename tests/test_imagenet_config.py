"""config/imagenet_ssb.yaml (the published experiment) dry-runs on ImageFolder data; its scaled-down
copy config/imagenet_ssb_tiny.yaml runs end to end on the CPU through real Snakemake."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import MAX_COMMAND, ROOT, copy_workflow, run_snakemake, shell_commands
from imagefolder_fixture import KNOWN, make_imagefolder

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="session")
def inet_data(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("inet_cfg") / "data")


def _job_counts(text: str) -> dict[str, int]:
    block = text.split("Job stats:")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.M)}


def test_published_config_matches_the_spec():
    cfg = yaml.safe_load((ROOT / "config/imagenet_ssb.yaml").read_text())
    sure = cfg["recipes"]["sure"]
    assert cfg["models"]["deit3_base_384"] == {"arch": "deit3_base_patch16_384", "img_size": 384}
    assert sure["init"] == {"timm_tag": "fb_in1k"}
    expected = {  # docs/method.md#fine-tuning-hyper-parameters
        "epochs": 20, "extra_final_epoch": True, "batch_size": 32, "optimizer": "sgd",
        "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-3, "sam_rho": 0.05,
        "swa_start_epoch": 0, "swa_lr": 1e-4, "swa_anneal_epochs": 10, "mixup_weight": 0.2,
        "mixup_beta": 10.0, "crl_weight": 0.0, "head": "cosine", "cos_temperature": 8.0,
        "feature_clip": 100.0, "label_smoothing": 0.1, "augmentation": "reference",
    }  # fmt: skip
    assert {k: sure[k] for k in expected} == expected
    b = cfg["benchmark"]
    assert b["ood_splits"] == ["ssb_easy", "ssb_hard"] and b["val_fraction"] > 0
    assert b["test_transform"] == {"crop_ratio": 0.875, "interpolation": "bilinear"}
    pub = {(t, r): (v.get("auroc"), v.get("fpr_at_95_tpr")) for t in cfg["tables"]
           for r, v in cfg["tables"][t].get("published", {}).items()}  # fmt: skip
    assert pub[("sure_vs_baseline", "baseline")] == (34.28, 96.86)
    tricks = [pub[("tricks", r)] for r in cfg["tables"]["tricks"]["rows"]]
    assert tricks == [(79.97, 68.03), (80.25, 64.59), (80.31, 64.25), (80.61, 63.58),
                      (81.54, 61.72)]  # fmt: skip
    # report Table 2: AUROC and FPR@TPR95 of all eight post-hoc scores
    assert {r: pub[("posthoc", r)] for r in cfg["tables"]["posthoc"]["published"]} == {
        "msp": (76.09, 73.02), "odin": (77.79, 71.76), "energy": (77.16, 70.01),
        "gradnorm": (57.29, 70.35), "rp_msp": (76.12, 73.19), "rw_odin": (76.49, 71.88),
        "rw_energy": (77.71, 71.08), "rp_gradnorm": (79.97, 68.03),
    }  # fmt: skip
    fivecrop = cfg["tables"]["tricks"]["published"]["sure_no_ln_480_ensemble_fivecrop"]
    assert fivecrop["id_accuracy"] == 84.41  # the challenge leaderboard's ACC
    # the reference code's ODIN settings for the published rows, OpenOOD's as an alternative
    from sure_ood.config import odin_params

    methods = cfg["methods"]
    for m in ("odin", "rw_odin"):
        assert odin_params(methods[m]["params"]) == {
            "temperature": 1000.0, "epsilon": 0.0, "std_scaled": False
        }  # fmt: skip
    assert odin_params(methods["odin_openood"]["params"])["epsilon"] == 0.0014
    rows = cfg["tables"]["tricks"]["rows"]
    assert rows["sure_no_ln_480_ensemble_fivecrop"] == {
        "seeds": [0, 1], "drop_final_norm": True, "img_size": 480, "views": "five_crop"
    }  # fmt: skip
    assert cfg["resources"]["train"]["gpu"] >= 1 and cfg["resources"]["extract"]["gpu"] >= 1
    # scoring goes to the cluster with declared memory; only the table and figures stay local
    assert not {"score", "fuse", "evaluate"} & set(cfg["local_rules"])
    assert all(cfg["resources"][r]["mem_mb"] for r in ("score", "fuse", "evaluate"))


def _with_job_files(work, out: str) -> str:
    """The dry run's text and, after it, each per-job file it names (`--job FILE`): its JSON
    and its options as a command line."""
    from sure_ood.jobs import options_argv

    texts = []
    for f in sorted(set(re.findall(r"--job (\S+)", out))):
        text = (work / f).read_text()
        texts += [text, " ".join(options_argv(json.loads(text)["options"]))]
    return "\n".join([out, *texts])


def test_published_dag_dry_runs_on_imagefolder_data(inet_data, tmp_path):
    work = copy_workflow(tmp_path)
    r = run_snakemake(
        work, "-n", "-p", "--configfile", "config/imagenet_ssb.yaml",
        "--config", f"data_root={inet_data}",
    )  # fmt: skip
    out = r.stdout + r.stderr
    jobs = _job_counts(out)
    commands = shell_commands(out)
    assert len(commands) > 100 and max(map(len, commands)) <= MAX_COMMAND, max(commands, key=len)
    out = _with_job_files(work, out)  # the settings and paths of each command
    assert "--shard 3 " in out
    # runs: baseline, sure seed 0, sure seed 1; test models: baseline, sure (LN), sure no-LN,
    # no-LN 480, soup of seeds 0+1 at 480
    assert jobs["prepare_data"] == 1 and jobs["train"] == 3 and jobs["make_test_model"] == 5
    assert jobs["prepare_data_ood"] == 2  # one part per OOD split
    # sharded extraction (4 shards), merged per split before scoring
    assert jobs["extract"] == 4 * jobs["merge_features"]
    assert "--num-shards 4" in out
    # 3 test splits per (test model, view): 5 test models at the centre view + the 5 five-crop
    # views of the souped 480 model
    assert jobs["merge_features"] == 3 * (5 + 5)
    # two GPUs per training job: one torchrun process each; bf16 + channels-last on CUDA
    assert "torchrun --standalone --nproc_per_node=2 -m sure_ood -- train" in out
    # float32 as the reference ran (bf16 / tf32 are options), channels-last on CUDA
    assert "--amp none" in out and "--channels-last" in out
    # the zero-epoch baseline is one process on one GPU (a validation pass), not torchrun on
    # two for 48 h: only the two SURE runs start torchrun
    assert out.count("torchrun --standalone") == 2
    assert f'"data_root": "{inet_data}"' in out
    for split in ("id_test", "ssb_easy", "ssb_hard"):
        assert f"split~{split}.npz" in out
    assert "rows/tricks/sure_no_ln_480_ensemble_fivecrop.json" in out


def test_tiny_copy_runs_end_to_end(inet_data, tmp_path):
    work = copy_workflow(tmp_path)
    run_snakemake(
        work, "--cores", "2", "--configfile", "config/imagenet_ssb_tiny.yaml",
        "--config", f"data_root={inet_data}",
    )  # fmt: skip
    out = work / "results/imagenet_ssb_tiny"
    classes = json.loads((out / "data/classes.json").read_text())
    assert classes["known_classes"] == sorted(KNOWN)
    assert classes["counts"] == {"train": 144, "val": 16, "id_test": 40}
    for split in ("ssb_easy", "ssb_hard"):  # each OOD split's part: its own summary
        summary = json.loads((out / f"data/split~{split}/summary.json").read_text())
        assert summary["counts"] == {split: 20}
    # the merged shards hold every image of the split, in manifest order
    feats = out / "features/deit3_micro-baseline-s0/view~center"
    for split in ("id_test", "ssb_easy", "ssb_hard"):
        m = pd.read_parquet(out / f"data/split~{split}/manifest.parquet")
        with np.load(feats / f"split~{split}.npz") as z:
            np.testing.assert_array_equal(z["labels"], m.label.to_numpy())
    row = json.loads((out / "rows/sure_vs_baseline/baseline.json").read_text())
    assert row["n_id"] == 40 and row["n_ood"] == 40
    assert set(row["per_split"]) == {"ssb_easy", "ssb_hard"}
    table = pd.read_csv(out / "tables/sure_vs_baseline.csv")
    assert list(table["row"]) == ["baseline", "sure_no_ln"]
    assert ((table["auroc"] > 0.5) & (table["id_accuracy"] > 0.5)).all(), table
    assert "34.28" in (out / "tables/sure_vs_baseline.md").read_text()
    # the RW+ODIN row (reference settings: T 1000, eps 0) and the published ACC column
    assert (out / "rows/posthoc/rw_odin.json").exists()
    assert "published ACC" in (out / "tables/sure_vs_baseline.md").read_text()
    _moving_the_data_reruns_nothing(work, inet_data, tmp_path)
    _adding_an_ood_split_reruns_only_its_work(work, inet_data, tmp_path)


def _dry_run(work, *args):
    r = run_snakemake(work, "-n", "-p", "--cores", "2", *args)
    out = r.stdout + r.stderr
    return (_job_counts(out) if "Job stats:" in out else {}), out


def _moving_the_data_reruns_nothing(work, inet_data, tmp_path):
    """A run's identity is what its images are, not where: the same images in another
    folder (a new data_root) schedule no job at all, neither training nor extraction."""
    import shutil

    moved = tmp_path / "moved" / "inet"
    shutil.copytree(inet_data, moved)
    jobs, out = _dry_run(work, "--configfile", "config/imagenet_ssb_tiny.yaml",
                         "--config", f"data_root={moved}")  # fmt: skip
    for rule in ("prepare_data", "train", "finalize_swa", "make_test_model", "extract",
                 "merge_features", "odin", "score"):  # fmt: skip
        assert jobs.get(rule, 0) == 0, f"{rule} reruns after moving the data:\n{out[-4000:]}"
    assert "Nothing to be done" in out, out[-3000:]


def _scheduled(out: str) -> list[tuple[str, str]]:
    """(rule, first output) of every job of a dry run's printout."""
    jobs = []
    for m in re.finditer(r"^(?:local)?rule (\w+):\n((?:    .*\n)*)", out, re.M):
        o = re.search(r"^    output: ([^,\n]+)", m.group(2), re.M)
        jobs.append((m.group(1), o.group(1).strip() if o else ""))
    return jobs


def _adding_an_ood_split_reruns_only_its_work(work, inet_data, tmp_path):
    """A third OOD split (its folder, its classes in the SSB split file, its name in
    ood_splits) schedules its own prepare_data part, extraction and ODIN jobs, and the
    scores, rows and tables that report it: no training, no test model, and nothing of the
    splits already done."""
    import shutil

    from imagefolder_fixture import add_ood_split

    grown = tmp_path / "grown" / "inet"
    shutil.copytree(inet_data, grown)
    split = add_ood_split(grown)
    cfg = yaml.safe_load((work / "config/imagenet_ssb_tiny.yaml").read_text())
    cfg["benchmark"]["ood_splits"].append(split)
    (work / "config/grown.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs, out = _dry_run(
        work, "--configfile", "config/grown.yaml", "--config", f"data_root={grown}"
    )
    for rule in ("prepare_data", "train", "finalize_swa", "make_test_model"):
        assert jobs.get(rule, 0) == 0, f"{rule} reruns after adding an OOD split:\n{out[-4000:]}"
    scheduled = _scheduled(out)
    own = {r: [o for rr, o in scheduled if rr == r] for r in ("prepare_data_ood", "extract",
                                                             "merge_features", "odin")}  # fmt: skip
    assert own["prepare_data_ood"] == [
        f"results/imagenet_ssb_tiny/data/split~{split}/manifest.parquet"
    ]
    # the new split of each (test model, view): 2 shards, 1 merge; ODIN on the SURE model
    assert len(own["extract"]) == 2 * len(own["merge_features"]) > 0 and own["odin"], own
    for rule in ("extract", "merge_features", "odin"):
        assert all(f"/split~{split}" in o for o in own[rule]), (rule, own[rule])
    assert jobs["score"] > 0 and jobs["evaluate"] == 3 and jobs["table"] == 2, jobs
