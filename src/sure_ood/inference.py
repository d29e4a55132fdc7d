"""A trained model and the images it runs on, for the test-time stages (``extract``, ``odin``).

The model comes from :mod:`sure_ood.models` (a safetensors file with its spec), the images
from :mod:`sure_ood.data`; this module only puts the two together, so that data.py never
loads a model and both stages see exactly the same images through the same loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sure_ood.data import Normalization, open_test_split

# Images per forward pass when a Python caller gives none (extract, odin, open_test_loader). It
# equals the schema's `extract_batch_size` default, which the workflow passes (a test checks).
BATCH_SIZE = 256


@dataclass
class TestLoader:
    """What a test-time stage needs: the model, its spec, a loader and where it runs."""

    model: Any
    spec: dict
    loader: Any
    device: str
    norm: Normalization
    where: str


def open_test_loader(
    test_model,
    bench: dict,
    data_dir,
    split: str,
    view: str,
    batch_size: int = BATCH_SIZE,
    workers: int = 0,
    device: str = "auto",
    shard: int = 0,
    num_shards: int = 1,
    pin_memory: bool | None = None,
) -> TestLoader:
    """Load a test model (:func:`sure_ood.models.load_model`) and a loader over one split,
    view (and shard) of a benchmark (:func:`sure_ood.data.open_test_split`), in order."""
    from torch.utils.data import DataLoader

    from sure_ood.models import load_model, resolve_device

    device = resolve_device(device)
    model, spec = load_model(test_model, device)
    ds, norm, where = open_test_split(
        bench, data_dir, split, view, spec["img_size"], model, shard, num_shards
    )
    if pin_memory is None:
        pin_memory = device.startswith("cuda")
    loader = DataLoader(
        ds, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory
    )
    return TestLoader(model, spec, loader, device, norm, where)
