"""Stage ``prepare_data``: split a benchmark and compute the class prior.

Outputs (in ``--out-dir``): ``manifest.parquet`` (one row per image: ``split``,
``source_index``, ``class_id``, ``label``; image-file sources add ``path``), ``classes.json``
(known classes in sorted order = class index, unknown classes, counts per split; for
image-file sources also the classes of each OOD split and the ``skipped`` unreadable files) and
``prior.npy`` (training label frequencies in sorted class order).

Every check runs before anything is written: a failed run leaves no partial outputs.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from sure_ood.io import InputError, atomic_path, write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", required=True, help="the benchmark config subtree as JSON")
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument(
        "--workers", type=int, default=None, help="threads that check image files (default: all)"
    )


def _prepare_arrays(bench: dict):
    import pandas as pd

    from sure_ood.data import ARRAY_SOURCES, load_array_source, split_open_set

    known = sorted(bench["known_classes"])
    unknown = sorted(bench["unknown_classes"])
    if set(known) & set(unknown):
        raise InputError(
            f"benchmark.known_classes and benchmark.unknown_classes overlap: "
            f"{sorted(set(known) & set(unknown))}"
        )
    if bench["source"] not in ARRAY_SOURCES:
        raise InputError(f"benchmark.source: unknown source {bench['source']!r}")
    _, class_ids = load_array_source(bench["source"])
    present = set(np.unique(class_ids).tolist())
    missing = [c for c in known + unknown if c not in present]
    if missing:
        raise InputError(f"benchmark: classes {missing} have no images in {bench['source']!r}")
    splits = split_open_set(
        class_ids, known, unknown, bench["split"], bench.get("ood_fraction", 1.0), bench["seed"]
    )
    to_label = {c: i for i, c in enumerate(known)}
    frames = []
    for name, idx in splits.items():
        cid = class_ids[idx]
        label = np.array([to_label.get(int(c), -1) for c in cid], dtype=np.int64)
        frames.append(
            pd.DataFrame({"split": name, "source_index": idx, "class_id": cid, "label": label})
        )
    manifest = pd.concat(frames, ignore_index=True)
    summary = {
        "benchmark": bench["name"],
        "known_classes": known,
        "unknown_classes": unknown,
        "num_classes": len(known),
        "counts": {k: int(len(v)) for k, v in splits.items()},
    }
    return manifest, summary


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


def prepare(bench: dict, out_dir: Path, workers: int | None = None) -> dict:
    """Split, write the manifest, classes and prior; return the summary."""
    from sure_ood.data import class_prior

    if bench["source"] == "imagefolder":
        from sure_ood.imagefolder import prepare_imagefolder

        if workers is None:
            workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        manifest, summary = prepare_imagefolder(bench, workers)
        manifest["path"] = relative_to_root(manifest["path"].tolist(), bench)
    else:
        manifest, summary = _prepare_arrays(bench)
    train_labels = manifest.loc[manifest["split"] == "train", "label"].to_numpy()
    prior = class_prior(train_labels, summary["num_classes"])
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "manifest.parquet") as tmp:
        manifest.to_parquet(tmp, index=False)
    with atomic_path(out_dir / "prior.npy") as tmp:
        np.save(tmp, prior)
    write_json(out_dir / "classes.json", summary)
    return summary


def run(args: argparse.Namespace) -> int:
    bench = json.loads(args.benchmark)
    summary = prepare(bench, args.out_dir, args.workers)
    print(json.dumps(summary["counts"]))
    for s in summary.get("skipped", []):
        print(f"skipped unreadable image ({s['split']}): {s['path']}: {s['error']}")
    return 0
