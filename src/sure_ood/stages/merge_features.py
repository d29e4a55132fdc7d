"""Stage ``merge_features``: concatenate the shards of one split's feature cache, in order.

``sure-ood extract --shard i --num-shards N`` writes shard ``i`` (contiguous rows of the
split); this stage checks that every shard comes from the same test model (identical head
parameters) and writes the split's cache exactly as one unsharded extraction would.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sure_ood.io import InputError

PER_IMAGE = ("logits", "features", "labels", "prenorm_features")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shards", nargs="+", required=True, type=Path, help="shard caches, in order")
    p.add_argument("--out", required=True, type=Path)


def merge(shards: Sequence[Path], out: Path):
    from sure_ood.cache import FeatureCache, load_cache, save_cache

    caches = [load_cache(p) for p in shards]
    first = caches[0]
    for p, c in zip(shards[1:], caches[1:], strict=True):
        same = (
            c.head_type == first.head_type
            and c.head_temperature == first.head_temperature
            and c.head_feature_clip == first.head_feature_clip
            and np.array_equal(c.head_weight, first.head_weight)
            and (c.head_bias is None) == (first.head_bias is None)
            and (c.head_bias is None or np.array_equal(c.head_bias, first.head_bias))
            and (c.prenorm_features is None) == (first.prenorm_features is None)
            and set(c.extra) == set(first.extra)
        )
        if not same:
            raise InputError(f"{p}: not a shard of the same test model as {shards[0]}")

    def cat(key: str):
        parts = [getattr(c, key) for c in caches]
        return None if parts[0] is None else np.concatenate(parts, axis=0)

    extra = {k: np.concatenate([c.extra[k] for c in caches]) for k in first.extra}
    merged = FeatureCache(
        logits=cat("logits"),
        features=cat("features"),
        labels=cat("labels"),
        prenorm_features=cat("prenorm_features"),
        head_weight=first.head_weight,
        head_type=first.head_type,
        head_bias=first.head_bias,
        head_temperature=first.head_temperature,
        head_feature_clip=first.head_feature_clip,
        source=str(out),
        extra=extra,
    )
    save_cache(out, merged)
    return merged


def run(args: argparse.Namespace) -> int:
    from sure_ood.inputs import check_out_not_input

    check_out_not_input(args.out, [("--shards", p) for p in args.shards])
    merged = merge(args.shards, args.out)
    print(f"{args.out}: {len(merged)} images from {len(args.shards)} shards")
    return 0
