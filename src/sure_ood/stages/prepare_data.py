"""Stage ``prepare_data``: split a benchmark and compute the class prior, in parts.

A job prepares one *part* (``--part``), so that every later job depends only on the splits it
reads and adding, removing or renaming an OOD split reruns nothing of the others:

- ``id``, the in-distribution part: ``split~train/``, ``split~val/`` and ``split~id_test/``
  ``manifest.parquet``, ``classes.json`` (known classes in sorted order = class index, the
  counts of these splits; for image-file sources the ``skipped`` unreadable files) and
  ``prior.npy`` (training label frequencies in sorted class order);
- an OOD split's name: its ``split~<name>/manifest.parquet`` and ``split~<name>/summary.json``
  (its classes, count and, for image-file sources, skipped files). It reads the known classes
  from the ``id`` part's ``classes.json`` (no OOD class may be known);
- ``all``: every part, as one run (hand runs and tests).

A manifest has one row per image: ``split``, ``source_index`` (the image's index in the array
source; for image files the row number in its part), ``class_id``, ``label`` (-1 for OOD); image
files add ``path``, relative to ``data_root`` where they lie under it.

Every check of the parts asked for runs before anything is written: a failed run leaves no
partial outputs.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from sure_ood.data import ID_PART, ID_SPLITS, manifest_path
from sure_ood.io import InputError, atomic_path, read_json, write_json

ALL_PARTS = "all"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", required=True, help="the benchmark config subtree as JSON")
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument(
        "--part",
        required=True,
        help=f"{ID_PART!r} (train, val, ID test, classes, prior), the name of one OOD split, "
        f"or {ALL_PARTS!r}",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="threads that check image files (default: all)"
    )


def _array_source(bench: dict, classes: list[int]) -> np.ndarray:
    """The class ids of a built-in source; every class of ``classes`` must have images."""
    from sure_ood.data import ARRAY_SOURCES, load_array_source

    if bench["source"] not in ARRAY_SOURCES:
        raise InputError(f"benchmark.source: unknown source {bench['source']!r}")
    _, class_ids = load_array_source(bench["source"])
    present = set(np.unique(class_ids).tolist())
    missing = [c for c in classes if c not in present]
    if missing:
        raise InputError(f"benchmark: classes {missing} have no images in {bench['source']!r}")
    return class_ids


def _array_frame(splits: dict, class_ids: np.ndarray, known: list[int]):
    import pandas as pd

    to_label = {c: i for i, c in enumerate(known)}
    frames = []
    for name, idx in splits.items():
        cid = class_ids[idx]
        label = np.array([to_label.get(int(c), -1) for c in cid], dtype=np.int64)
        frames.append(
            pd.DataFrame({"split": name, "source_index": idx, "class_id": cid, "label": label})
        )
    return pd.concat(frames, ignore_index=True)


def _prepare_arrays(bench: dict):
    """The in-distribution part of a built-in source (sure_ood.data.split_known)."""
    from sure_ood.data import split_known

    known = sorted(bench["known_classes"])
    class_ids = _array_source(bench, known)
    splits = split_known(class_ids, known, bench["split"], bench["seed"])
    summary = {
        "benchmark": bench["name"],
        "known_classes": known,
        "num_classes": len(known),
        "counts": {k: int(len(v)) for k, v in splits.items()},
    }
    return _array_frame(splits, class_ids, known), summary


def _prepare_arrays_ood(bench: dict, split: str, known: list[int]):
    """The OOD part of a built-in source: ``ood_fraction`` of every unknown class
    (sure_ood.data.split_unknown); its one OOD split is ``ood_test``."""
    from sure_ood.data import split_unknown

    unknown = sorted(bench["unknown_classes"])
    if set(known) & set(unknown):
        raise InputError(
            f"benchmark.known_classes and benchmark.unknown_classes overlap: "
            f"{sorted(set(known) & set(unknown))}"
        )
    if split != "ood_test":
        raise InputError(
            f"benchmark.ood_splits: {split!r}: a built-in source has one OOD split, 'ood_test' "
            "(its unknown classes)"
        )
    class_ids = _array_source(bench, unknown)
    idx = split_unknown(class_ids, unknown, bench["ood_fraction"], bench["seed"])
    summary = {
        "benchmark": bench["name"],
        "split": split,
        "classes": unknown,
        "counts": {split: int(len(idx))},
    }
    return _array_frame({split: idx}, class_ids, known), summary


def relative_to_root(paths: list[str], bench: dict) -> list[str]:
    """Image paths under ``data_root`` as paths relative to it (others stay absolute), so the
    manifest, and every job that reads it, does not change when the data folder moves; the
    readers resolve them against the ``data_root`` they are given (sure_ood.data.open_split)."""
    from sure_ood.imagefolder import data_root

    root = data_root(bench)
    if root is None:
        return paths
    root = str(root.absolute())
    return [os.path.relpath(p, root) if p.startswith(root + os.sep) else p for p in paths]


def _part(bench: dict, part: str, known: list | None, workers: int):
    """``(manifest, summary)`` of one part; ``known``: the known classes (OOD parts)."""
    if bench["source"] == "imagefolder":
        from sure_ood.imagefolder import prepare_imagefolder, prepare_imagefolder_ood

        if part == ID_PART:
            manifest, summary = prepare_imagefolder(bench, workers)
        else:
            manifest, summary = prepare_imagefolder_ood(bench, part, known, workers)
        manifest["path"] = relative_to_root(manifest["path"].tolist(), bench)
        return manifest, summary
    if part == ID_PART:
        return _prepare_arrays(bench)
    return _prepare_arrays_ood(bench, part, known)


def _known_classes(out_dir: Path) -> list:
    """The known classes of the in-distribution part already prepared in ``out_dir``."""
    path = out_dir / "classes.json"
    if not path.exists():
        raise InputError(f"{path}: not found: prepare the in-distribution part first (--part id)")
    return read_json(path)["known_classes"]


def _write(out_dir: Path, part: str, manifest, summary: dict) -> None:
    """One part's files: each split's manifest, then classes.json and prior.npy (ID part) or
    the split's summary.json."""
    from sure_ood.data import class_prior

    splits = ID_SPLITS if part == ID_PART else (part,)
    for split in splits:
        path = manifest_path(out_dir, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            manifest[manifest["split"] == split].to_parquet(tmp, index=False)
    if part != ID_PART:
        write_json(manifest_path(out_dir, part).parent / "summary.json", summary)
        return
    train_labels = manifest.loc[manifest["split"] == "train", "label"].to_numpy()
    with atomic_path(out_dir / "prior.npy") as tmp:
        np.save(tmp, class_prior(train_labels, summary["num_classes"]))
    write_json(out_dir / "classes.json", summary)


def prepare(bench: dict, out_dir: Path, workers: int | None = None, part: str = ALL_PARTS) -> dict:
    """Prepare ``part`` (``id``, an OOD split, or ``all``) into ``out_dir``; return its summary
    (``all``: the ID summary with every split's counts, skipped files, the OOD splits' classes
    ``ood_classes`` and their union ``unknown_classes``). Every part asked for is checked,
    and every problem reported in one error, before any file is written. A hand-written
    ``bench`` gets the schema's defaults (:func:`sure_ood.defaults.with_defaults`)."""
    from sure_ood.defaults import with_defaults

    bench = with_defaults("benchmark", bench)
    ood_splits = list(bench["ood_splits"])
    if part not in (ALL_PARTS, ID_PART, *ood_splits):
        raise InputError(
            f"--part {part!r}: not {ALL_PARTS!r}, {ID_PART!r} nor an OOD split of "
            f"benchmark.ood_splits {ood_splits}"
        )
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    parts = [ID_PART, *ood_splits] if part == ALL_PARTS else [part]
    done, errors = {}, []
    known = None if ID_PART in parts else _known_classes(out_dir)
    for p in parts:
        try:
            done[p] = _part(bench, p, known if known is not None else [], workers)
        except InputError as e:
            if str(e) not in errors:
                errors.append(str(e))
            continue
        if p == ID_PART:
            known = done[p][1]["known_classes"]
    if errors:
        raise InputError("; ".join(errors))
    for p, (manifest, summary) in done.items():
        _write(out_dir, p, manifest, summary)
    if part != ALL_PARTS:
        return done[part][1]
    return _merged(bench, [done[p][1] for p in parts])


def _merged(bench: dict, summaries: list[dict]) -> dict:
    """The summary of every part as one (the ID part's, first, with the OOD splits added)."""
    merged = dict(summaries[0])
    ood = summaries[1:]
    merged["counts"] = {k: v for s in summaries for k, v in s["counts"].items()}
    merged["unknown_classes"] = sorted({c for s in ood for c in s["classes"]})
    if "skipped" in merged:
        merged["skipped"] = [x for s in summaries for x in s["skipped"]]
    if bench["source"] == "imagefolder":
        merged["ood_classes"] = {s["split"]: s["classes"] for s in ood}
    return merged


def run(args: argparse.Namespace) -> int:
    bench = json.loads(args.benchmark)
    summary = prepare(bench, args.out_dir, args.workers, args.part)
    print(json.dumps(summary["counts"]))
    for s in summary.get("skipped", []):
        print(f"skipped unreadable image ({s['split']}): {s['path']}: {s['error']}")
    return 0
