"""One channel's metrics over a grid of its parameters, on the validation window or the test window.

Usage::

    .venv/bin/python bench/sweep_channel.py -c configs/ml-100k.toml --channel swing \\
        --grid alpha=0.5,1,5 --grid user_beta=0,0.3 [--window validation|test] [--set key=value ...]

The validation window is `recall tune`'s latest one: train on events before T1,
targets in [T1, T2) where T2 is the evaluation split (``tune.validation_days``
long), so choosing parameters here never looks at the test window; ``--window test``
scores the evaluation's own split (train before T2, targets in [T2, T2 + test_days)),
for the final report only. The channel is fitted once per grid point on the
training part and recommends ``max(eval.ks)`` candidates to the target users;
Recall, HitRate, NDCG and Coverage are the evaluation's (:func:`recall.evaluation.metrics`).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_grid(items: list[str]) -> dict[str, list]:
    grid = {}
    for item in items:
        key, values = item.split("=", 1)
        grid[key] = tomllib.loads(f"v = [{values}]")["v"]  # a TOML array without its brackets
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", type=Path, required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--grid", action="append", default=[],
                        help='param=v1,v2,... (TOML values, e.g. top_k=50,100 or dtype="float32")')
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    parser.add_argument("--window", choices=["validation", "test"], default="validation")
    args = parser.parse_args()

    import polars as pl

    from recall import schema as S
    from recall.channels import get_channel
    from recall.config import load_config
    from recall.context import TrainData
    from recall.evaluation import evaluation_targets, metrics, split_data
    from recall.pipeline import load_data
    from recall.split import REPEAT
    from recall.tuning import validation_split, validation_windows

    cfg = load_config(args.config, args.overrides)
    data = load_data(cfg)
    if args.window == "validation":
        t1, t2 = validation_windows(cfg, data)[0]
        split = validation_split(cfg, data, t1, t2)
        train, targets = split.train, split.targets
        where = f"validation [{t1}, {t2})"
    else:
        cut = split_data(data, cfg.eval)
        t2 = cut.ts
        train = TrainData.build(cut.train, now=t2, triggers=cfg.triggers, seed=cfg.seed)
        targets = evaluation_targets(train, cut, cfg.eval)
        if cfg.eval.exclude_seen_targets:
            targets = targets.filter(~pl.col(REPEAT))
        targets = targets.select(S.USER, S.ITEM)
        where = f"test from {t2}"
    ks = sorted(set(cfg.eval.ks))
    users = train.user_rows(targets[S.USER])
    n_items = train.engaged()[S.ITEM].n_unique()
    cls = get_channel(args.channel)
    base = cfg.channels.get(args.channel) or cls.Params()
    grid = parse_grid(args.grid)
    print(f"{args.config} {args.channel} on the {where}: {targets.height:,} targets of "
          f"{targets[S.USER].n_unique():,} users ({users.size:,} with training history)", file=sys.stderr)
    keys = list(grid)
    head = " | ".join(keys) if keys else "params"
    cols = " | ".join(f"R@{k}" for k in ks)
    print(f"| {head} | {cols} | NDCG@{ks[-1]} | coverage@{ks[-1]} | fit s |")
    print("|" + "---|" * (len(keys or [1]) + len(ks) + 3))
    for values in itertools.product(*grid.values()):
        params = cls.Params.model_validate({**base.model_dump(), **dict(zip(keys, values))})
        started = time.perf_counter()
        channel = cls(params).fit(train)
        seconds = time.perf_counter() - started
        candidates = channel.recommend(train, max(ks), users=users)
        scores = metrics(candidates.filter(pl.col(S.RANK) <= max(ks)), targets, ks, n_items)
        shown = " | ".join(str(v) for v in values) if keys else "config"
        print(f"| {shown} | " + " | ".join(f"{scores[k]['recall']:.4f}" for k in ks)
              + f" | {scores[ks[-1]]['ndcg']:.4f} | {scores[ks[-1]]['coverage']:.3f} | {seconds:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
