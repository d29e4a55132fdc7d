"""The imagefolder source: local ImageNet-like trees, file lists, SSB split files, bad files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from imagefolder_fixture import EASY, HARD, KNOWN, make_imagefolder

from sure_ood.data import make_transform, open_split, read_split_manifests, resolve_transform_config
from sure_ood.io import InputError
from sure_ood.stages.prepare_data import prepare

OOD = ["ssb_easy", "ssb_hard"]


@pytest.fixture(scope="session")
def inet(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("inet") / "data")


def _bench(root, **kw):
    b = {
        "name": "inet_test",
        "source": "imagefolder",
        "seed": 0,
        "data_root": str(root),
        "ssb_splits": "imagenet_ssb_splits.json",
        "ood_splits": OOD,
        "val_fraction": 0.1,
        "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "test_transform": {"crop_ratio": 0.875, "interpolation": "bilinear"},
    }
    b.update(kw)
    return b


def _manifest(data_dir):
    """Every prepared split's manifest as one table (ID splits first)."""
    return read_split_manifests(data_dir, ["train", "val", "id_test", *OOD])


def _copy(inet, tmp_path):
    return shutil.copytree(inet, tmp_path / "data")


def test_prepare_counts_splits_and_prior(inet, tmp_path):
    summary = prepare(_bench(inet), tmp_path, workers=2)
    assert summary["known_classes"] == sorted(KNOWN)
    assert summary["ood_classes"] == {"ssb_easy": EASY, "ssb_hard": HARD}
    # 40 train images per class, 10 % (4) held out for validation; val/ is the ID test set
    assert summary["counts"] == {
        "train": 144,
        "val": 16,
        "id_test": 40,
        "ssb_easy": 20,
        "ssb_hard": 20,
    }
    assert summary["skipped"] == []
    m = _manifest(tmp_path)
    assert {"split", "source_index", "path", "class_id", "label"} <= set(m.columns)
    # every image once, every path from its split's folder, relative to data_root (so the
    # manifest does not change when the data folder moves)
    assert m["path"].is_unique and len(m) == 240
    for split, folder in [("train", "train"), ("val", "train"), ("id_test", "val")]:
        rows = m[m.split == split]
        assert all(p.startswith(f"{folder}/") for p in rows["path"])
        # label = position of the wnid in the sorted known classes
        assert (rows["label"] == rows["class_id"].map(sorted(KNOWN).index)).all()
        assert (rows.groupby("class_id").size() == rows.groupby("class_id").size().iloc[0]).all()
    for split in OOD:
        rows = m[m.split == split]
        assert (rows["label"] == -1).all() and all(p.startswith(f"{split}/") for p in rows["path"])
    # model selection never sees the test set: val comes from train, disjoint from it
    val, train = set(m[m.split == "val"].path), set(m[m.split == "train"].path)
    assert not val & train and not val & set(m[m.split == "id_test"].path)
    # the held-out share is seeded: same split again
    prepare(_bench(inet), tmp_path / "again", workers=1)
    m2 = _manifest(tmp_path / "again")
    assert set(m2[m2.split == "val"].path) == val
    prior = np.load(tmp_path / "prior.npy")
    train_labels = m[m.split == "train"].label.to_numpy()
    np.testing.assert_allclose(prior, np.bincount(train_labels, minlength=4) / len(train_labels))


def test_parts_one_by_one_and_an_added_ood_split(inet, tmp_path):
    """The workflow's way: the ID part, then each OOD split on its own, write what one run
    writes; an OOD split's rows are those of its folder (labels -1, source_index numbering its
    own rows). Adding an OOD split later and preparing only it leaves every other file as it
    was, bytes and modification time."""
    from imagefolder_fixture import MEDIUM, add_ood_split

    whole = tmp_path / "whole"
    prepare(_bench(inet), whole, workers=1)
    parts = tmp_path / "parts"
    for part in ("id", *OOD):
        prepare(_bench(inet), parts, workers=1, part=part)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(parts.rglob("*.*"))}
    assert {p.relative_to(parts): b for p, (b, _) in before.items()} == {
        p.relative_to(whole): p.read_bytes() for p in sorted(whole.rglob("*.*"))
    }
    for split, classes in (("ssb_easy", EASY), ("ssb_hard", HARD)):
        m = read_split_manifests(parts, [split])
        assert sorted(set(m.class_id)) == classes and (m.label == -1).all()
        assert m.source_index.tolist() == list(range(len(m)))
        summary = json.loads((parts / f"split~{split}/summary.json").read_text())
        assert summary["classes"] == classes and summary["counts"] == {split: len(m)}

    data = _copy(inet, tmp_path)
    medium = add_ood_split(data)
    grown = _bench(data, ood_splits=[*OOD, medium])
    summary = prepare(grown, parts, workers=1, part=medium)
    assert summary == {
        "benchmark": "inet_test", "split": medium, "classes": MEDIUM,
        "counts": {medium: 10}, "skipped": [],
    }  # fmt: skip
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before}
    assert after == before
    m = read_split_manifests(parts, [medium])
    assert all(p.startswith(f"{medium}/") for p in m.path) and len(m) == 10


def test_open_split_yields_rgb_tensors_labels_and_indices(inet, tmp_path):
    from PIL import Image

    data = _copy(inet, tmp_path)
    gray = data / "val" / KNOWN[2] / "ILSVRC2012_val_00000000.png"
    Image.open(gray).convert("L").save(gray)  # a greyscale file: loaded as RGB
    prepare(_bench(data), tmp_path / "out", workers=1)
    m = _manifest(tmp_path / "out")
    cfg = resolve_transform_config(_bench(data))
    norm = cfg.pop("norm")
    ds = open_split(_bench(data), m, "id_test", make_transform("center", 16, norm, **cfg))
    rows = m[m.split == "id_test"].reset_index(drop=True)
    k = int(np.flatnonzero(rows.path == str(gray.relative_to(data)))[0])
    x, y, i = ds[k]
    assert x.shape == (3, 16, 16) and str(x.dtype) == "torch.float32"
    assert int(y) == 2 and i == k
    # the three channels of a greyscale image are equal after the shared normalisation
    assert np.allclose(x[0].numpy(), x[1].numpy()) and np.allclose(x[1].numpy(), x[2].numpy())
    # no transform: the raw pixels, against an independent PIL + numpy reference
    raw = open_split(_bench(data), m, "ssb_easy", None)[0][0]
    ref = np.asarray(Image.open(data / m[m.split == "ssb_easy"].path.iloc[0]).convert("RGB"))
    np.testing.assert_array_equal(raw.permute(1, 2, 0).numpy(), ref)


def test_missing_root_is_named(tmp_path):
    with pytest.raises(InputError, match="nowhere"):
        prepare(_bench(tmp_path / "nowhere"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_every_missing_class_folder_is_listed(inet, tmp_path):
    data = _copy(inet, tmp_path)
    shutil.rmtree(data / "train" / KNOWN[0])
    shutil.rmtree(data / "train" / KNOWN[3])
    shutil.rmtree(data / "ssb_hard" / HARD[1])
    with pytest.raises(InputError) as e:
        prepare(_bench(data), tmp_path / "out")
    msg = str(e.value)
    for wnid in (KNOWN[0], KNOWN[3], HARD[1]):
        assert wnid in msg
    assert "split train: 2 class folders missing" in msg and "split ssb_hard" in msg
    assert not (tmp_path / "out").exists()


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_image_is_named_and_nothing_is_written(inet, tmp_path):
    data = _copy(inet, tmp_path)
    bad = data / "ssb_easy" / EASY[0] / f"{EASY[0]}_3.png"
    _truncate(bad)
    with pytest.raises(InputError, match=str(bad)):
        prepare(_bench(data), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # header-only checks cannot see a cut-off pixel stream; loading the file names it too
    from sure_ood.imagefolder import load_image

    with pytest.raises(InputError, match=str(bad)):
        load_image(str(bad))


def test_skip_unreadable_records_the_skip_list(inet, tmp_path):
    data = _copy(inet, tmp_path)
    bad = data / "train" / KNOWN[1] / f"{KNOWN[1]}_7.png"
    _truncate(bad)
    (data / "val" / KNOWN[0] / "notes.png").write_text("not an image")
    summary = prepare(_bench(data, skip_unreadable=True), tmp_path / "out", workers=2)
    skipped = {s["path"]: s["split"] for s in summary["skipped"]}
    assert skipped == {str(bad): "train", str(data / "val" / KNOWN[0] / "notes.png"): "id_test"}
    classes = json.loads((tmp_path / "out/classes.json").read_text())
    assert classes["skipped"] == summary["skipped"]
    m = _manifest(tmp_path / "out")
    assert str(bad) not in set(m.path)
    assert summary["counts"]["train"] + summary["counts"]["val"] == 159
    assert summary["counts"]["id_test"] == 40


def test_split_from_a_file_list(inet, tmp_path):
    # ID test from a CSV of (relative path, class index) and OOD from a TXT of (path wnid)
    lines = ["path,label"]
    for k, wnid in enumerate(sorted(KNOWN)):
        lines += [f"val/{wnid}/ILSVRC2012_val_{i:08d}.png,{k}" for i in range(3)]
    (tmp_path / "id.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "easy.txt").write_text(
        "".join(f"{inet}/ssb_easy/{EASY[0]}/{EASY[0]}_{i}.png {EASY[0]}\n" for i in range(5))
    )
    bench = _bench(
        inet, splits={"id_test": str(tmp_path / "id.csv"), "ssb_easy": str(tmp_path / "easy.txt")}
    )
    summary = prepare(bench, tmp_path / "out", workers=1)
    assert summary["counts"]["id_test"] == 12 and summary["counts"]["ssb_easy"] == 5
    m = _manifest(tmp_path / "out")
    idt = m[m.split == "id_test"]
    assert (idt.label.to_numpy() == np.repeat(np.arange(4), 3)).all()
    assert (idt.class_id.to_numpy() == np.repeat(sorted(KNOWN), 3)).all()
    # a label that is not a class of the split is an error naming the file
    (tmp_path / "bad.txt").write_text(f"{inet}/ssb_easy/{EASY[0]}/{EASY[0]}_0.png {KNOWN[0]}\n")
    bench["splits"]["ssb_easy"] = str(tmp_path / "bad.txt")
    with pytest.raises(InputError, match="bad.txt"):
        prepare(bench, tmp_path / "out2", workers=1)


def test_transforms_come_from_timm_unless_overridden():
    import timm

    model = timm.create_model(
        "deit3_small_patch16_224", img_size=16, patch_size=4, depth=1, embed_dim=48, num_heads=2
    )
    ref = timm.data.resolve_data_config({}, model=model)
    got = resolve_transform_config({"name": "x"}, model)
    assert got["norm"].mean == tuple(ref["mean"]) and got["norm"].std == tuple(ref["std"])
    assert got["crop_ratio"] == ref["crop_pct"] == 0.9
    assert got["interpolation"] == ref["interpolation"] == "bicubic"
    # the winners' override (docs/method.md#test-time): bilinear, 0.875, ImageNet mean/std
    # from the config
    cfg = {
        "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "test_transform": {"crop_ratio": 0.875, "interpolation": "bilinear"},
    }
    got = resolve_transform_config(cfg, model)
    assert got["crop_ratio"] == 0.875 and got["interpolation"] == "bilinear"
    assert tuple(got["norm"].std) == (0.229, 0.224, 0.225)
    # a partial override keeps timm's other values
    got = resolve_transform_config({"test_transform": {"crop_ratio": 0.8}}, model)
    assert got["crop_ratio"] == 0.8 and got["interpolation"] == "bicubic"


def test_sharded_extraction_merges_to_the_unsharded_cache(inet, tmp_path):
    import torch

    from sure_ood.cache import load_cache
    from sure_ood.data import shard_range
    from sure_ood.models import build_model, model_spec, save_model
    from sure_ood.stages.extract import extract
    from sure_ood.stages.merge_features import merge

    assert [list(shard_range(7, i, 3)) for i in range(3)] == [[0, 1, 2], [3, 4], [5, 6]]
    bench = _bench(inet)
    prepare(bench, tmp_path / "data", workers=1)
    torch.manual_seed(0)
    spec = model_spec(
        {
            "arch": "deit3_small_patch16_224",
            "img_size": 16,
            "timm_kwargs": {"patch_size": 4, "depth": 1, "embed_dim": 48, "num_heads": 2},
        },
        4,
        {"head": "cosine", "feature_clip": 100.0},
    )
    save_model(tmp_path / "m.safetensors", build_model(spec), spec)
    args = (tmp_path / "m.safetensors", bench, tmp_path / "data", "ssb_hard", "five_crop_br")
    whole = extract(*args, tmp_path / "whole.npz", batch_size=8)
    shards = [tmp_path / f"s{i}.npz" for i in range(3)]
    for i, p in enumerate(shards):
        extract(*args, p, batch_size=8, shard=i, num_shards=3)
    assert [len(load_cache(p)) for p in shards] == [7, 7, 6]
    merged = merge(shards, tmp_path / "merged.npz")
    for key in ("logits", "features", "prenorm_features", "labels", "head_weight"):
        np.testing.assert_allclose(getattr(merged, key), getattr(whole, key), rtol=0, atol=1e-5)
    with pytest.raises(InputError, match="cannot fill"):
        extract(*args, tmp_path / "x.npz", shard=0, num_shards=21)
