"""Walk corpus sizing (issue 15): per node (walks_per_node) vs per transition, time and Recall@200 side by side.

Usage::

    .venv/bin/python bench/bench_walk_corpus.py [--datasets ml-100k,taobao-84k] \
        [--channels deepwalk,node2vec,eges] [--sizings node:10,transition:1.0] [--validation]

Per dataset: the config's evaluation split (``configs/ml-100k.toml`` for
ml-100k, ``configs/default.toml`` for the others, time protocol), then every
channel fitted under every sizing, alternating, on the same training data:
corpus walks and tokens, fit seconds (walks + training + faiss + i2i) and the
channel's Recall@200 on the test targets (new items, as ``recall eval``).
``--validation`` evaluates on the window before the test window instead (the
split moved back by ``eval.test_days``): choose settings there, report on test.
``--windows N`` (with ``--validation``) pools the N windows before the test
window: each is fitted and scored on its own, and Recall@200 is the mean over
all their target users (a small log's single window holds a handful of hits).
Sizings: ``node:N`` is N walks from every item with an out-edge (the old
default, N = 10), ``transition:C`` is C walks per session transition
(``walks_per_transition``), ``default`` the config's settings as they are
(also on an older checkout, for before/after runs); ``key=value`` pairs after a ``/`` override other
channel settings (``transition:1.0/min_walks=20000``, ``default/trainer=gensim``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = {"ml-100k": ("data/imported/ml-100k", "configs/ml-100k.toml"),
        "taobao-84k": ("data/imported/taobao84k", "configs/default.toml"),
        "sample": ("data/sample", "configs/default.toml")}


def sizing_update(text: str) -> dict:
    head, *rest = text.split("/")
    if head == "default":  # the config's sizing, other settings overridden (default/trainer=gensim)
        update = {}
    else:
        kind, value = head.split(":")
        update = ({"walks_per_node": int(value)} if kind == "node"
                  else {"walks_per_node": None, "walks_per_transition": float(value)})
    for pair in rest:
        key, raw = pair.split("=")
        update[key] = type_of(raw)
    return update


def type_of(raw: str):
    if raw.startswith("["):  # a list, e.g. side_columns=[] or side_columns=["category_id"]
        return json.loads(raw)
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(raw, raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="ml-100k,taobao-84k")
    parser.add_argument("--channels", default="deepwalk,node2vec,eges")
    parser.add_argument("--sizings", default="node:10,transition:1.0")
    parser.add_argument("--validation", action="store_true", help="score the window before the test window")
    parser.add_argument("--windows", type=int, default=1, help="with --validation: pool this many windows")
    args = parser.parse_args()

    import polars as pl

    from recall import schema as S
    from recall.config import load_config
    from recall.context import TrainData
    from recall.evaluation import evaluation_targets, metrics, split_data
    from recall.split import REPEAT
    from recall.io import load_dataset
    from recall.pipeline import fit_model

    rows = []
    for name in args.datasets.split(","):
        folder, config = DATA[name]
        cfg = load_config(ROOT / config)
        data = load_dataset(ROOT / folder)
        splits = []
        for _ in range(args.windows if args.validation else 1):
            if args.validation:
                data = split_data(data, cfg.eval).train
            splits.append(split_data(data, cfg.eval))
        for sizing in args.sizings.split(","):
            for channel in args.channels.split(","):
                params = cfg.channels[channel].model_copy(update=sizing_update(sizing))
                run_cfg = cfg.model_copy(update={"channels": {**cfg.channels, channel: params}})
                walks = tokens = users = 0
                seconds = recall_sum = 0.0
                for split in splits:
                    # A fresh TrainData per fit: the walk corpus cache must not carry over between contenders.
                    train = TrainData.build(split.train, now=split.ts, triggers=cfg.triggers, seed=cfg.seed)
                    pairs = evaluation_targets(train, split, cfg.eval)
                    targets = pairs.filter(~pl.col(REPEAT)).select(S.USER, S.ITEM)
                    started = time.perf_counter()
                    out = fit_model(channel, run_cfg, train, 200)
                    seconds += time.perf_counter() - started
                    corpora = [slot.value for key, slot in train._shared.items() if key[0] == "walk corpus"]
                    walks += sum(c.walks.shape[0] for c in corpora)
                    tokens += sum(c.tokens for c in corpora)
                    n_users = targets[S.USER].n_unique()
                    recall_sum += metrics(out.candidates, targets, [200], train.n_items)[200]["recall"] * n_users
                    users += n_users
                recall = recall_sum / max(users, 1)
                rows.append((name, channel, sizing, walks, tokens, seconds, recall, users))
                print(f"{name} {channel} {sizing}: {walks:,} walks, {tokens:,} tokens, {seconds:.1f}s, "
                      f"R@200 {recall:.4f} over {users:,} users", file=sys.stderr, flush=True)
    command = "python bench/bench_walk_corpus.py " + " ".join(sys.argv[1:])
    window = f" ({args.windows} validation windows pooled)" if args.validation and args.windows > 1 else (
        " (validation window)" if args.validation else "")
    print(f"\n`{command.strip()}`{window}\n")
    print("| dataset | channel | sizing | walks | tokens | fit seconds | Recall@200 | target users |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name, channel, sizing, walks, tokens, seconds, recall, users in rows:
        print(f"| {name} | {channel} | {sizing} | {walks:,} | {tokens:,} | {seconds:.1f} | {recall:.4f} | {users:,} |")


if __name__ == "__main__":
    main()
