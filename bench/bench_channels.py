"""Wall time and peak memory of every registered channel on one synthetic log.

Usage::

    .venv/bin/python bench/bench_channels.py [--users 50000] [--items 20000] [--days 14]

Each channel runs in a fresh subprocess: load the data, index it, then fit,
recommend (``candidates_per_user + filters.reserve`` per user, as ``recall run``
does) and build its i2i / extra tables, with the default configuration
(``configs/default.toml``). Peak RSS is the whole process's, so it includes the
loaded log; the ``load only`` row is that floor.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_itemcf import ensure_data  # noqa: E402  (shared cached synthetic logs)

LOAD_ONLY = "load only"


def measure(name: str, data_dir: Path) -> dict:
    from recall.channels import get_channel
    from recall.config import load_config
    from recall.context import TrainData
    from recall.io import load_dataset

    cfg = load_config(ROOT / "configs" / "default.toml")
    started = time.perf_counter()
    data = load_dataset(data_dir)
    train = TrainData.build(data, triggers=cfg.triggers, seed=cfg.seed)
    train.interactions, train.trigger_matrix  # shared by every channel: built before timing
    load_seconds = time.perf_counter() - started
    out = {"channel": name, "load_seconds": load_seconds, "events": data.events.height,
           "users": train.n_users, "items": train.n_items}
    if name != LOAD_ONLY:
        channel = get_channel(name)(cfg.channels.get(name))
        started = time.perf_counter()
        channel.fit(train)
        fitted = time.perf_counter()
        candidates = channel.recommend(train, cfg.candidates_per_user + cfg.filters.reserve)
        recommended = time.perf_counter()
        i2i = channel.similar_items(train)
        extra = channel.extra_tables(train)
        done = time.perf_counter()
        out.update(fit_seconds=fitted - started, recommend_seconds=recommended - fitted,
                   tables_seconds=done - recommended, candidate_rows=candidates.height,
                   i2i_rows=None if i2i is None else i2i.height, extra_tables=len(extra))
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.data)))
        return
    from recall.channels import CHANNELS

    data_dir = ensure_data(args.users, args.items, args.days, args.seed)
    results = []
    for name in [LOAD_ONLY, *CHANNELS]:
        run = subprocess.run([sys.executable, __file__, "--one", name, "--data", str(data_dir)],
                             check=True, capture_output=True, text=True, cwd=ROOT)
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(f"{name}: {results[-1]}", file=sys.stderr)
    first = results[0]
    print(f"log: {first['events']:,} events, {first['users']:,} users, {first['items']:,} items; "
          f"{os.cpu_count()} cores; load + index {first['load_seconds']:.2f}s\n")
    print("| channel | fit s | recommend s | tables s | total s | candidate rows | i2i rows | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        if r["channel"] == LOAD_ONLY:
            print(f"| {LOAD_ONLY} | | | | | | | {r['peak_rss_mib']:.0f} |")
            continue
        total = r["fit_seconds"] + r["recommend_seconds"] + r["tables_seconds"]
        i2i = "-" if r["i2i_rows"] is None else f"{r['i2i_rows']:,}"
        print(f"| {r['channel']} | {r['fit_seconds']:.2f} | {r['recommend_seconds']:.2f} | "
              f"{r['tables_seconds']:.2f} | {total:.2f} | {r['candidate_rows']:,} | {i2i} | "
              f"{r['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
