"""What a GPU cluster run relies on, checked on the CPU: resume with device-mapped state,
distinct augmentation streams per rank and loader worker, the reference's timm augmentation.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sure_ood.data import Normalization, PerSampleRandomness, make_transform, stream_seed
from sure_ood.distributed import DistInfo

BIN = Path(sys.executable).parent
DIGITS = {
    "name": "digits_osr",
    "source": "sklearn_digits",
    "known_classes": [0, 1, 2, 3, 4, 5],
    "unknown_classes": [6, 7, 8, 9],
    "split": {"train": 0.6, "val": 0.1, "id_test": 0.3},
    "ood_fraction": 0.5,
    "seed": 0,
    "normalization": {"mean": [0.3], "std": [0.35]},
    "test_transform": {"crop_ratio": 1.0, "interpolation": "bilinear"},
}
MODEL = {
    "arch": "deit3_small_patch16_224",
    "img_size": 8,
    "in_chans": 1,
    "timm_kwargs": {"patch_size": 4, "depth": 1, "embed_dim": 16, "num_heads": 2, "init_values": 0},
}
RECIPE = {
    "epochs": 2,
    "batch_size": 64,
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "mixup_weight": 0.2,
    "mixup_beta": 10.0,
    "augmentation": "basic",
}


@pytest.fixture(scope="module")
def digits_data(tmp_path_factory):
    from sure_ood.stages.prepare_data import prepare

    out = tmp_path_factory.mktemp("digits")
    prepare(DIGITS, out)
    return out


# ---- 1. device-safe resume ----------------------------------------------------------------
def test_resume_restores_rng_and_optimizer_onto_a_non_cpu_model(tmp_path, digits_data):
    """A state written by a real (CPU) run, restored into a model and optimizer living on
    ``meta`` (a device with no CPU storage, standing in for CUDA): the RNG states come back
    exactly as saved and the optimizer's state follows the parameters' device."""
    from sure_ood.models import build_model, model_spec
    from sure_ood.stages.train import train
    from sure_ood.training.setup import TrainingJob, make_optimizer
    from sure_ood.training.state import load_training_state, restore_training_state
    from sure_ood.tricks.crl import CorrectnessHistory

    job = TrainingJob(DIGITS, MODEL, RECIPE, 0, digits_data, tmp_path / "state", stop_after_epoch=1)
    train(job, tmp_path / "log.jsonl")
    (path,) = tmp_path.glob("state/*/state.pt")
    s = load_training_state(path)
    assert s["rng"]["torch"].device.type == "cpu"  # whatever device trains, the RNG stays CPU

    spec = model_spec(MODEL, 6, RECIPE)
    model = build_model(spec).to("meta")
    opt = make_optimizer(model.parameters(), RECIPE)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2)
    history = CorrectnessHistory(len(s["crl"]["correctness"]))
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    restore_training_state(s, model, opt, cosine, history)
    assert torch.equal(torch.get_rng_state(), s["rng"]["torch"])
    np_state = np.random.get_state()
    assert np.array_equal(np_state[1], s["rng"]["numpy_keys"].numpy().astype(np.uint32))
    assert np_state[2] == s["rng"]["numpy_pos"]
    assert list(random.getstate()[1]) == s["rng"]["python"]
    moments = [v for st in opt.state.values() for k, v in st.items() if k == "momentum_buffer"]
    assert moments and all(m.device.type == "meta" for m in moments)


def test_rng_state_mapped_off_the_cpu_is_brought_back(monkeypatch):
    """``torch.set_rng_state`` only takes CPU ByteTensors: a state tensor delivered as another
    dtype/layout (what a device-mapped load gives, after ``.to``) is converted, not refused."""
    from sure_ood.training.state import rng_state, set_rng_state

    torch.manual_seed(5)
    saved = rng_state("cpu")
    expected = torch.rand(3)
    mapped = {**saved, "torch": saved["torch"].to(torch.int16)}  # not a ByteTensor any more
    torch.manual_seed(99)
    set_rng_state(mapped)
    assert torch.equal(torch.rand(3), expected)


# ---- 2. per-rank, per-worker streams ------------------------------------------------------
class _SameImage:
    """Every item is the same image: any difference after the transform is augmentation."""

    def __init__(self, n: int, transform) -> None:
        self.n, self.transform = n, transform
        g = torch.Generator().manual_seed(0)
        self.img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return self.transform(self.img), 0, i


NORM3 = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _batches(ds, rank: int, world: int, workers: int, seed: int = 0, epoch: int = 1):
    """The loader's batches in order, {index: image}, and 4 RegMixup draws of the rank."""
    from sure_ood.training.engine import epoch_loader

    info = DistInfo(rank, world, rank, "cpu")
    loader, _, mix = epoch_loader(ds, 8, seed, epoch, info, {"num_workers": workers})
    batches = [(x, idx) for x, _, idx in loader]
    by_index = {int(i): xi for x, idx in batches for i, xi in zip(idx, x, strict=True)}
    return [x for x, _ in batches], by_index, torch.rand(4, generator=mix)


def _same_draws(a: list, b: list) -> int:
    """How many same-position images two sequences of batches share."""
    pairs = zip(a, b, strict=True)
    return sum(torch.equal(u, v) for x, y in pairs for u, v in zip(x, y, strict=True))


@pytest.mark.parametrize("policy", ["basic", "reference"])
def test_ranks_and_workers_draw_distinct_augmentations(policy):
    """Every image is the same picture, so equal outputs mean equal draws. Before, the two
    ranks' workers were seeded alike and drew the k-th augmentation identically."""
    tf = make_transform("center", 48, NORM3, train=True, augmentation=policy)
    ds = _SameImage(64, tf)
    if policy == "reference":
        ds = PerSampleRandomness(ds, seed=0)
    b0, r0, m0 = _batches(ds, 0, 2, workers=2)
    b1, _, m1 = _batches(ds, 1, 2, workers=2)
    n = sum(len(x) for x in b0)
    assert _same_draws(b0, b1) <= n // 8, "rank 1 repeats rank 0's augmentations"
    # the two workers of a rank (batches alternate between them) draw differently too
    assert _same_draws(b0[0::2], b0[1::2]) <= n // 8
    assert not torch.equal(m0, m1), "the ranks' RegMixup draws must differ"
    # reproducible: the same rank again gives the same images and draws
    _, again, m0b = _batches(ds, 0, 2, workers=2)
    assert torch.equal(m0, m0b)
    assert r0.keys() == again.keys() and all(torch.equal(r0[i], again[i]) for i in r0)


def test_per_sample_augmentation_ignores_workers_and_ranks():
    """With the per-sample stream an image's augmentation depends on (seed, epoch, index)
    only: one process with 0 workers and two ranks with 2 workers each see the same tensors."""
    tf = make_transform("center", 12, NORM3, train=True, augmentation="reference")
    ds = PerSampleRandomness(_SameImage(24, tf), seed=3)
    one = _batches(ds, 0, 1, workers=0, seed=3)[1]
    two = {}
    for r in (0, 1):
        two.update(_batches(ds, r, 2, workers=2, seed=3)[1])
    assert one.keys() == two.keys()
    assert all(torch.equal(one[i], two[i]) for i in one)
    # and the caller's own streams are untouched by the per-sample seeding
    torch.manual_seed(1)
    ref = torch.rand(2)
    torch.manual_seed(1)
    ds[0]
    assert torch.equal(torch.rand(2), ref)
    assert stream_seed(3, 1, 0) != stream_seed(3, 2, 0) != stream_seed(3, 1, 1)


def _torchrun_train(data_dir: Path, work: Path, recipe: dict) -> dict:
    args = [
        "train", "--benchmark", json.dumps(DIGITS), "--model", json.dumps(MODEL),
        "--recipe", json.dumps(recipe), "--seed", "0", "--data-dir", str(data_dir),
        "--state-dir", str(work / "state"), "--log", str(work / "log.jsonl"),
        "--summary", str(work / "run.json"), "--device", "cpu", "--workers", "2",
        "--threads", "1", "--amp", "none", "--pin-memory", "auto",
    ]  # fmt: skip
    cmd = [str(BIN / "torchrun"), "--standalone", "--nnodes=1", "--nproc_per_node=2",
           "-m", "sure_ood", "--", *args]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    summary = json.loads((work / "run.json").read_text())
    return torch.load(summary["state"], map_location="cpu", weights_only=True)


def test_two_gloo_processes_with_two_workers_are_reproducible(digits_data, tmp_path):
    """2 processes x 2 loader workers, augmentation and RegMixup on: two identical runs end
    with identical weights, and each rank kept its own RNG stream."""
    recipe = {**RECIPE, "epochs": 1}
    a = _torchrun_train(digits_data, tmp_path / "a", recipe)
    b = _torchrun_train(digits_data, tmp_path / "b", recipe)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    r0, r1 = a["rng_ranks"]
    assert not torch.equal(r0["torch"], r1["torch"])


# ---- 3. the reference augmentation through timm -------------------------------------------
def test_reference_augmentation_is_timms_create_transform_with_the_reference_arguments():
    """Our ``reference`` policy against timm built here with the reference code's arguments
    (SSB-OSR ``get_deit_train_transform``), on the same image and seeds."""
    from PIL import Image
    from timm.data import create_transform

    timm_tf = create_transform(
        input_size=32,
        is_training=True,
        color_jitter=0.3,
        auto_augment="rand-m9-mstd0.5-inc1",
        interpolation="bicubic",
        re_prob=0.25,
        re_mode="pixel",
        re_count=1,
        mean=NORM3.mean,
        std=NORM3.std,
    )
    ours = make_transform("center", 32, NORM3, train=True, augmentation="reference")
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    pil, tensor = Image.fromarray(arr), torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    def seed_all(seed):  # timm draws from python's random, numpy (op choice) and torch (erasing)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    for seed in range(12):
        seed_all(seed)
        want = timm_tf(pil)
        seed_all(seed)
        got = ours(tensor)
        assert got.shape == (3, 32, 32)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # and it is not the old torchvision RandAugment: timm's ops draw from python's random
    seed_all(0)
    a = ours(tensor)
    seed_all(0)
    random.seed(1)
    assert not torch.equal(a, ours(tensor))


def test_posterize_keeping_zero_bits_gives_black_instead_of_crashing():
    """timm's PosterizeIncreasing keeps 0 bits at magnitude 10 (reachable with mstd 0.5);
    Pillow >= 10 raises there, so the reference policy patches it to Pillow < 10's black."""
    from PIL import Image

    tf = make_transform("center", 32, NORM3, train=True, augmentation="reference")
    ra = next(t for t in tf.transforms[1].transforms if hasattr(t, "ops"))
    op = next(o for o in ra.ops if o.name == "PosterizeIncreasing")
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0
    img = Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8))
    assert np.asarray(op(img)).max() == 0
    op.magnitude = 5  # 4 - int(5 / 10 * 4) = 2 bits kept: Pillow's own posterize
    assert np.asarray(op(img)).max() == 192


# ---- 6. streamed float32 fusion -----------------------------------------------------------
def test_float32_streamed_softmax_mean_matches_float64(monkeypatch):
    """The fused class prediction: float32 sums, a few rows at a time, against float64 in one
    go. They agree wherever the float64 top-2 gap exceeds float32's resolution."""
    from scipy.special import softmax

    from sure_ood.stages import fuse

    monkeypatch.setattr(fuse, "BLOCK_BYTES", 4 * 100 * 7)  # 7 rows per block
    rng = np.random.default_rng(0)
    views = [rng.normal(0, 4, (500, 100)).astype(np.float32) for _ in range(5)]
    acc = np.zeros((500, 100), dtype=np.float32)
    for z in views:
        fuse.add_softmax(acc, z)
    ref = np.mean([softmax(z.astype(np.float64), axis=1) for z in views], axis=0)
    np.testing.assert_allclose(acc / 5, ref, rtol=0, atol=1e-6)
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-6
    assert clear.mean() > 0.99
    assert np.array_equal(acc.argmax(1)[clear], ref.argmax(1)[clear])


# ---- 7. precision the device cannot run ---------------------------------------------------
def test_a_precision_the_device_cannot_run_fails_naming_the_key(monkeypatch):
    """A CUDA-free stand-in: the capability queries answer as an old GPU would."""
    from sure_ood.distributed import check_precision
    from sure_ood.io import InputError

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 0))
    with pytest.raises(InputError, match=r"^compute\.odin\.amp: bf16 is not supported by Tesla"):
        check_precision("bf16", "cuda:0", "compute.odin.amp")
    with pytest.raises(InputError, match=r"^compute\.amp: tf32 needs compute capability 8\.0"):
        check_precision("tf32", "cuda:0")
    with pytest.raises(InputError, match=r"^compute\.amp: 'fp8' is not one of"):
        check_precision("fp8", "cpu")
    check_precision("bf16", "cpu")  # the CPU runs float32 whatever is asked
    check_precision("none", "cuda:0")


def test_odin_with_zero_epsilon_is_temperature_scaled_msp():
    """The reference preset (eps 0) skips the input gradient: the score is max softmax(z/T)."""
    from sure_ood.scores.odin import odin_scores

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
    x = torch.randn(4, 3, 2, 2)
    want = torch.softmax(model(x) / 1000.0, dim=1).max(dim=1).values.double()
    np.testing.assert_allclose(odin_scores(model, x, 1000.0, 0.0), want.detach().numpy())
    # eps > 0 still perturbs (and differs)
    assert not np.allclose(odin_scores(model, x, 1.0, 0.5), odin_scores(model, x, 1.0, 0.0))


# ---- 4. the published ID accuracy column ---------------------------------------------------
def test_published_accuracy_is_a_column_beside_ours():
    from sure_ood.stages.table import collect, to_markdown

    row = {
        "table": "t", "row": "final", "auroc": 0.8, "fpr_at_95_tpr": 0.6, "id_accuracy": 0.85,
        "n_id": 10, "n_ood": 20, "provenance": {"row_config": {"method": "rp_gradnorm"}},
    }  # fmt: skip
    cfg = {"published": {"final": {"auroc": 81.54, "fpr_at_95_tpr": 61.72, "id_accuracy": 84.41}}}
    df = collect([row], cfg)
    assert df.loc[0, "published_id_accuracy"] == pytest.approx(0.8441)
    lines = to_markdown(df, "T").splitlines()
    head = [c.strip() for c in lines[2].strip("|").split("|")]
    cells = [c.strip() for c in lines[4].strip("|").split("|")]
    assert head[-3:] == ["published AUROC", "published FPR@95", "published ACC"]
    assert cells[-3:] == ["81.54", "61.72", "84.41"]
    assert cells[head.index("ACC")] == "85.00"


# ---- 6. local rules name real rules --------------------------------------------------------
@pytest.mark.workflow
def test_the_schema_lists_exactly_the_workflow_rules(tmp_path):
    """`local_rules` is checked against the schema's list of rule names: that list must be the
    Snakefile's rules (for both extraction layouts), or a real rule could not be set local."""
    import yaml
    from conftest import ROOT, copy_workflow, run_snakemake

    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    listed = set(schema["properties"]["local_rules"]["items"]["enum"])
    work = copy_workflow(tmp_path)
    rules = set()
    for cfg in ("config/digits_osr.yaml", "config/imagenet_ssb.yaml"):
        out = run_snakemake(work, "--list-rules", "--configfile", cfg,
                            "--config", "data_root=/nonexistent").stdout  # fmt: skip
        rules |= {line.strip() for line in out.splitlines() if line.strip()}
    assert rules == listed


# ---- 5. run identity: the manifest does not know where the data folder is -----------------
def test_manifest_paths_follow_the_data_root(tmp_path):
    import shutil

    import yaml
    from conftest import ROOT
    from imagefolder_fixture import make_imagefolder

    from sure_ood.data import TRAIN_SPLITS, open_split, read_split_manifests, split_identity
    from sure_ood.io import InputError
    from sure_ood.stages.prepare_data import prepare

    bench = yaml.safe_load((ROOT / "config/imagenet_ssb_tiny.yaml").read_text())["benchmark"]
    bench["data_root"] = str(make_imagefolder(tmp_path / "a", n_train=4, n_val=2, n_ood=2))
    prepare(bench, tmp_path / "prep", 1)
    splits = ["train", "val", "id_test", *bench["ood_splits"]]
    m = read_split_manifests(tmp_path / "prep", splits)
    assert not any(p.startswith("/") for p in m["path"])  # relative to data_root
    shutil.move(tmp_path / "a", tmp_path / "b")
    moved = {**bench, "data_root": str(tmp_path / "b")}
    x, label, _ = open_split(moved, m, "train")[0]
    assert x.shape[0] == 3 and label >= 0
    # the same images elsewhere are the same training data
    prepare(moved, tmp_path / "prep_b", 1)
    m_b = read_split_manifests(tmp_path / "prep_b", splits)
    assert m_b.equals(m)
    assert split_identity(m_b, TRAIN_SPLITS) == split_identity(m, TRAIN_SPLITS) != ""
    with pytest.raises(InputError, match=r"^benchmark\.data_root: not set"):
        open_split({k: v for k, v in bench.items() if k != "data_root"}, m, "train")
