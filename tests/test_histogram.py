"""Stage histogram: the figure's artists and axis limits, the grid, and bad input."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from sure_ood.cli import main as cli_main  # noqa: E402
from sure_ood.metrics import fpr_at_95_tpr  # noqa: E402
from sure_ood.stages import histogram  # noqa: E402


def _frame(id_s, ood_s):
    return pd.DataFrame(
        {
            "split": ["id_test"] * len(id_s) + ["ood_test"] * len(ood_s),
            "label": [0] * len(id_s) + [-1] * len(ood_s),
            "id_score": np.r_[id_s, ood_s].astype(float),
        }
    )


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    id_s, ood_s = rng.normal(1.0, 0.3, 400), rng.normal(0.0, 0.3, 300)
    ood_s[:3] = -550.0  # a Mahalanobis-like tail
    return id_s, ood_s


def test_threshold_line_robust_range_and_folded_tail(scores):
    id_s, ood_s = scores
    fig, ax = plt.subplots()
    drawn = histogram.panel(ax, _frame(id_s, ood_s), "t")
    # x-range: 0.5-99.5 percentiles of all scores, not the -550 tail
    lo, hi = np.percentile(np.r_[id_s, ood_s], [0.5, 99.5])
    assert ax.get_xlim() == pytest.approx((lo, hi))
    assert drawn["folded"]["OOD ood_test"] >= 3
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("OOD ood_test (300, ") and "folded" in t for t in labels), labels
    # threshold: the k-th largest ID score for 95 % TPR; FPR as the metric computes it
    k = int(np.ceil(0.95 * id_s.size))
    thr = np.sort(id_s)[::-1][k - 1]
    (line,) = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert line.get_xdata()[0] == pytest.approx(thr)
    fpr = fpr_at_95_tpr(id_s, ood_s)
    assert drawn["fpr"] == pytest.approx(fpr)
    assert f"95 % ID TPR: FPR {100 * fpr:.1f} %" in labels
    plt.close(fig)


def test_plain_tick_labels_without_offset():
    # ODIN-like scores: all within 1e-4 of 0.1 (1/C); a default axis would show an offset
    rng = np.random.default_rng(1)
    df = _frame(0.1 + 1e-4 * rng.random(200), 0.1 + 5e-5 * rng.random(200))
    fig, ax = plt.subplots()
    histogram.panel(ax, df, "odin")
    fig.canvas.draw()
    assert ax.xaxis.get_offset_text().get_text() == ""
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert ticks and all("e" not in t for t in ticks), ticks
    plt.close(fig)


def _row(tmp_path, name, method="energy"):
    row = {
        "table": "posthoc", "row": name, "auroc": 0.9, "fpr_at_95_tpr": 0.3,
        "row_config": {"method": method},
    }  # fmt: skip
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(row))
    return path


def test_one_job_writes_every_row_and_the_grid(tmp_path, scores):
    id_s, ood_s = scores
    parquet = tmp_path / "s.parquet"
    _frame(id_s, ood_s).to_parquet(parquet)
    rows = [_row(tmp_path, n, m) for n, m in (("a", "msp"), ("b", "energy"), ("c", "knn"))]
    out_dir, grid = tmp_path / "figures/posthoc", tmp_path / "figures/posthoc.png"
    argv = ["histogram", "--scores", *[str(parquet)] * 3, "--row-json", *map(str, rows)]
    assert cli_main([*argv, "--out-dir", str(out_dir), "--grid", str(grid)]) == 0
    for name in "abc":
        assert Image.open(out_dir / f"{name}.png").format == "PNG"
    assert Image.open(grid).size[0] > Image.open(out_dir / "a.png").size[0]  # 3 panels wide
    assert histogram.title_of(json.loads(rows[1].read_text())).startswith("energy — posthoc / b")


def test_bad_input_one_line_errors(tmp_path, scores, capsys):
    parquet = tmp_path / "s.parquet"
    _frame(*scores).to_parquet(parquet)
    row = _row(tmp_path, "a")
    base = ["histogram", "--scores", str(parquet), "--row-json", str(row)]
    assert cli_main([*base, "--out", str(tmp_path / "a.jpg")]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "a.jpg" in err and ".png" in err and err.count("\n") == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"table": "posthoc", ')
    argv = ["histogram", "--scores", str(parquet), "--row-json", str(bad)]
    assert cli_main([*argv, "--out", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert "bad.json: not valid JSON" in err and err.count("\n") == 1
    assert not (tmp_path / "a.png").exists()
