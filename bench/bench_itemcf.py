"""itemCF vs implicit's CosineRecommender on the same synthetic log, side by side in one run.

Usage::

    .venv/bin/python bench/bench_itemcf.py [--users 50000] [--items 20000] [--days 14] [--repeat 3]

Each measurement runs in a fresh subprocess (so peak RSS is its own), the
contenders alternate (A B A B ...) so machine noise hits both alike, and the
median wall time of the fit is reported with the ratio ours / implicit.
Contenders, all producing top-100 neighbours per item from the same events:

- ``implicit_cosine``: implicit.nearest_neighbours.CosineRecommender(K=100) on the
  binary user x item engagement matrix (implicit uses every core);
- ``itemcf_cosine``: our itemCF reduced to the same maths (no IUF, no time window);
- ``itemcf_iuf_decay``: our itemCF as configured by default (IUF + 7-day pair
  window + 72 h time decay), the production variant.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / "out"
CONTENDERS = ("implicit_cosine", "itemcf_cosine", "itemcf_iuf_decay")


def dataset_dir(users: int, items: int, days: int, seed: int) -> Path:
    return CACHE / f"synth-u{users}-i{items}-d{days}-s{seed}"


def ensure_data(users: int, items: int, days: int, seed: int) -> Path:
    path = dataset_dir(users, items, days, seed)
    if not (path / "events.parquet").exists():
        from recall.io import write_dataset
        from recall.synth import synthesize

        started = time.perf_counter()
        write_dataset(synthesize(users, items, days, seed), path)
        print(f"generated {path} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return path


def measure(contender: str, data_dir: Path) -> dict:
    """Fit one contender once; report fit seconds and this process's peak RSS."""
    import numpy as np

    from recall.channels.itemcf import ItemCF, ItemCFParams
    from recall.context import TrainData
    from recall.io import load_dataset

    data = load_dataset(data_dir)
    train = TrainData.build(data)
    matrix = train.interactions.astype(np.float64).tocsr()
    started = time.perf_counter()
    if contender == "implicit_cosine":
        from implicit.nearest_neighbours import CosineRecommender

        model = CosineRecommender(K=100)
        model.fit(matrix, show_progress=False)
        pairs = model.similarity.nnz
    else:
        params = (ItemCFParams(iuf=False, pair_window_hours=None, decay_half_life_hours=None,
                               alpha=0.5, normalize=False, top_k=100)
                  if contender == "itemcf_cosine" else ItemCFParams(top_k=100))
        pairs = ItemCF(params).item_similarity(train).nnz
    seconds = time.perf_counter() - started
    return {"contender": contender, "seconds": seconds, "pairs": int(pairs),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "events": data.events.height, "engaged_pairs": int(matrix.nnz),
            "users": train.n_users, "items": train.n_items}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.data)))
        return
    data_dir = ensure_data(args.users, args.items, args.days, args.seed)
    results: dict[str, list[dict]] = {c: [] for c in CONTENDERS}
    for round_ in range(args.repeat):
        for contender in CONTENDERS if round_ % 2 == 0 else reversed(CONTENDERS):
            out = subprocess.run([sys.executable, __file__, "--one", contender, "--data", str(data_dir)],
                                 check=True, capture_output=True, text=True, cwd=ROOT)
            results[contender].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {round_ + 1} {contender}: {results[contender][-1]['seconds']:.2f}s",
                  file=sys.stderr)
    first = results[CONTENDERS[0]][0]
    base = statistics.median(r["seconds"] for r in results["implicit_cosine"])
    print(f"\nlog: {first['events']:,} events, {first['engaged_pairs']:,} engaged (user, item) pairs, "
          f"{first['users']:,} users, {first['items']:,} items; {os.cpu_count()} cores; "
          f"median of {args.repeat} alternating runs\n")
    print("| contender | fit seconds (median) | ratio vs implicit | peak RSS MiB | i2i pairs |")
    print("|---|---:|---:|---:|---:|")
    for contender, runs in results.items():
        median = statistics.median(r["seconds"] for r in runs)
        print(f"| {contender} | {median:.2f} | {median / base:.2f}x | "
              f"{max(r['peak_rss_mib'] for r in runs):.0f} | {runs[0]['pairs']:,} |")


if __name__ == "__main__":
    main()
