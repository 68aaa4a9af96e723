"""userCF fit: wall time and peak RSS on synthetic logs, blocked kernel vs the whole product at once.

Usage::

    .venv/bin/python bench/bench_usercf.py [--users 10000] [--items 5000] [--days 14] [--repeat 3]
    .venv/bin/python bench/bench_usercf.py --users 10000 50000 200000 --items 5000 20000 50000 --repeat 1

Each measurement runs in a fresh subprocess, so its peak RSS is its own; the
contenders alternate (A B A B ...) so machine noise hits both alike; the median
fit time is reported. "RSS before fit" is the resident set after loading the log
and building ``TrainData.interactions``; the high-water mark is then reset
(Linux ``/proc/self/clear_refs``) so "peak RSS in fit" is the fit's own peak, not
the loader's; "fit heap peak" is the tracemalloc peak of the fit (numpy and scipy
arrays, i.e. the kernel's working memory plus what it keeps).
Contenders, both giving the same top-50 IIF-cosine neighbours:

- ``usercf``: the channel as configured by default (blocks of at most
  ``user_block`` users and ``max_block_pairs`` co-user products, histogram top-K);
- ``whole_product``: ``X W X^T`` for all users at once, then one top-K, i.e. the
  full users x users co-occurrence matrix in memory (what the blocking avoids).

``recommend_seconds`` is the candidate stage (200 per user) of ``usercf``.
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

from bench_itemcf import ensure_data  # noqa: E402  (shared cached synthetic logs)
CONTENDERS = ("usercf", "whole_product")


def status_mib(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process from /proc (Linux), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Reset the high-water mark, so the next peak is the fit's own and not the loader's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def whole_product_fit(train, params):
    """The unblocked reference: one product over all users, then one top-K."""
    import numpy as np
    import scipy.sparse as sp

    from recall.channels.usercf import engagement_pairs
    from recall.context import IIDX, UIDX
    from recall.sparse import row_indices, top_k_per_row

    pairs = engagement_pairs(train, params)
    x = sp.csr_matrix((np.ones(pairs.height), (pairs[UIDX].to_numpy(), pairs[IIDX].to_numpy())),
                      shape=(train.n_users, train.n_items))
    counts = np.bincount(x.indices, minlength=x.shape[1]).astype(np.float64)
    weight = np.divide(1.0, np.log1p(counts), out=np.zeros_like(counts), where=counts > 0)
    full = sp.csr_matrix(x @ sp.diags(weight) @ x.T)
    n_u = np.diff(x.indptr).astype(np.float64)
    rows = row_indices(full)
    full.data = np.where(rows != full.indices, full.data / np.sqrt(n_u[rows] * n_u[full.indices]), 0.0)
    return top_k_per_row(full, params.top_k_users), full.nnz


def measure(contender: str, data_dir: Path, max_block_pairs: int | None) -> dict:
    from recall.channels.usercf import UserCF, UserCFParams
    from recall.context import TrainData
    from recall.io import load_dataset

    data = load_dataset(data_dir)
    train = TrainData.build(data)
    engaged = train.interactions.nnz
    import gc
    import tracemalloc

    gc.collect()
    before = status_mib("VmRSS")
    reset_peak_rss()
    tracemalloc.start()  # numpy and scipy arrays register with tracemalloc: the kernel's own heap
    params = UserCFParams() if max_block_pairs is None else UserCFParams(max_block_pairs=max_block_pairs)
    started = time.perf_counter()
    out = {"contender": contender}
    if contender == "usercf":
        channel = UserCF(params).fit(train)
        out["seconds"] = time.perf_counter() - started
        out["neighbour_pairs"] = int(channel.similarity_.nnz)
        out["fit_peak_rss_mib"] = status_mib("VmHWM")
        out["fit_heap_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        started = time.perf_counter()
        out["candidates"] = channel.recommend(train, 200).height
        out["recommend_seconds"] = time.perf_counter() - started
    else:
        similarity, full_nnz = whole_product_fit(train, params)
        out["seconds"] = time.perf_counter() - started
        out["neighbour_pairs"] = int(similarity.nnz)
        out["full_matrix_entries"] = int(full_nnz)
        out["fit_peak_rss_mib"] = status_mib("VmHWM")
        out["fit_heap_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    out.update(rss_before_mib=before, events=data.events.height, engaged_pairs=int(engaged),
               users=train.n_users, items=train.n_items)
    return out


def run_size(users: int, items: int, days: int, seed: int, repeat: int,
             max_block_pairs: int | None, contenders: tuple[str, ...]) -> dict[str, list[dict]]:
    data_dir = ensure_data(users, items, days, seed)
    results: dict[str, list[dict]] = {c: [] for c in contenders}
    for round_ in range(repeat):
        for contender in contenders if round_ % 2 == 0 else reversed(contenders):
            command = [sys.executable, __file__, "--one", contender, "--data", str(data_dir)]
            if max_block_pairs is not None:
                command += ["--max-block-pairs", str(max_block_pairs)]
            out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
            results[contender].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"{users} users, round {round_ + 1} {contender}: {results[contender][-1]['seconds']:.2f}s",
                  file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[10_000])
    parser.add_argument("--items", type=int, nargs="+", default=[5_000])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-block-pairs", type=int, help="override UserCFParams.max_block_pairs")
    parser.add_argument("--only", choices=CONTENDERS, help="run one contender only")
    parser.add_argument("--one", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.data, args.max_block_pairs)))
        return
    if len(args.items) != len(args.users):
        parser.error("give one --items value per --users value")
    print(f"{os.cpu_count()} cores; median of {args.repeat} alternating runs; RSS in MiB\n")
    print("| users | items | events | engaged pairs | contender | fit s | recommend s (n=200) | "
          "RSS before fit | peak RSS in fit | fit heap peak | users x users entries |")
    print("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for users, items in zip(args.users, args.items):
        results = run_size(users, items, args.days, args.seed, args.repeat, args.max_block_pairs,
                           (args.only,) if args.only else CONTENDERS)
        for contender, runs in results.items():
            first = runs[0]
            fit = statistics.median(r["seconds"] for r in runs)
            rec = (f"{statistics.median(r['recommend_seconds'] for r in runs):.2f}"
                   if "recommend_seconds" in first else "")
            peak = max(r["fit_peak_rss_mib"] for r in runs)
            before = min(r["rss_before_mib"] for r in runs)
            heap = max(r["fit_heap_peak_mib"] for r in runs)
            entries = first.get("full_matrix_entries", first["neighbour_pairs"])
            print(f"| {first['users']:,} | {first['items']:,} | {first['events']:,} | {first['engaged_pairs']:,} "
                  f"| {contender} | {fit:.2f} | {rec} | {before:.0f} | {peak:.0f} | {heap:.0f} "
                  f"| {entries:,} |", flush=True)


if __name__ == "__main__":
    main()
