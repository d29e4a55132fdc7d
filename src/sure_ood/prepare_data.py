"""Stage ``prepare_data``: split a benchmark and compute the class prior.

Outputs (in ``--out-dir``): ``manifest.parquet`` (one row per image: ``split``,
``source_index``, ``class_id``, ``label``), ``classes.json`` (known classes in sorted order =
class index, unknown classes, counts per split) and ``prior.npy`` (training label frequencies in
sorted class order).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sure_ood.io import InputError, atomic_path, write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", required=True, help="the benchmark config subtree as JSON")
    p.add_argument("--out-dir", required=True, type=Path)


def prepare(bench: dict, out_dir: Path) -> dict:
    """Split, write the manifest, classes and prior; return the summary."""
    import pandas as pd

    from sure_ood.data import ARRAY_SOURCES, class_prior, load_array_source, split_open_set

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
    train_labels = manifest.loc[manifest["split"] == "train", "label"].to_numpy()
    prior = class_prior(train_labels, len(known))
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "manifest.parquet") as tmp:
        manifest.to_parquet(tmp, index=False)
    with atomic_path(out_dir / "prior.npy") as tmp:
        np.save(tmp, prior)
    summary = {
        "benchmark": bench["name"],
        "known_classes": known,
        "unknown_classes": unknown,
        "num_classes": len(known),
        "counts": {k: int(len(v)) for k, v in splits.items()},
    }
    write_json(out_dir / "classes.json", summary)
    return summary


def run(args: argparse.Namespace) -> int:
    bench = json.loads(args.benchmark)
    summary = prepare(bench, args.out_dir)
    print(json.dumps(summary["counts"]))
    return 0
