"""Progress lines of long stages: count/total, rate, ETA; plain lines when not on a TTY."""

from __future__ import annotations

import io

import pytest

from sure_ood import progress


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress.time, "monotonic", c)
    return c


def test_log_lines_at_the_interval_with_rate_and_eta(clock):
    out = io.StringIO()  # not a TTY, like a job's log file
    p = progress.Progress(1000, "extract id_test", interval=30.0, stream=out)
    for _ in range(10):  # 100 images per 10 s: a line every 30 s
        clock.t += 10.0
        p.update(100)
    p.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == [
        "extract id_test: 300/1000 images (30.0 %), 10.0 images/s, ETA 1 min 10 s",
        "extract id_test: 600/1000 images (60.0 %), 10.0 images/s, ETA 40 s",
        "extract id_test: 900/1000 images (90.0 %), 10.0 images/s, ETA 10 s",
        "extract id_test: 1000/1000 images (100.0 %), 10.0 images/s, done in 1 min 40 s",
    ]


def test_track_counts_batch_sizes_and_can_be_silenced(clock):
    out = io.StringIO()
    p = progress.Progress(None, "check", interval=0.0, stream=out, enabled=False)
    p.update(5)
    p.close()
    assert out.getvalue() == "" and p.count == 5
    batches = [(None, [1, 2, 3], None), (None, [4, 5], None)]
    seen = list(progress.track(batches, 5, "x", size=lambda b: len(b[1])))
    assert seen == batches


def test_duration_and_interval_from_the_environment(monkeypatch):
    assert progress.duration(41) == "41 s"
    assert progress.duration(174) == "2 min 54 s"
    assert progress.duration(3 * 3600 + 5 * 60) == "3 h 05 min"
    monkeypatch.setenv("SURE_OOD_PROGRESS_SECONDS", "120")
    assert progress.interval_seconds() == 120.0
    monkeypatch.setenv("SURE_OOD_PROGRESS_SECONDS", "often")
    assert progress.interval_seconds() == progress.DEFAULT_SECONDS
