"""Stage fuse (docs/method.md#fusion) and the five-crop views it fuses (#test-time), on
hand-built inputs.

SURE-OOD: mean of the per-crop OOD scores; class prediction = argmax of the mean per-crop
softmax (not of the mean logits, not a vote). Several test models (``ensemble: output``)
are fused the same way.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from sure_ood.cache import FeatureCache, save_cache
from sure_ood.config import resolve_row, row_test_models
from sure_ood.data import Normalization, make_transform, view_names
from sure_ood.io import InputError
from sure_ood.stages.fuse import fuse

SPLITS = ("id_test", "ood_test")


def _scores(path, rows: dict[str, tuple]) -> str:
    """rows: split -> (labels, id_scores, preds); writes a score parquet like ``score``."""
    frames = []
    for split, (labels, s, pred) in rows.items():
        frames.append(
            pd.DataFrame(
                {
                    "split": split,
                    "index": np.arange(len(labels)),
                    "label": np.asarray(labels, dtype=np.int64),
                    "id_score": np.asarray(s, dtype=np.float64),
                    "pred": np.asarray(pred, dtype=np.int64),
                }
            )
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    # stored in a shuffled order: fuse must align on (split, index), not on row order
    df = pd.concat(frames).sample(frac=1.0, random_state=len(str(path)))
    df.to_parquet(path, index=False)
    return path


def _cache(path, logits, labels) -> str:
    logits = np.asarray(logits, dtype=np.float32)
    n, c = logits.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    save_cache(
        path,
        FeatureCache(
            logits=logits,
            features=np.ones((n, 4), np.float32),
            labels=np.asarray(labels, dtype=np.int64),
            head_weight=np.ones((c, 4), np.float32),
        ),
    )
    return path


def _hand_softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


# --------------------------------------------------------------------------------------------
# five-crop views (the transform, checked by slicing, independent of torchvision's FiveCrop)


def test_five_crop_views_are_the_corner_and_centre_slices():
    img = torch.randint(0, 256, (1, 8, 8), generator=torch.Generator().manual_seed(0)).to(
        torch.uint8
    )
    norm = Normalization(mean=(0.3,), std=(0.35,))
    # digits_osr's tricks rows: test size 10 at crop ratio 0.8 -> resize to 12, crop 10
    from torchvision.transforms import v2

    big = v2.Resize(12, antialias=True)(v2.ToDtype(torch.float32, scale=True)(img))
    big = (big - 0.3) / 0.35
    assert big.shape == (1, 12, 12)
    slices = {
        "five_crop_tl": big[:, :10, :10],
        "five_crop_tr": big[:, :10, 2:],
        "five_crop_bl": big[:, 2:, :10],
        "five_crop_br": big[:, 2:, 2:],
        "five_crop_c": big[:, 1:11, 1:11],
        "center": big[:, 1:11, 1:11],
    }
    assert view_names("five_crop") == list(slices)[:5]
    for view, ref in slices.items():
        got = make_transform(view, 10, norm, crop_ratio=0.8)(img)
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6, msg=view)
    with pytest.raises(InputError, match="five_crop_xx"):
        make_transform("five_crop_xx", 10, norm)


# --------------------------------------------------------------------------------------------
# fusion of scores


def test_mean_fusion_of_identical_views_is_the_identity(tmp_path):
    rows = {
        "id_test": ([0, 1, 2], [0.5, -1.0, 3.25], [0, 1, 1]),
        "ood_test": ([-1, -1], [2, 0], [2, 0]),
    }
    paths = [_scores(tmp_path / f"v{i}/scores.parquet", rows) for i in range(5)]
    for fusion in ("mean", "median", "max"):
        out = fuse(paths, fusion)
        one = fuse(paths[:1], fusion)
        pd.testing.assert_frame_equal(out, one)
        assert list(out["split"]) == ["id_test"] * 3 + ["ood_test"] * 2
        np.testing.assert_array_equal(out["id_score"], [0.5, -1.0, 3.25, 2.0, 0.0])
        np.testing.assert_array_equal(out["pred"], [0, 1, 1, 2, 0])


def test_mean_median_max_by_hand(tmp_path):
    views = [[1.0, -2.0, 4.0], [3.0, 0.0, -1.0], [8.0, 1.0, 0.5]]
    paths = [
        _scores(tmp_path / f"v{i}/scores.parquet", {"id_test": ([0, 1, 0], s, [0, 0, 0])})
        for i, s in enumerate(views)
    ]
    expected = {
        "mean": [(1 + 3 + 8) / 3, (-2 + 0 + 1) / 3, (4 - 1 + 0.5) / 3],
        "median": [3.0, 0.0, 0.5],
        "max": [8.0, 1.0, 4.0],
    }
    for fusion, ref in expected.items():
        np.testing.assert_allclose(fuse(paths, fusion)["id_score"], ref, rtol=1e-12)
    with pytest.raises(InputError, match="gmean"):
        fuse(paths, "gmean")


def test_fused_prediction_is_argmax_of_mean_softmax(tmp_path):
    # three views, three classes; image 0: one saturated view says 0, two say 1:
    #   mean softmax -> 1, mean logits -> 0.  Image 1: views say 2, 0, 1 (no majority):
    #   mean softmax -> 2.  Image 2 (OOD split): all agree on 1.
    logits = [
        {"id_test": [[20, 0, 0], [0, 1, 5]], "ood_test": [[0, 2, 0]]},
        {"id_test": [[0, 3, 0], [2.0, 0, 1.9]], "ood_test": [[0, 1, 0]]},
        {"id_test": [[0, 3, 0], [0, 1.0, 0.9]], "ood_test": [[1, 3, 0]]},
    ]
    labels = {"id_test": [1, 2], "ood_test": [-1]}
    scores, caches = [], []
    for v, z in enumerate(logits):
        rows = {
            s: (labels[s], [float(v)] * len(labels[s]), np.argmax(z[s], axis=1)) for s in SPLITS
        }
        scores.append(_scores(tmp_path / f"view~{v}/scores.parquet", rows))
        caches += [_cache(tmp_path / f"view~{v}/split~{s}.npz", z[s], labels[s]) for s in SPLITS]
    # hand reference
    ref = {}
    for s in SPLITS:
        for i in range(len(labels[s])):
            ps = [_hand_softmax(z[s][i]) for z in logits]
            mean = [sum(p[c] for p in ps) / 3 for c in range(3)]
            ref[(s, i)] = int(np.argmax(mean))
    assert ref == {("id_test", 0): 1, ("id_test", 1): 2, ("ood_test", 0): 1}
    mean_logits = np.mean([z["id_test"][0] for z in logits], axis=0)
    assert np.argmax(mean_logits) == 0, "the example separates softmax from logit averaging"
    out = fuse(scores, "mean", caches)
    got = {(s, i): p for s, i, p in out[["split", "index", "pred"]].itertuples(index=False)}
    assert got == ref
    np.testing.assert_allclose(out["id_score"], 1.0)  # mean of 0, 1, 2
    # without caches: majority vote (image 1 has none: ties -> lowest class)
    vote = fuse(scores, "mean")
    assert list(vote["pred"]) == [1, 0, 1]
    # the same through the CLI, as the rule calls it
    from sure_ood.cli import main

    dest = tmp_path / "fused.parquet"
    rc = main(
        ["fuse", "--scores", *map(str, scores), "--features", *map(str, caches)]
        + ["--fusion", "mean", "--out", str(dest)]
    )
    assert rc == 0
    pd.testing.assert_frame_equal(pd.read_parquet(dest), out)


def test_fuse_rejects_misaligned_inputs_naming_the_file(tmp_path):
    good = {"id_test": ([0, 1, 2], [1, 2, 3], [0, 1, 2])}
    a = _scores(tmp_path / "a/scores.parquet", good)
    fewer = _scores(tmp_path / "fewer/scores.parquet", {"id_test": ([0, 1], [1, 2], [0, 1])})
    with pytest.raises(InputError, match=r"fewer/scores\.parquet: not the same images"):
        fuse([a, fewer])
    relabelled = _scores(
        tmp_path / "relab/scores.parquet", {"id_test": ([0, 1, 1], [1, 2, 3], [0, 1, 2])}
    )
    with pytest.raises(InputError, match=r"relab/scores\.parquet: labels disagree"):
        fuse([a, relabelled])
    other_split = _scores(
        tmp_path / "split/scores.parquet", {"ood_test": ([0, 1, 2], [1, 2, 3], [0, 1, 2])}
    )
    with pytest.raises(InputError, match=r"split/scores\.parquet"):
        fuse([a, other_split])
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    with pytest.raises(InputError, match=r"broken\.parquet: cannot read"):
        fuse([a, broken])
    b = _scores(tmp_path / "b/scores.parquet", good)
    z = np.eye(3, dtype=np.float32)
    ca = _cache(tmp_path / "a/split~id_test.npz", z, [0, 1, 2])
    short = _cache(tmp_path / "short/split~id_test.npz", z[:2], [0, 1])
    with pytest.raises(InputError, match=r"short/split~id_test\.npz: 2 images"):
        fuse([a, b], "mean", [ca, short])
    wrong_labels = _cache(tmp_path / "wl/split~id_test.npz", z, [2, 1, 0])
    with pytest.raises(InputError, match=r"wl/split~id_test\.npz: labels disagree"):
        fuse([a, b], "mean", [ca, wrong_labels])
    stray = _cache(tmp_path / "c/split~ood_test.npz", z, [0, 1, 2])
    with pytest.raises(InputError, match=r"c/split~ood_test\.npz: split 'ood_test'"):
        fuse([a, b], "mean", [ca, stray])
    with pytest.raises(InputError, match="1 feature cache"):
        fuse([a, b], "mean", [ca])


# --------------------------------------------------------------------------------------------
# output-level ensemble


def test_output_ensemble_row_fuses_the_scores_of_two_test_models(tmp_path):
    config = {
        "tables": {
            "tricks": {
                "defaults": {"model": "deit3_micro", "recipe": "sure", "method": "rp_gradnorm"},
                "rows": {
                    "soup": {"seeds": [0, 1], "drop_final_norm": True, "img_size": 10},
                    "output": {
                        "seeds": [0, 1],
                        "ensemble": "output",
                        "drop_final_norm": True,
                        "img_size": 10,
                    },
                },
            }
        }
    }
    (soup,) = row_test_models(resolve_row(config, "tricks", "soup"))
    assert soup.id == "deit3_micro-sure-s0_1-noln-r10"
    models = row_test_models(resolve_row(config, "tricks", "output"))
    assert [m.id for m in models] == [
        "deit3_micro-sure-s0-noln-r10",
        "deit3_micro-sure-s1-noln-r10",
    ]
    labels = {"id_test": [0, 1], "ood_test": [-1, -1]}
    per_model = {
        models[0].id: ({"id_test": [2.0, 1.0], "ood_test": [0.5, -1.0]}, [[3, 0], [0, 1]]),
        models[1].id: ({"id_test": [4.0, 0.0], "ood_test": [1.5, -3.0]}, [[0, 1], [0, 4]]),
    }
    scores, caches = [], []
    for name, (s, z) in per_model.items():
        d = tmp_path / name
        rows = {k: (labels[k], s[k], [0, 1]) for k in SPLITS}
        scores.append(_scores(d / "scores.parquet", rows))
        caches += [_cache(d / f"split~{k}.npz", z, labels[k]) for k in SPLITS]
    out = fuse(scores, "mean", caches)
    np.testing.assert_allclose(out["id_score"], [3.0, 0.5, 1.0, -2.0])
    # image 0: softmax([3, 0]) = [.95, .05], softmax([0, 1]) = [.27, .73] -> mean favours 0
    np.testing.assert_array_equal(out["pred"], [0, 1, 0, 1])
