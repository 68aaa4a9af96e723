"""EGES / GES training throughput (skip-gram pairs per second) on the item graph of a synthetic log.

Usage::

    .venv/bin/python bench/bench_eges.py [--users 50000] [--items 20000] [--days 14] [--epochs 1]
        [--workers 1 2] [--batch-sizes 1024 4096] [--max-walks 0] [--ml100k] [--gensim] [--deepwalk]
        [--data data/imported/taobao84k]

The session item graph and its DeepWalk walks are built once with the default
``[channels.eges]`` settings of ``configs/default.toml`` (timed separately); then
each (channel, workers, batch size) trains ``--epochs`` passes over the same walks
and the same side information, alternating the contenders round by round. A
*pair* is one (centre, context) skip-gram pair with its ``negative`` negatives;
pairs/s covers the whole training loop (pair generation, down-sampling,
negative sampling, forward, backward, SparseAdam). ``--ml100k`` adds a full
``fit`` (graph, walks, training, faiss, i2i) of both channels on MovieLens-100K
with ``configs/ml-100k.toml``. ``--deepwalk`` adds the deepwalk channel's two
skip-gram trainers (:mod:`recall.sgns` and gensim) on the same walks with that
channel's settings; ``--data`` takes the walks of an imported dataset instead of
the synthetic log.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_itemcf import ensure_data  # noqa: E402  (shared cached synthetic logs, after the path insert)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--channels", nargs="+", default=["eges", "ges"])
    parser.add_argument("--gensim", action="store_true",
                        help="also gensim's skip-gram (Word2Vec sg=1, as the deepwalk channel) on the same walks")
    parser.add_argument("--deepwalk", action="store_true",
                        help="also the deepwalk channel's two trainers (recall.sgns and gensim) with its settings "
                             "(dim 32) on the same walks")
    parser.add_argument("--data", default="",
                        help="an imported dataset folder (e.g. data/imported/taobao84k) instead of the synthetic log")
    parser.add_argument("--reference", action="store_true",
                        help="also the autograd trainer the fast one replaced (tests/eges_reference.py)")
    parser.add_argument("--rounds", type=int, default=1, help="repetitions of every contender (best is kept)")
    parser.add_argument("--max-walks", type=int, default=0, help="train on the first N walks only (0: all)")
    parser.add_argument("--ml100k", action="store_true", help="also time a full fit on MovieLens-100K")
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.toml"),
                        help="config whose [channels.eges] settings are used (defaults where absent)")
    parser.add_argument("--ml-config", default=str(ROOT / "configs" / "ml-100k.toml"),
                        help="config of the MovieLens-100K fit")
    args = parser.parse_args()

    import numpy as np

    from recall.channels.eges import EGES, GES, side_info, train
    from recall.config import load_config
    from recall.context import TrainData
    from recall.corpus import WalkParams, walk_corpus
    from recall.embedding import skipgram
    from recall.graph import GraphParams, graph_stats, item_graph
    from recall.io import load_dataset
    from recall.sgns import train_vectors
    from recall.walks import walks_to_sentences

    sys.path.insert(0, str(ROOT))
    from tests import eges_reference

    classes = {"eges": EGES, "ges": GES}
    cfg = load_config(args.config)
    data_dir = Path(args.data) if args.data else ensure_data(args.users, args.items, args.days, args.seed)
    data = TrainData.build(load_dataset(data_dir), triggers=cfg.triggers, seed=cfg.seed)
    base = cfg.channels["eges"] if "eges" in cfg.channels else EGES.Params()
    started = time.perf_counter()
    graph = item_graph(data, GraphParams.of(base))
    graph_seconds = time.perf_counter() - started
    started = time.perf_counter()
    walks = walk_corpus(data, GraphParams.of(base),
                        WalkParams(**{k: getattr(base, k) for k in WalkParams.model_fields})).walks
    walk_seconds = time.perf_counter() - started
    if args.max_walks:
        walks = walks[np.random.default_rng(0).permutation(walks.shape[0])[:args.max_walks]]
    started = time.perf_counter()
    side = side_info(data.item_ids, data.items, base)
    side_seconds = time.perf_counter() - started
    stats = graph_stats(graph)

    results: dict[tuple, list] = {}
    gensim_runs: dict[int, list] = {}
    deepwalk_runs: dict[tuple, list] = {}
    for round_ in range(args.rounds):
        for name in args.channels:
            for workers in args.workers:
                for batch in args.batch_sizes:
                    params = classes[name].Params(**{**base.model_dump(), "attention": name == "eges",
                                                     "epochs": args.epochs, "workers": workers,
                                                     "batch_size": batch})
                    result = train(walks, side, params, data.seed)
                    results.setdefault((name, workers, batch), []).append(result)
                    print(f"round {round_ + 1} {name} workers={workers} batch={batch}: {result.pairs:,} pairs "
                          f"in {result.seconds:.1f}s", file=sys.stderr)
                    if args.reference:
                        result = eges_reference.train(walks, side, params, data.seed)
                        results.setdefault((f"{name} (autograd reference)", workers, batch), []).append(result)
                        print(f"round {round_ + 1} reference {name}: {result.pairs:,} pairs in "
                              f"{result.seconds:.1f}s", file=sys.stderr)
        if args.gensim:
            for workers in args.workers:
                params = base.model_copy(update={"epochs": args.epochs, "workers": workers})
                started = time.perf_counter()
                sentences = walks_to_sentences(walks)
                skipgram(sentences, params, data.seed, data.n_items)
                seconds = time.perf_counter() - started
                gensim_runs.setdefault(workers, []).append(seconds)
                print(f"round {round_ + 1} gensim workers={workers}: {seconds:.1f}s", file=sys.stderr)
        if args.deepwalk:
            deepwalk = cfg.channels["deepwalk"]
            for workers in args.workers:
                params = deepwalk.model_copy(update={"epochs": args.epochs, "workers": workers})
                result = train_vectors(walks, data.n_items, params, data.seed)
                deepwalk_runs.setdefault(("recall.sgns", workers), []).append((result.seconds, result.pairs,
                                                                               result.losses[-1]))
                started = time.perf_counter()
                skipgram(walks_to_sentences(walks), params, data.seed, data.n_items)
                seconds = time.perf_counter() - started
                deepwalk_runs.setdefault(("gensim", workers), []).append((seconds, result.pairs, None))
                print(f"round {round_ + 1} deepwalk workers={workers}: recall.sgns {result.seconds:.1f}s, "
                      f"gensim {seconds:.1f}s", file=sys.stderr)

    command = "python bench/bench_eges.py " + " ".join(sys.argv[1:])
    print(f"\n`{command.strip()}`\n")
    print(f"log: {data.events.height:,} events, {data.n_users:,} users, {data.n_items:,} items; graph "
          f"{stats['nodes']:,} nodes, {stats['edges']:,} edges (built in {graph_seconds:.2f}s); "
          f"{walks.shape[0]:,} walks x {walks.shape[1]} ({int((walks >= 0).sum()):,} tokens, walked in "
          f"{walk_seconds:.2f}s); side fields {side.fields} (vocab {side.vocab}, encoded in "
          f"{side_seconds:.2f}s); dim {base.dim}, window {base.window}, negative {base.negative}, "
          f"sample {base.sample}, {args.epochs} epoch(s)\n")
    tokens = int((walks >= 0).sum()) * args.epochs
    print("| trainer | threads | batch | pairs | train seconds | tokens/s | pairs/s | final loss |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for (name, workers, batch), runs in results.items():
        best = min(runs, key=lambda r: r.seconds)
        print(f"| {name} | {workers} | {batch} | {best.pairs:,} | {best.seconds:.1f} | {tokens / best.seconds:,.0f} | "
              f"{best.pairs / best.seconds:,.0f} | {best.losses[-1]:.3f} |")
    if gensim_runs:
        # gensim does not count pairs; with the same walks, window, shrinking and down-sampling it
        # trains on the same number in expectation as EGES (the first contender's count is used).
        pairs = next(iter(results.values()))[0].pairs if results else 0
        for workers, runs in gensim_runs.items():
            best = min(runs)
            print(f"| gensim skip-gram (ID only) | {workers} | - | ~{pairs:,} | {best:.1f} | {tokens / best:,.0f} | "
                  f"~{pairs / best:,.0f} | - |")

    if deepwalk_runs:
        print(f"\nThe deepwalk channel's trainers on the same walks (its settings: dim "
              f"{cfg.channels['deepwalk'].dim}, shared negatives {cfg.channels['deepwalk'].shared_negatives}); "
              f"gensim's pairs are the batched trainer's count (the same in expectation):\n")
        print("| trainer | threads | pairs | train seconds | tokens/s | pairs/s | final loss |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for (name, workers), runs in deepwalk_runs.items():
            seconds, pairs, loss = min(runs)
            print(f"| {name} | {workers} | {pairs:,} | {seconds:.1f} | {tokens / seconds:,.0f} | "
                  f"{pairs / seconds:,.0f} | {'-' if loss is None else f'{loss:.3f}'} |")

    if args.ml100k:
        ml_cfg = load_config(args.ml_config)
        ml = TrainData.build(load_dataset(ROOT / ml_cfg.data.dir), triggers=ml_cfg.triggers, seed=ml_cfg.seed)
        print(f"\nMovieLens-100K ({ml.events.height:,} events, {ml.n_items:,} items), full fit with "
              f"{args.ml_config}:\n")
        print("| channel | fit seconds | of which training | pairs | pairs/s | items with a vector | "
              "cold items with a vector | mean attention |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        for name in args.channels:
            params = ml_cfg.channels[name] if name in ml_cfg.channels else classes[name].Params()
            channel = classes[name](params)
            started = time.perf_counter()
            channel.fit(ml)
            seconds = time.perf_counter() - started
            cold = ~channel.trained_
            print(f"| {name} | {seconds:.1f} | {channel.train_seconds_:.1f} | {channel.pairs_:,} | "
                  f"{channel.pairs_ / channel.train_seconds_:,.0f} | {int(channel.has_vector_.sum()):,} | "
                  f"{int((channel.has_vector_ & cold).sum()):,} of {int(cold.sum()):,} | "
                  f"{channel.field_attention()} |")


if __name__ == "__main__":
    main()
