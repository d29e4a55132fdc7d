"""Progress of a long loop in a job's log: count/total, rate and ETA at a sensible interval.

On a terminal it is tqdm's bar. In a log file (not a TTY: every Snakemake job, SLURM) it is
one plain line per ``interval`` seconds plus the last one, never a carriage return, e.g.::

    extract id_test: 12800/50000 images (25.6 %), 213.3 images/s, ETA 2 min 54 s

Hand-written for the log case because tqdm writes ``\\r``-updated bars to any stream, which
turn a log file into one very long line. The interval (seconds) comes from the environment
variable ``SURE_OOD_PROGRESS_SECONDS`` (default 30), so a cluster run can log more sparsely.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

T = TypeVar("T")

DEFAULT_SECONDS = 30.0


def interval_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get("SURE_OOD_PROGRESS_SECONDS", DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


def duration(seconds: float) -> str:
    """``3 h 05 min``, ``2 min 54 s``, ``41 s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


class Progress:
    """Count work done out of ``total``; report it (see the module docstring).

    ``update(n)`` after each batch (n = images in it); ``close()`` prints the final line.
    ``enabled=False`` (e.g. a non-main distributed rank) prints nothing.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "images",
        interval: float | None = None,
        stream: IO[str] | None = None,
        enabled: bool = True,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval_seconds() if interval is None else interval
        self.enabled = enabled
        self.count = 0
        self.start = self._last = time.monotonic()
        self._bar = None
        isatty = getattr(self.stream, "isatty", lambda: False)()
        if enabled and isatty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=f" {unit}", file=self.stream)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.count / elapsed
        done = f"{self.count}"
        if self.total:
            done += f"/{self.total} {self.unit} ({100 * self.count / self.total:.1f} %)"
        else:
            done += f" {self.unit}"
        text = f"{self.desc}: {done}, {rate:.1f} {self.unit}/s"
        if self.total and self.count < self.total and rate > 0:
            text += f", ETA {duration((self.total - self.count) / rate)}"
        elif self.count and (not self.total or self.count >= self.total):
            text += f", done in {duration(elapsed)}"
        return text

    def update(self, n: int = 1) -> None:
        self.count += int(n)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            print(self.line(), file=self.stream, flush=True)


def track(
    items: Iterable[T],
    total: int | None,
    desc: str,
    unit: str = "images",
    size=None,
    enabled: bool = True,
) -> Iterator[T]:
    """Iterate ``items`` reporting progress; ``size(item)`` counts an item (default 1)."""
    p = Progress(total, desc, unit, enabled=enabled)
    for item in items:
        yield item
        p.update(size(item) if size is not None else 1)
    p.close()
