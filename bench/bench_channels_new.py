"""Swing, EASE and ALS next to itemCF: fit time and peak memory; Swing vs a pure-Python loop.

Usage::

    .venv/bin/python bench/bench_channels_new.py fit [--users 50000] [--items 20000] [--days 14] [--repeat 3]
    .venv/bin/python bench/bench_channels_new.py swing [--data data/imported/ml-100k] [--repeat 3]

``fit``: each contender fits on the benchmark log (``recall.synth.synthesize``,
cached under ``bench/out``, the log of ``bench_itemcf.py``) in a fresh process,
with its section of ``configs/default.toml`` (enabled there or not; ``ease_20k``
is EASE with ``max_items = 20000``), and reports the fit's wall time, the
resident memory at the fit's start, its peak during the fit (sampled every 10 ms,
:class:`recall.meter.StageMeter`) and the process's peak; ``load only`` is the
floor every process pays (loading the log peaks above what stays resident). Contenders
alternate (A B C D, D C B A, ...) and medians are reported.

``swing``: the Swing i2i table (every neighbour kept, not normalised, users with
at least 2 items) three ways on a small log (``--data``, e.g. the imported
ml-100k, whose users overlap a lot; else a synthetic log of ``--users`` x
``--items``), each ``--repeat`` times, alternating:

- ``python_loop``: the test oracle (``tests/test_swing.py``): for each item, a
  loop over pairs of its users, a set intersection per pair (events given as a
  polars frame; building the Python sets is timed, it is part of that method);
- ``per_item``: the same per-item structure vectorised inside each item (a
  Python loop over items only): the item's users' overlaps from one sparse
  product, then their pair rows ``x_u * x_v`` weighted and summed; a user pair
  is rebuilt for every item it shares (Flink ML's loop order);
- ``pair_kernel``: the channel's kernel, ``Z_s^T diag(c) Z`` over the distinct
  user pairs (each built once), item blocks on threads.

The three tables are asserted equal (same neighbours, scores within 1e-9
relative) before the timings are printed.
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
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))  # the oracle lives in tests/

from bench_itemcf import ensure_data  # noqa: E402  (shared cached synthetic logs)

# Contender -> (channel, overrides of its configs/default.toml section).
FIT_CONTENDERS = {"load only": (None, {}), "itemcf": ("itemcf", {}), "swing": ("swing", {}),
                  "ease": ("ease", {}), "ease_20k": ("ease", {"max_items": 20_000}), "als": ("als", {})}
SWING_CONTENDERS = ("python_loop", "per_item", "pair_kernel")


def measure_fit(name: str, data_dir: Path) -> dict:
    """Fit one channel once with the default configuration's parameters; seconds and peak RSS."""
    from recall.channels import get_channel
    from recall.config import load_config
    from recall.context import TrainData
    from recall.io import load_dataset
    from recall.meter import StageMeter

    cfg = load_config(ROOT / "configs" / "default.toml")
    data = load_dataset(data_dir)
    train = TrainData.build(data, triggers=cfg.triggers, seed=cfg.seed)
    train.interactions, train.trigger_matrix  # shared by every channel: built before timing
    out = {"contender": name, "events": data.events.height, "users": train.n_users, "items": train.n_items,
           "engaged_pairs": int(train.interactions.nnz)}
    channel_name, overrides = FIT_CONTENDERS[name]
    if channel_name is not None:
        params = cfg.channels[channel_name].model_copy(update={"enabled": True, **overrides})
        channel = get_channel(channel_name)(params)
        meter = StageMeter(interval=0.01)
        with meter.stage("fit"):
            channel.fit(train)
        stage = meter.report()["stages"]["fit"]
        out.update(seconds=stage["seconds"], fit_start_mib=stage["start_rss_mib"],
                   fit_peak_mib=stage["peak_rss_mib"], facts=channel.facts())
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_fit(args) -> None:
    data_dir = ensure_data(args.users, args.items, args.days, args.seed)
    results: dict[str, list[dict]] = {c: [] for c in FIT_CONTENDERS}
    for round_ in range(args.repeat):
        for name in FIT_CONTENDERS if round_ % 2 == 0 else reversed(FIT_CONTENDERS):
            out = subprocess.run([sys.executable, __file__, "one-fit", name, "--data", str(data_dir)],
                                 check=True, capture_output=True, text=True, cwd=ROOT)
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {round_ + 1} {name}: {results[name][-1]}", file=sys.stderr)
    first = results["load only"][0]
    print(f"\nlog: {first['events']:,} events, {first['engaged_pairs']:,} engaged (user, item) pairs, "
          f"{first['users']:,} users, {first['items']:,} items; {os.cpu_count()} cores; "
          f"median of {args.repeat} alternating runs\n")
    print("| contender | fit seconds (median) | vs itemcf | RSS at fit start MiB | peak RSS in fit MiB | "
          "added by fit MiB | process peak MiB | facts |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    base = statistics.median(r["seconds"] for r in results["itemcf"])
    for name, runs in results.items():
        rss = max(r["peak_rss_mib"] for r in runs)
        if name == "load only":
            print(f"| load only | | | | | | {rss:.0f} | |")
            continue
        median = statistics.median(r["seconds"] for r in runs)
        start = min(r["fit_start_mib"] for r in runs)
        peak = max(r["fit_peak_mib"] for r in runs)
        added = max(r["fit_peak_mib"] - r["fit_start_mib"] for r in runs)
        print(f"| {name} | {median:.2f} | {median / base:.1f}x | {start:.0f} | {peak:.0f} | {added:.0f} | "
              f"{rss:.0f} | {runs[0]['facts'] or ''} |")


# ----------------------------------------------------------------------------- Swing three ways

def per_item_swing(x, p):
    """Swing with a Python loop over items, vectorised within each item (no sampling)."""
    import numpy as np
    import scipy.sparse as sp

    from recall.channels.swing import user_weights

    weights = user_weights(x, p)
    by_item = sp.csc_matrix(x)
    rows = []
    for item in range(x.shape[1]):
        users = by_item.indices[by_item.indptr[item]:by_item.indptr[item + 1]]
        if users.size < 2:
            rows.append(sp.csr_matrix((1, x.shape[1])))
            continue
        sub = x[users]
        overlap = (sub @ sub.T).toarray()
        a, b = np.triu_indices(users.size, 1)
        c = weights[users[a]] * weights[users[b]] / (p.alpha + overlap[a, b])
        row = sp.csr_matrix(c[None, :] @ sub[a].multiply(sub[b]))
        row[0, item] = 0
        rows.append(row)
    table = sp.vstack(rows, format="csr")
    table.eliminate_zeros()
    return table


def swing_tables(name: str, events, train, p):
    """``{item_id: {neighbor_id: score}}`` by one of the three methods, and its seconds."""
    from collections import defaultdict

    from recall.channels.swing import engagement, swing_similarity
    from tests.test_swing import brute_force_swing

    started = time.perf_counter()
    if name == "python_loop":
        table = brute_force_swing(events, p, train.now)
        seconds = time.perf_counter() - started
        return {i: dict(row) for i, row in table.items()}, seconds
    x = engagement(train, p)
    matrix = per_item_swing(x, p) if name == "per_item" else swing_similarity(x, p, train.seed)[0]
    seconds = time.perf_counter() - started
    out = defaultdict(dict)
    coo = matrix.tocoo()
    items = train.item_ids.to_numpy()
    for i, j, s in zip(coo.row, coo.col, coo.data):
        if s > 0:
            out[items[i]][items[j]] = float(s)
    return dict(out), seconds


def run_swing(args) -> None:
    import math

    from recall.channels.swing import SwingParams
    from recall.context import TrainData
    from recall.io import load_dataset

    data_dir = args.data or ensure_data(args.users, args.items, args.days, args.seed)
    data = load_dataset(data_dir)
    train = TrainData.build(data)
    p = SwingParams(min_user_items=2, top_k=train.n_items, normalize=False)
    events = data.events
    times = {c: [] for c in SWING_CONTENDERS}
    tables = {}
    for round_ in range(args.repeat):
        for name in SWING_CONTENDERS if round_ % 2 == 0 else reversed(SWING_CONTENDERS):
            tables[name], seconds = swing_tables(name, events, train, p)
            times[name].append(seconds)
            print(f"round {round_ + 1} {name}: {seconds:.2f}s", file=sys.stderr)
    reference = tables["python_loop"]
    for name in SWING_CONTENDERS[1:]:
        got = tables[name]
        assert set(got) == set(reference), name
        for i, row in reference.items():
            assert set(got[i]) == set(row), (name, i)
            assert all(math.isclose(got[i][j], s, rel_tol=1e-9) for j, s in row.items()), (name, i)
    pairs = sum(len(r) for r in reference.values())
    print(f"\nlog: {events.height:,} events, {train.n_users:,} users, {train.n_items:,} items; table: {pairs:,} "
          f"(item, neighbour) pairs in {len(reference):,} rows, identical in all three; {os.cpu_count()} cores\n")
    print(f"| implementation | wall seconds (median of {args.repeat}, alternating) | speed-up vs Python |")
    print("|---|---:|---:|")
    base = statistics.median(times["python_loop"])
    for name in SWING_CONTENDERS:
        median = statistics.median(times[name])
        print(f"| {name} | {median:.3f} | {base / median:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["fit", "swing", "one-fit"])
    parser.add_argument("name", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--users", type=int)
    parser.add_argument("--items", type=int)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, help="swing: an imported data folder instead of a synthetic log")
    args = parser.parse_args()
    if args.part == "one-fit":
        print(json.dumps(measure_fit(args.name, args.data), default=str))
    elif args.part == "fit":
        args.users, args.items = args.users or 50_000, args.items or 20_000
        run_fit(args)
    else:
        args.users, args.items = args.users or 5_000, args.items or 2_000
        run_swing(args)


if __name__ == "__main__":
    main()
