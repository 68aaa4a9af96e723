"""Streaming import: peak RSS and wall time of `recall data import taobao` on a large Taobao-format CSV.

Writes a Taobao UserBehavior CSV of `--rows` rows (default 20M) into a temporary
folder, shaped like the real log (about 100 events per user, 24 per item, the
published behaviour mix, 9 days, rows grouped by user; the last line truncated
as in the public 84k head, so the run goes through `-o on_bad_lines=skip`), then
imports it in a fresh process. `wait4` gives the process's exact peak RSS.

    python bench/bench_import.py --rows 20000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

RECALL = Path(sys.executable).with_name("recall")
CHUNK = 2_000_000
BEHAVIORS = np.array(["pv", "cart", "fav", "buy"])
MIX = [0.8953, 0.0552, 0.0288, 0.0207]  # pv, cart, fav, buy in the full 100M-row log
START, END = 1511539200, 1512316800  # 2017-11-25 .. 2017-12-03 (UTC)
EVENTS_PER_USER, EVENTS_PER_ITEM, CATEGORIES = 100, 24, 9_439


def write_taobao_csv(path: Path, rows: int, seed: int = 0) -> None:
    """A headerless Taobao CSV, written chunk by chunk (bounded memory), last line truncated."""
    rng = np.random.default_rng(seed)
    n_items = max(rows // EVENTS_PER_ITEM, 1)
    item_category = rng.integers(1, 5_000_000, CATEGORIES)[rng.integers(0, CATEGORIES, n_items)]
    # A long tail: popularity ~ 1 / (rank + 50), items in random id order.
    popularity = np.cumsum(1.0 / (np.arange(n_items) + 50.0))
    item_ids = rng.permutation(n_items) * 7 + 1  # ids are not indices
    with open(path, "wb") as handle:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            items = np.searchsorted(popularity, rng.random(n) * popularity[-1])
            frame = pl.DataFrame({
                "user_id": 1 + (start + np.arange(n)) // EVENTS_PER_USER,
                "item_id": item_ids[items],
                "category_id": item_category[items],
                "behavior_type": BEHAVIORS[rng.choice(4, n, p=MIX)],
                "timestamp": rng.integers(START, END, n),
            }).sort("user_id", "timestamp")
            if start + n < rows:
                frame.write_csv(handle, include_header=False)
                continue
            # The last line loses its timestamp and newline, like the published 84k head.
            frame.head(n - 1).write_csv(handle, include_header=False)
            handle.write(",".join(map(str, frame.row(n - 1)[:4])).encode())


def run_import(csv: Path, out: Path) -> dict:
    argv = [str(RECALL), "--quiet", "data", "import", "taobao", str(csv), "--out", str(out),
            "-o", "on_bad_lines=skip"]
    started = time.perf_counter()
    proc = subprocess.Popen(argv)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"recall data import failed (exit {os.waitstatus_to_exitcode(status)})")
    meta = json.loads((out / "import.json").read_text())
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "rows": meta["rows"], "skipped_lines": meta["skipped_lines"],
            "duplicates_dropped": meta["duplicates_dropped"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the CSV and the output (default: a "
                                                                "fresh temporary folder, removed afterwards)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="recall-bench-import-", dir=args.tmp))
    try:
        csv = base / "UserBehavior.csv"
        started = time.perf_counter()
        write_taobao_csv(csv, args.rows)
        print(f"wrote {args.rows:,} rows ({csv.stat().st_size / 2**20:,.0f} MiB) in "
              f"{time.perf_counter() - started:.1f} s; importing ...", file=sys.stderr)
        result = {"rows_in_csv": args.rows, "csv_mib": round(csv.stat().st_size / 2**20, 1), "cores": os.cpu_count(),
                  "polars": pl.__version__, **run_import(csv, base / "out")}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
