"""Which math-library layer changes the bits? One probe per process, hashed.

Trains the default config's tiny DeiT-III for a few SGD steps on fixed random data and hashes
the weights ("train"), then scores fixed random features with the methods that use numpy's BLAS
and the numba GradNorm kernel, and hashes each score vector. Run it under different
environments (instruction-set caps, thread counts, ``sure_ood.numerics`` modes) and compare
the hashes: equal hash = equal bits.

    python benchmarks/probe_numerics.py --threads 1 [--mode portable|native|none]

The environment of the process is the experiment: e.g.
``ATEN_CPU_CAPABILITY=default python benchmarks/probe_numerics.py --mode none``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path


def default_model() -> dict:
    """The default config's model (``models.deit3_tiny`` in config/config.yaml)."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    return yaml.safe_load((root / "config" / "config.yaml").read_text())["models"]["deit3_tiny"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument(
        "--mode",
        choices=["portable", "native", "none"],
        default="none",
        help="apply sure_ood.numerics first (none: leave the environment alone)",
    )
    p.add_argument("--mkldnn", choices=["on", "off"], default="on", help="with --mode none")
    p.add_argument(
        "--portable-blas",
        action="store_true",
        help="with --mode none: the model's products on numpy's OpenBLAS (sure_ood.portable_blas)",
    )
    p.add_argument(
        "--raw-threads",
        action="store_true",
        help="after the mode's torch settings, set --threads threads anyway",
    )
    args = p.parse_args()
    t0 = time.perf_counter()
    if args.mode != "none":
        from sure_ood import numerics

        numerics.apply(args.mode)
    import numpy as np
    import torch

    from sure_ood.models import build_model, model_spec

    if args.mode != "none":
        numerics.configure_torch(args.threads)
    else:
        torch.backends.mkldnn.enabled = args.mkldnn == "on"
        if args.portable_blas:
            from sure_ood import portable_blas

            portable_blas.install()
    if args.mode == "none" or args.raw_threads:
        torch.set_num_threads(args.threads)
    out: dict[str, str] = {}
    torch.manual_seed(0)
    cfg = default_model()
    model = build_model(model_spec(cfg, 6, {"head": "cosine", "cos_temperature": 8.0}))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(1)
    t_train = time.perf_counter()
    for _ in range(args.steps):
        x = torch.randn(32, 1, 28, 28, generator=g)
        y = torch.randint(0, 6, (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    t_train = time.perf_counter() - t_train
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode() + v.detach().contiguous().numpy().tobytes())
    out["train"] = h.hexdigest()[:12]
    out["loss"] = f"{loss.item():.8f}"

    from sure_ood import scores
    from sure_ood.cache import FeatureCache

    rng = np.random.default_rng(0)

    def cache(n, head):
        f = rng.standard_normal((n, 96)).astype(np.float32)
        w = rng.standard_normal((6, 96)).astype(np.float32)
        if head == "cosine":
            logits = (
                8.0
                * (f / np.linalg.norm(f, axis=1, keepdims=True))
                @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
            )
        else:
            logits = f @ w.T
        return FeatureCache(
            logits=logits.astype(np.float32),
            features=f,
            labels=rng.integers(0, 6, n),
            head_weight=w,
            head_type=head,
            head_temperature=8.0 if head == "cosine" else None,
        )

    train_c, test_c = cache(3000, "cosine"), cache(2000, "cosine")
    t_score = time.perf_counter()
    for name in ("mahalanobis", "knn", "vim", "gradnorm", "rp_gradnorm"):
        s = scores.get(name)
        s.fit(train_c)
        out[name] = hashlib.sha256(np.ascontiguousarray(s.score(test_c)).tobytes()).hexdigest()[:12]
    out["train_s"] = f"{t_train:.2f}"
    out["score_s"] = f"{time.perf_counter() - t_score:.2f}"
    out["seconds"] = f"{time.perf_counter() - t0:.1f}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
