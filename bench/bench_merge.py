"""Merge + filters alone at the 5M-event scale, on synthetic channel lists.

One user shard of the 5M-event log as `bench/bench_pipeline.py` runs it (25,000 of
its 50,000 users), twelve channels (the default set) of up to budget + reserve = 300
ranked items per user drawn from the log's 20,000 items with a popularity skew, so
that channels overlap as real ones do; the filters use the log itself (purchases,
categories, brands). Reports wall and CPU seconds of `merge_outputs` (merge, purchase
filter, diversity caps, budget), run in this process.

    .venv/bin/python bench/bench_merge.py [--users 25000] [--per-user 300]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
CHANNELS = ("itemcf", "usercf", "ranki2i", "association", "crowd", "item2vec", "deepwalk", "node2vec", "eges",
            "ease", "als", "retarget")


def synthetic_lists(user_ids: np.ndarray, item_ids: np.ndarray, per_user: int, seed: int) -> dict[str, pl.DataFrame]:
    """Per channel: each user's ``per_user`` distinct items (Zipf-like popularity), ranked 1..n."""
    rng = np.random.default_rng(seed)
    tables = {}
    for c, name in enumerate(CHANNELS):
        n = 10 if name == "retarget" else per_user
        # Skewed draws (item index ~ N u^3: popular items recur across users and channels);
        # 1.5 n per user, the first n distinct kept.
        draws = (item_ids.size * rng.random((user_ids.size, n * 3 // 2)) ** 3).astype(np.int64)
        frame = pl.DataFrame({"user_id": np.repeat(user_ids, draws.shape[1]), "item_id": item_ids[draws.ravel()]})
        frame = (frame.filter(pl.struct("user_id", "item_id").is_first_distinct())
                 .with_columns(rank=pl.int_range(1, pl.len() + 1).over("user_id").cast(pl.Int32))
                 .filter(pl.col("rank") <= n)
                 .with_columns(score=1.0 / pl.col("rank").cast(pl.Float64)))
        tables[name] = frame.select("user_id", "item_id", "score", "rank")
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "out" / "synth-u50000-i20000-d14-s0")
    parser.add_argument("--users", type=int, default=25_000)
    parser.add_argument("--per-user", type=int, default=300)
    args = parser.parse_args()
    from recall.config import load_config
    from recall.context import TrainData
    from recall.filters import purchase_blocks
    from recall.pipeline import load_data, merge_outputs

    cfg = load_config(ROOT / "configs" / "default.toml", [f"data.dir={args.data}"])
    train = TrainData.build(load_data(cfg), triggers=cfg.triggers, seed=cfg.seed)
    users = train.user_ids.to_numpy()[: args.users]
    tables = synthetic_lists(users, train.item_ids.to_numpy(), args.per_user, cfg.seed)
    rows = sum(t.height for t in tables.values())
    blocks = purchase_blocks(train, cfg.filters.purchase)
    wall, cpu = time.perf_counter(), time.process_time()
    filtered, _, removed = merge_outputs(cfg, tables, train, blocks)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{args.users:,} users, {len(tables)} channels, {rows:,} candidate rows -> {filtered.height:,}; "
          f"merge_outputs wall {wall:.1f} s, CPU {cpu:.1f} s; removed {removed}; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB", flush=True)
    print(f"hash {filtered.hash_rows().sum()}", file=sys.stderr)


if __name__ == "__main__":
    main()
