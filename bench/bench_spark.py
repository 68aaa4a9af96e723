"""Local engine vs Spark engine: the counting channels, merge, filters and publish on one log.

Usage::

    .venv/bin/python bench/bench_spark.py [--users 10000] [--items 5000] [--days 14]
        [--master local[2]] [--driver-memory 6g] [--engines local,spark]

Each engine runs in a fresh subprocess on the same synthetic log (generated once
under ``bench/out``, as by ``bench/bench_itemcf.py``) with ``configs/default.toml``
restricted to the channels the Spark engine implements, and reports the wall time
of every step and the peak RSS of the process tree (for Spark: the Python driver
plus the JVM, read from /proc). Prints one JSON line per engine and a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SPARK_CHANNELS = ("itemcf", "usercf", "ranki2i", "association", "retarget", "crowd")


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB (Linux /proc)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            todo += [int(c) for c in children]
    return total / 1024


def measure(engine: str, data_dir: Path, master: str, driver_memory: str) -> dict:
    from recall.config import load_config

    peak = [0.0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss_mib(os.getpid()))
            stop.wait(0.5)

    threading.Thread(target=sample, daemon=True).start()
    steps: dict[str, float] = {}

    @contextlib.contextmanager
    def step(name: str):
        started = time.perf_counter()
        yield
        steps[name] = round(time.perf_counter() - started, 2)

    with tempfile.TemporaryDirectory() as out:
        overrides = [f'data.dir="{data_dir}"', f'output.root="{out}"']
        overrides += [f"channels.{name}.enabled=false" for name in _all_channels() if name not in SPARK_CHANNELS]
        cfg = load_config(ROOT / "configs" / "default.toml", overrides)
        started = time.perf_counter()
        if engine == "local":
            from recall.pipeline import run

            summary = run(cfg, step)
        else:
            from recall.spark.engine import run_spark
            from recall.spark.session import spark_session

            with step("session"):
                spark = spark_session(master=master, driver_memory=driver_memory)
            summary = run_spark(cfg, step, spark=spark)
        seconds = time.perf_counter() - started
    stop.set()
    return {"engine": engine, "seconds": round(seconds, 1), "steps": steps, "peak_rss_mib": round(peak[0]),
            "candidates": summary["candidates"]["rows"], "cores": os.cpu_count()}


def _all_channels() -> list[str]:
    from recall.channels import CHANNELS

    return list(CHANNELS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000, help="10,000 users: ~0.94M events; 50,000: ~4.9M")
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--engines", default="local,spark")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, Path(args.data), args.master, args.driver_memory)))
        return
    from bench_itemcf import ensure_data

    data_dir = ensure_data(args.users, args.items, args.days, args.seed)
    results = []
    for engine in args.engines.split(","):
        done = subprocess.run([sys.executable, __file__, "--measure", engine, "--data", str(data_dir),
                               "--master", args.master, "--driver-memory", args.driver_memory],
                              capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(result)
        print(json.dumps(result), flush=True)
    print(f"\n{data_dir.name}, {os.cpu_count()} cores")
    for r in results:
        print(f"{r['engine']:6s} {r['seconds']:8.1f}s  peak RSS {r['peak_rss_mib']:6d} MiB  "
              + ", ".join(f"{k} {v}s" for k, v in r["steps"].items()))


if __name__ == "__main__":
    main()
