"""Merge + filters alone at the 5M-event scale: a pipeline run's real channel lists, or synthetic ones.

With ``--run`` (a published run of `bench/bench_pipeline.py`, e.g. bench/out/pipeline-5M/latest), its
per-channel candidate tables (channels/*.parquet: every default channel's list of budget + reserve
rows per user) are merged and filtered as that run did, user shard by user shard (the manifest's
shard count), and the seconds are summed over the shards: the pipeline's "merge and filter" stage
without the rest. Without it, one user shard (25,000 users) of synthetic lists: twelve channels of
up to ``--per-user`` skewed items per user. The filters use the log itself (purchases, categories,
brands). Reports wall and CPU seconds of `merge_outputs` (merge, purchase filter, diversity caps,
budget) and an order-independent hash of the output to compare two versions of the code.

    .venv/bin/python bench/bench_merge.py --run bench/out/pipeline-5M/latest
    .venv/bin/python bench/bench_merge.py [--users 25000] [--per-user 300]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from recall import schema as S

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
    parser.add_argument("--run", type=Path, help="a published pipeline run whose channel tables to merge")
    parser.add_argument("--users", type=int, default=25_000)
    parser.add_argument("--per-user", type=int, default=300)
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.toml"), help="the config to merge with")
    parser.add_argument("--set", action="append", default=[], help="config override, e.g. merge.workers=1")
    args = parser.parse_args()
    from recall.config import load_config
    from recall.context import TrainData
    from recall.filters import purchase_blocks
    from recall.pipeline import load_data, merge_outputs
    from recall.shards import user_shards

    cfg = load_config(Path(args.config), [f"data.dir={args.data}", *args.set])
    train = TrainData.build(load_data(cfg), triggers=cfg.triggers, seed=cfg.seed)
    if args.run:
        shards = json.loads((args.run / "manifest.json").read_text())["shards"]
        everyone = {p.stem: pl.read_parquet(p) for p in sorted((args.run / "channels").glob("*.parquet"))}
        parts = []
        for users in user_shards(train.user_ids, shards):
            chosen = train.user_ids.to_frame(S.USER) if users is None else train.user_ids.gather(users).to_frame(S.USER)
            parts.append({n: t.join(chosen, on=S.USER, how="semi", maintain_order="left") for n, t in everyone.items()})
        del everyone
    else:
        users = train.user_ids.to_numpy()[: args.users]
        parts = [synthetic_lists(users, train.item_ids.to_numpy(), args.per_user, cfg.seed)]
    rows = sum(t.height for part in parts for t in part.values())
    blocks = purchase_blocks(train, cfg.filters.purchase)
    wall = cpu = 0.0
    outputs, removed = [], {}
    for tables in parts:
        started, cpu_started = time.perf_counter(), time.process_time()
        filtered, _, dropped = merge_outputs(cfg, tables, train, blocks, unfiltered=False)  # as a run
        wall, cpu = wall + time.perf_counter() - started, cpu + time.process_time() - cpu_started
        outputs.append(filtered)
        removed = {k: removed.get(k, 0) + v for k, v in dropped.items()}
    out = pl.concat(outputs)
    print(f"{train.user_ids.len() if args.run else args.users:,} users in {len(parts)} shard(s), "
          f"{len(parts[0])} channels, {rows:,} candidate rows -> {out.height:,}; merge_outputs wall {wall:.1f} s, "
          f"CPU {cpu:.1f} s; removed {removed}; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB", flush=True)
    print(f"hash {out.hash_rows().sum()}; without channels {out.drop(S.CHANNELS).hash_rows().sum()}", file=sys.stderr)


if __name__ == "__main__":
    main()
