"""Wall time and peak resident memory of each stage of a job, for the manifest and benchmarks.

Peak memory per stage comes from a background thread sampling the process's
resident set size (``/proc/self/statm``) every ``interval`` seconds while the stage
runs, so a spike shorter than the interval can be missed; the whole process's
exact peak (``getrusage``'s ``ru_maxrss``) is recorded besides. A stage entered
several times (one per user shard) adds up its time and keeps its largest peak.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from collections.abc import Iterator

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MIB = 1 << 20


def rss_bytes() -> int:
    """Current resident set size of this process (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class StageMeter:
    """Times stages and samples their peak RSS; :meth:`report` is what the manifest records."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.stages: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        peak = [rss_bytes()]
        self.stages.setdefault(name, {"seconds": 0.0, "cpu_seconds": 0.0, "peak_rss_mib": 0.0, "times": 0,
                                      "start_rss_mib": peak[0] / MIB})
        done = threading.Event()

        def sample() -> None:
            while not done.wait(self.interval):
                peak[0] = max(peak[0], rss_bytes())

        sampler = threading.Thread(target=sample, name=f"meter:{name}", daemon=True)
        sampler.start()
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            seconds = time.perf_counter() - started
            cpu_seconds = time.process_time() - cpu_started
            done.set()
            sampler.join()
            peak[0] = max(peak[0], rss_bytes())
            row = self.stages[name]
            row["seconds"] += seconds
            row["cpu_seconds"] += cpu_seconds
            row["peak_rss_mib"] = max(row["peak_rss_mib"], peak[0] / MIB)
            row["times"] += 1

    def report(self) -> dict:
        """``{"stages": {name: {seconds, cpu_seconds, peak_rss_mib, start_rss_mib, times}}, "peak_rss_mib": ...}``.

        ``start_rss_mib`` is the resident size when the stage was first entered;
        ``cpu_seconds`` is the process's CPU time (all threads) during the stage, the
        figure to compare on a shared machine where wall time depends on the neighbours.
        """
        return {
            "stages": {name: {"seconds": round(row["seconds"], 3), "cpu_seconds": round(row["cpu_seconds"], 3),
                              "peak_rss_mib": round(row["peak_rss_mib"], 1),
                              "start_rss_mib": round(row["start_rss_mib"], 1), "times": row["times"]}
                       for name, row in self.stages.items()},
            "peak_rss_mib": round(peak_rss_bytes() / MIB, 1),
        }
