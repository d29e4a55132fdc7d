"""One clear line for a malformed JSON option or an --out naming the wrong format."""

from __future__ import annotations

import pytest

from sure_ood.cli import main as cli_main


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (
            ["evaluate", "--scores", "s.parquet", "--row", '{"method": "msp",', "--table", "t",
             "--row-id", "r", "--n-boot", "0", "--out", "r.json"],
            ["--row: not valid JSON", '{"method": "msp",'],
        ),
        (
            ["evaluate", "--scores", "s.parquet", "--row", "{}", "--table", "t",
             "--row-id", "r", "--n-boot", "0", "--out", "r.csv"],
            ["--out r.csv", ".json"],
        ),
        (
            ["score", "--method", "msp", "--features", "f.npz", "--out", "s.csv"],
            ["--out s.csv", "parquet", ".parquet"],
        ),
        (
            ["score", "--method", "msp", "--features", "f.npz", "--out", "s.parquet",
             "--stats-out", "st.json"],
            ["--stats-out st.json", ".npz"],
        ),
    ],
)  # fmt: skip
def test_one_line_error(argv, needles, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not any(tmp_path.iterdir())  # nothing written
