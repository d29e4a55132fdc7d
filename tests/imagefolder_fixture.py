"""A tiny ImageNet + SSB look-alike on disk: class folders of small PNGs with WordNet-like ids.

Layout (as ``benchmark.source: imagefolder`` expects)::

    root/train/<wnid>/*.png  root/val/<wnid>/*.png  root/ssb_easy/<wnid>/*.png
    root/ssb_hard/<wnid>/*.png  root/imagenet_ssb_splits.json

Each known class is a colour with noise (learnable in an epoch or two); unknown classes are other
colours. Image sizes vary, so the resize / crop transforms are exercised.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

KNOWN = ["n01440764", "n01443537", "n01484850", "n01491361"]
EASY = ["n09999001", "n09999002"]
HARD = ["n09999101", "n09999102"]
COLOURS = {
    "n01440764": (220, 40, 40),
    "n01443537": (40, 200, 40),
    "n01484850": (40, 40, 220),
    "n01491361": (220, 220, 40),
    "n09999001": (128, 128, 128),
    "n09999002": (20, 20, 20),
    "n09999101": (200, 60, 200),
    "n09999102": (60, 200, 200),
}


def _write(path: Path, colour, rng: np.random.Generator) -> None:
    from PIL import Image

    h, w = int(rng.integers(18, 30)), int(rng.integers(18, 30))
    base = np.array(colour, dtype=np.float64)[None, None, :]
    img = base + rng.normal(0, 35, size=(h, w, 3))
    # a brighter square in a random place (texture, and a reason to crop)
    y, x = int(rng.integers(0, h - 6)), int(rng.integers(0, w - 6))
    img[y : y + 6, x : x + 6] += 60
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)


def make_imagefolder(
    root: Path, n_train: int = 40, n_val: int = 10, n_ood: int = 10, seed: int = 0
) -> Path:
    """Write the fixture under ``root`` (about 260 images); returns ``root``."""
    rng = np.random.default_rng(seed)
    for split, classes, n in (
        ("train", KNOWN, n_train),
        ("val", KNOWN, n_val),
        ("ssb_easy", EASY, n_ood),
        ("ssb_hard", HARD, n_ood),
    ):
        for c in classes:
            for i in range(n):
                stem = f"ILSVRC2012_val_{i:08d}" if split == "val" else f"{c}_{i}"
                _write(root / split / c / f"{stem}.png", COLOURS[c], rng)
    (root / "imagenet_ssb_splits.json").write_text(
        json.dumps({"known_classes": KNOWN, "unknown_classes": {"Easy": EASY, "Hard": HARD}})
    )
    return root


# A third SSB-like difficulty: classes no other split has, for adding an OOD split to a run.
MEDIUM = ["n09999201", "n09999202"]
COLOURS.update({"n09999201": (250, 140, 0), "n09999202": (0, 90, 60)})


def add_ood_split(root: Path, key: str = "Medium", classes=tuple(MEDIUM), n: int = 5) -> str:
    """Add OOD split ``ssb_<key>`` to a fixture: its class folders and its class list in the
    SSB split file; returns the split's name."""
    rng = np.random.default_rng(len(classes) + n)
    split = f"ssb_{key.lower()}"
    for c in classes:
        for i in range(n):
            _write(root / split / c / f"{c}_{i}.png", COLOURS[c], rng)
    path = root / "imagenet_ssb_splits.json"
    splits = json.loads(path.read_text())
    splits["unknown_classes"][key] = list(classes)
    path.write_text(json.dumps(splits))
    return split
