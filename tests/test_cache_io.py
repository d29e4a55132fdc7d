"""Feature cache round trip, validation errors, and safe checkpoint loading."""

from __future__ import annotations

import numpy as np
import pytest

from sure_ood.cache import FeatureCache, load_cache, save_cache
from sure_ood.io import InputError, load_state_dict, save_npz


def _cache(head_type="linear", n=5, c=3, d=4, seed=0):
    rng = np.random.default_rng(seed)
    kw = {"head_bias": rng.normal(size=c)} if head_type == "linear" else {"head_temperature": 8.0}
    return FeatureCache(
        logits=rng.normal(size=(n, c)).astype(np.float32),
        features=rng.normal(size=(n, d)).astype(np.float32),
        labels=np.array([0, 1, 2, -1, -1]),
        head_weight=rng.normal(size=(c, d)).astype(np.float32),
        head_type=head_type,
        prenorm_features=rng.normal(size=(n, d)).astype(np.float32),
        **kw,
    )


@pytest.mark.parametrize("head_type", ["linear", "cosine"])
def test_cache_round_trip(tmp_path, head_type):
    c = _cache(head_type)
    save_cache(tmp_path / "c.npz", c)
    back = load_cache(tmp_path / "c.npz")
    for key, value in c.to_arrays().items():
        np.testing.assert_array_equal(back.to_arrays()[key], value)
    assert back.head_type == head_type and back.num_classes == 3 and len(back) == 5
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_cache_missing_key_names_file_and_key(tmp_path):
    arrays = _cache().to_arrays()
    del arrays["head_weight"]
    save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=r"bad\.npz.*'head_weight'"):
        load_cache(tmp_path / "bad.npz")


def test_cache_shape_mismatch_is_explained():
    c = _cache()
    with pytest.raises(InputError, match="head_weight"):
        FeatureCache(c.logits, c.features, c.labels, c.head_weight[:, :2])


def test_cache_refuses_object_arrays(tmp_path):
    np.savez(tmp_path / "obj.npz", logits=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="obj.npz"):
        load_cache(tmp_path / "obj.npz")


def test_crafted_pickle_checkpoint_is_refused(tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"weight": Evil()}, fh)
    with pytest.raises(InputError, match="evil.pt"):
        load_state_dict(path)
    assert not marker.exists(), "loading the checkpoint ran code"


def test_unreadable_checkpoint_names_path(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="broken.safetensors"):
        load_state_dict(path)
    with pytest.raises(InputError, match="missing.pt"):
        load_state_dict(tmp_path / "missing.pt")
