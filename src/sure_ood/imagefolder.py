"""Image files on local disk: ImageFolder trees, file lists, SSB split files (never downloaded).

Benchmark source ``imagefolder`` (``benchmark.source: imagefolder``). The standard layout under
``benchmark.data_root`` (or the top-level ``data_root`` config key, which overrides it)::

    <data_root>/train/<class id>/*.JPEG      known classes, training images
    <data_root>/val/<class id>/*.JPEG        known classes, ID test set (ImageNet-1K val)
    <data_root>/ssb_easy/<class id>/*.JPEG   unknown classes of SSB Easy (OOD split ssb_easy)
    <data_root>/ssb_hard/<class id>/*.JPEG   unknown classes of SSB Hard (OOD split ssb_hard)

Split names: ``train`` (minus the held-out ``val``), ``val`` (a seeded, stratified
``val_fraction`` of train, used for model selection: never the test set,
docs/method.md#swa), ``id_test`` and every name of ``benchmark.ood_splits``.
``benchmark.splits.<split>`` overrides where a split comes from: a directory (a class-folder tree)
or a file list (``.csv`` / ``.txt``, one
``path,label`` per line, comma or whitespace separated, optional ``path,label`` header; label =
a class id, or for ID splits an integer class index in sorted order). Relative paths are taken
from ``data_root`` (from the list file's folder when there is no data root).

Classes: ``benchmark.ssb_splits`` names a JSON file like SSB's ``imagenet_ssb_splits.json``
(``known_classes``: [wnids], ``unknown_classes``: {``Easy``: [...], ``Hard``: [...]}); OOD split
``ssb_easy`` takes the ``Easy`` classes, ``ssb_hard`` the ``Hard`` ones (the name after
``ssb_``, case-insensitive). Without that file, ``benchmark.known_classes`` (else every class
folder of train) and ``benchmark.unknown_classes`` (else every folder of an OOD tree) are used.
Known classes are sorted; class index = position (= torchvision ImageFolder order).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from sure_ood.defaults import with_defaults
from sure_ood.io import InputError, read_json

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_DIRS = {"train": "train", "id_test": "val"}
VERIFY_MODES = ("decode", "header", "none")


# ---- locating files -----------------------------------------------------------------------
def data_root(bench: dict) -> Path | None:
    root = bench.get("data_root")
    return Path(root).expanduser() if root else None


def resolve(path: str | os.PathLike, base: Path | None) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    return p.absolute()


def is_file_list(path: Path) -> bool:
    return path.suffix.lower() in (".csv", ".txt")


def split_location(bench: dict, split: str) -> Path:
    """Where a split's images come from (a class-folder tree or a file list)."""
    root = data_root(bench)
    override = (bench.get("splits") or {}).get(split)
    if override:
        return resolve(override, root)
    if root is None:
        raise InputError(
            f"benchmark.data_root: not set, and benchmark.splits.{split} does not name the "
            f"{split!r} images (pass --config data_root=/path/to/imagenet)"
        )
    return resolve(DEFAULT_DIRS.get(split, split), root)


def scan_tree(
    root: Path, classes: Sequence[str] | None
) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """Image files of a class-folder tree: ``([(path, class id)], missing, empty)``.

    ``classes`` = the class folders to read (``None`` = every folder). ``missing`` lists the
    wanted classes with no folder, ``empty`` those whose folder holds no image file. Files are in
    ImageFolder order (sorted class, then sorted file name); folders not in ``classes`` are
    ignored (an SSB tree may hold both Easy and Hard classes).
    """
    if not root.is_dir():
        raise InputError(f"{root}: directory not found")
    present = sorted(e.name for e in os.scandir(root) if e.is_dir())
    wanted = present if classes is None else sorted(classes)
    present_set = set(present)
    missing = [c for c in wanted if c not in present_set]
    entries: list[tuple[str, str]] = []
    empty: list[str] = []
    for c in wanted:
        if c not in present_set:
            continue
        files = []
        for dirpath, _, names in os.walk(root / c, followlinks=True):
            files += [os.path.join(dirpath, n) for n in names if n.lower().endswith(IMG_EXTENSIONS)]
        if not files:
            empty.append(c)
        entries += [(f, c) for f in sorted(files)]
    return entries, missing, empty


def read_file_list(
    path: Path, base: Path | None, known: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """``[(absolute path, class id)]`` of a ``path,label`` list (CSV or whitespace TXT).

    An integer label that is not itself a class id is a class index into ``known``.
    """
    if not path.is_file():
        raise InputError(f"{path}: file list not found")
    base = base if base is not None else path.parent
    known_set = set(known or [])
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in (line.split(",") if "," in line else line.split())]
        if len(parts) < 2:
            raise InputError(f"{path}:{lineno}: expected 'path,label', got {line!r}")
        p, label = parts[0], parts[1]
        if lineno == 1 and p.lower() == "path":
            continue  # header
        if label not in known_set and known and label.lstrip("-").isdigit():
            k = int(label)
            if not 0 <= k < len(known):
                raise InputError(f"{path}:{lineno}: class index {k} outside 0..{len(known) - 1}")
            label = known[k]
        out.append((str(resolve(p, base)), label))
    if not out:
        raise InputError(f"{path}: the file list holds no image")
    return out


def load_ssb_splits(path: Path) -> dict:
    """``{"known": [...], "unknown": {"easy": [...], "hard": [...]}}`` of an SSB split file."""
    d = read_json(path)
    if not isinstance(d, dict) or "known_classes" not in d or "unknown_classes" not in d:
        raise InputError(
            f"{path}: an SSB split file needs keys 'known_classes' and "
            f"'unknown_classes' ({{'Easy': [...], 'Hard': [...]}})"
        )
    unknown = d["unknown_classes"]
    if not isinstance(unknown, dict):
        raise InputError(f"{path}: 'unknown_classes' must map a difficulty to class ids")
    return {
        "known": sorted(str(c) for c in d["known_classes"]),
        "unknown": {str(k).lower(): sorted(str(c) for c in v) for k, v in unknown.items()},
    }


# ---- reading images -----------------------------------------------------------------------
def load_image(path: str):
    """An RGB image file as a uint8 tensor [3, H, W]; the error names the file."""
    import torch
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except Exception as e:  # noqa: BLE001 - every decoder error becomes one clear message
        raise InputError(f"{path}: unreadable image ({type(e).__name__}: {e})") from e
    arr = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def check_image(path: str, mode: str = "decode") -> str | None:
    """``None`` if the file reads, else the reason. ``decode`` decodes every pixel (catches
    truncated files); ``header`` only parses the header and checks the structure (PIL
    ``verify``)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if mode == "header":
                im.verify()
            else:
                if im.format == "JPEG":
                    im.draft("RGB", (64, 64))  # reduced-scale decode: still reads every scan
                im.load()
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    return None


def check_images(paths: Sequence[str], mode: str = "decode", workers: int = 1) -> dict[str, str]:
    """``{path: reason}`` of every unreadable file (decoding runs in a thread pool)."""
    if mode == "none":
        return {}
    if mode not in VERIFY_MODES:
        raise InputError(f"benchmark.verify_images: {mode!r} is not one of {VERIFY_MODES}")
    from sure_ood.progress import track

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        reasons = pool.map(lambda p: check_image(p, mode), paths, chunksize=64)
        reasons = track(reasons, len(paths), f"prepare_data: check images ({mode})")
        return {p: r for p, r in zip(paths, reasons, strict=True) if r is not None}


class ImageFileDataset:
    """Image files with labels, like :class:`sure_ood.data.ArrayDataset`.

    ``__getitem__`` returns ``(transform(uint8 RGB tensor [3, H, W]), label, index)``.
    """

    def __init__(self, paths: Sequence[str], labels: np.ndarray, transform=None) -> None:
        import torch

        self.paths = list(paths)
        self.labels = torch.from_numpy(np.array(labels, dtype=np.int64))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        x = load_image(self.paths[i])
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i], i


# ---- prepare_data -------------------------------------------------------------------------
def _classes(bench: dict, ood_splits: Sequence[str]) -> tuple[list[str] | None, dict]:
    """Known classes (None = all train folders) and the class list of each OOD split."""
    ssb = bench.get("ssb_splits")
    if ssb:
        if bench.get("known_classes") or bench.get("unknown_classes"):
            raise InputError(
                "benchmark: give either ssb_splits or known_classes/unknown_classes, not both"
            )
        path = resolve(ssb, data_root(bench))
        s = load_ssb_splits(path)
        ood = {}
        for split in ood_splits:
            key = split.removeprefix("ssb_").lower()
            if key not in s["unknown"]:
                raise InputError(
                    f"benchmark.ood_splits: {split!r} has no class list in {path} "
                    f"(unknown_classes has {sorted(s['unknown'])}; name OOD splits ssb_<key>)"
                )
            ood[split] = s["unknown"][key]
        return s["known"], ood
    known = bench.get("known_classes")
    known = sorted(str(c) for c in known) if known else None
    unknown = bench.get("unknown_classes")
    unknown = sorted(str(c) for c in unknown) if unknown else None
    return known, {s: unknown for s in ood_splits}


def _split_entries(
    bench: dict, split: str, classes: Sequence[str] | None, known: Sequence[str] | None, problems
):
    loc = split_location(bench, split)
    if is_file_list(loc):
        try:
            entries = read_file_list(loc, data_root(bench), known)
        except InputError as e:
            problems.append(f"split {split}: {e}")
            return []
        if classes is not None:
            allowed = set(classes)
            bad = sorted({c for _, c in entries if c not in allowed})
            if bad:
                problems.append(
                    f"split {split}: {loc} has labels outside the split's classes: {', '.join(bad)}"
                )
        return entries
    if not loc.is_dir():
        problems.append(f"split {split}: directory {loc} not found")
        return []
    entries, missing, empty = scan_tree(loc, classes)
    if missing:
        problems.append(
            f"split {split}: {len(missing)} class folders missing in {loc}: {', '.join(missing)}"
        )
    if empty:
        problems.append(
            f"split {split}: {len(empty)} class folders without images in {loc}: {', '.join(empty)}"
        )
    return entries


def holdout(class_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a seeded, per-class held-out share (at least one image of every class
    with two or more images, when ``fraction > 0``)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(class_ids), dtype=bool)
    if fraction <= 0:
        return mask
    for c in np.unique(class_ids):
        idx = np.flatnonzero(class_ids == c)
        k = int(round(fraction * len(idx)))
        if k == 0 and len(idx) >= 2:
            k = 1
        k = min(k, len(idx) - 1)
        if k > 0:
            mask[rng.choice(idx, size=k, replace=False)] = True
    return mask


def _check_root(bench: dict) -> None:
    root = data_root(bench)
    if root is not None and not root.is_dir():
        raise InputError(f"benchmark.data_root: {root} is not a directory")


def _checked(bench: dict, per_split: dict, workers: int) -> dict[str, str]:
    """``{path: reason}`` of the unreadable files of ``per_split``; an error listing them all
    unless ``skip_unreadable``."""
    paths = [p for entries in per_split.values() for p, _ in entries]
    bad = check_images(paths, bench["verify_images"], workers)
    if bad and not bench["skip_unreadable"]:
        listing = "; ".join(f"{p} ({r})" for p, r in sorted(bad.items()))
        raise InputError(
            f"{len(bad)} unreadable image files (set benchmark.skip_unreadable: true to leave "
            f"them out): {listing}"
        )
    return bad


def _frame(split: str, entries, bad: dict, label):
    """The manifest rows of one split (unreadable files left out) and the skipped files."""
    import pandas as pd

    keep = [(p, c) for p, c in entries if p not in bad]
    skipped = [{"split": split, "path": p, "error": bad[p]} for p, c in entries if p in bad]
    frame = pd.DataFrame(
        {
            "split": split,
            "path": [p for p, _ in keep],
            "class_id": [c for _, c in keep],
            "label": np.array([label(c) for _, c in keep], dtype=np.int64),
        }
    )
    return frame, skipped


def _numbered(frames):
    """The frames as one manifest, ``source_index`` numbering its rows."""
    import pandas as pd

    manifest = pd.concat(frames, ignore_index=True)
    manifest.insert(1, "source_index", np.arange(len(manifest), dtype=np.int64))
    return manifest


def prepare_imagefolder(bench: dict, workers: int = 1):
    """Scan, check and split the in-distribution part of an imagefolder benchmark (``train``,
    ``val``, ``id_test``); ``(manifest DataFrame, summary)``.

    Every problem of the data (missing root, every missing class folder of every split,
    unreadable files) is collected and raised in one :class:`InputError` before anything is
    written. With ``skip_unreadable`` the unreadable files are left out and listed in the
    summary (``skipped``) instead. ``source_index`` numbers the part's rows. A hand-written
    ``bench`` gets the schema's defaults (:func:`sure_ood.defaults.with_defaults`).
    """
    bench = with_defaults("benchmark", bench)
    _check_root(bench)
    known, _ = _classes(bench, [])
    problems: list[str] = []
    train = _split_entries(bench, "train", known, known, problems)
    if known is None:
        known = sorted({c for _, c in train})
    per_split = {"train": train}
    if (bench.get("splits") or {}).get("val"):
        per_split["val"] = _split_entries(bench, "val", known, known, problems)
    per_split["id_test"] = _split_entries(bench, "id_test", known, known, problems)
    if problems:
        raise InputError("imagefolder benchmark: " + "; ".join(problems))
    for s in ("train", "id_test"):
        if not per_split[s]:
            raise InputError(f"split {s}: no image found")
    bad = _checked(bench, per_split, workers)

    to_label = {c: i for i, c in enumerate(known)}
    frames = []
    skipped = []
    for split, entries in per_split.items():
        frame, skip = _frame(split, entries, bad, to_label.__getitem__)
        skipped += skip
        if split == "train" and "val" not in per_split:
            val = holdout(frame["class_id"].to_numpy(), float(bench["val_fraction"]), bench["seed"])
            frames += [frame[~val], frame[val].assign(split="val")]
        else:
            frames.append(frame)
    manifest = _numbered(frames)
    for s in ("train", "val"):
        if (manifest["split"] == s).sum() == 0:
            raise InputError(f"split {s}: no image left (val_fraction, skipped files)")
    counts = manifest["split"].value_counts()
    summary = {
        "benchmark": bench["name"],
        "known_classes": known,
        "num_classes": len(known),
        "counts": {s: int(counts.get(s, 0)) for s in ("train", "val", "id_test")},
        "skipped": skipped,
    }
    return manifest, summary


def prepare_imagefolder_ood(bench: dict, split: str, known: Sequence[str], workers: int = 1):
    """Scan, check and list one OOD split of an imagefolder benchmark (its own part:
    ``source_index`` numbers its rows, labels are -1); ``(manifest DataFrame, summary)``.
    ``known``: the in-distribution classes (no OOD class may be one of them)."""
    bench = with_defaults("benchmark", bench)
    _check_root(bench)
    _, ood_classes = _classes(bench, [split])
    problems: list[str] = []
    entries = _split_entries(bench, split, ood_classes[split], None, problems)
    if problems:
        raise InputError("imagefolder benchmark: " + "; ".join(problems))
    classes = sorted({c for _, c in entries})
    overlap = sorted(set(known) & set(classes))
    if overlap:
        raise InputError(f"benchmark: known and unknown classes overlap: {overlap}")
    bad = _checked(bench, {split: entries}, workers)
    frame, skipped = _frame(split, entries, bad, lambda c: -1)
    summary = {
        "benchmark": bench["name"],
        "split": split,
        "classes": classes,
        "counts": {split: len(frame)},
        "skipped": skipped,
    }
    return _numbered([frame]), summary
