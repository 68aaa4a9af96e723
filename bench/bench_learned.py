"""Fit time, peak memory and training throughput of the learned u2i channels (youtubednn, mind).

Usage::

    .venv/bin/python bench/bench_learned.py [--users 50000] [--items 20000] [--days 14] [--epochs N]
        [--channels youtubednn mind]

Each channel runs in a fresh subprocess on the cached synthetic log of
``bench/bench_itemcf.py`` (``recall.synth``; the defaults are the 5M-event log of
the other benchmarks): load and index the log, then ``fit`` (target extraction,
training, item and user vectors, faiss index) and ``recommend``
(``candidates_per_user + filters.reserve`` per user, as ``recall run`` does), with
the ``[channels.<name>]`` settings of ``configs/default.toml`` (``--epochs``
overrides the number of epochs). Throughput is training examples (one next-item
target with its history and negatives) per second of the training loop after its
first step (torch loads its optimiser machinery lazily on the first step). Peak RSS
is the whole process's (the loaded log included); "train heap peak" is the
tracemalloc peak during ``fit`` (numpy arrays; torch tensors are not traced).
Recall@200 on ml-100k and taobao-84k comes from ``bench/bench_quality.py
--channels all+learned`` (BENCHMARKS.md, issue 17).
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
sys.path.insert(0, str(ROOT))

from bench_itemcf import ensure_data  # noqa: E402  (shared cached synthetic logs)


def measure(name: str, data_dir: Path, epochs: int | None) -> dict:
    import tracemalloc

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
    params = cfg.channels[name]
    update = {"progress": False} | ({"epochs": epochs} if epochs else {})
    channel = get_channel(name)(params.model_copy(update=update))
    tracemalloc.start()
    started = time.perf_counter()
    channel.fit(train)
    fitted = time.perf_counter()
    heap_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    candidates = channel.recommend(train, cfg.candidates_per_user + cfg.filters.reserve)
    done = time.perf_counter()
    facts = channel.facts()
    return {"channel": name, "events": data.events.height, "users": train.n_users, "items": train.n_items,
            "load_seconds": round(load_seconds, 2), "fit_seconds": round(fitted - started, 1),
            "train_seconds": facts["train_seconds"], "recommend_seconds": round(done - fitted, 1),
            "examples": facts["examples"], "examples_per_second": facts["examples_per_second"],
            "epochs": facts["epochs"], "losses": facts["losses"], "candidate_rows": candidates.height,
            "train_heap_peak_mib": round(heap_peak), "side_fields": facts["side_fields"],
            "user_attributes": facts["user_attributes"],
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="override the configured epochs")
    parser.add_argument("--channels", nargs="+", default=["youtubednn", "mind"])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.data, args.epochs)))
        return
    data_dir = ensure_data(args.users, args.items, args.days, args.seed)
    results = []
    for name in args.channels:
        command = [sys.executable, __file__, "--one", name, "--data", str(data_dir)]
        if args.epochs:
            command += ["--epochs", str(args.epochs)]
        run = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(f"{name}: {results[-1]}", file=sys.stderr, flush=True)
    first = results[0]
    print(f"log: {first['events']:,} events, {first['users']:,} users, {first['items']:,} items; "
          f"{os.cpu_count()} cores, one torch thread\n")
    print("| channel | epochs | examples | train s | examples/s | fit s | recommend s | train heap peak MiB "
          "| peak RSS MiB | loss first -> last epoch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        print(f"| {r['channel']} | {r['epochs']} | {r['examples']:,} | {r['train_seconds']:.1f} | "
              f"{r['examples_per_second']:,} | {r['fit_seconds']:.1f} | {r['recommend_seconds']:.1f} | "
              f"{r['train_heap_peak_mib']:,} | {r['peak_rss_mib']:,} | {r['losses'][0]} -> {r['losses'][-1]} |")


if __name__ == "__main__":
    main()
