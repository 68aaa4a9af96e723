"""Association: the vectorised channel kernel vs the same formula as a plain Python-dict loop.

Usage::

    .venv/bin/python bench/bench_association.py [--users 50000] [--items 20000] [--days 14] [--repeat 3]

Both build the full association table (defaults of ``AssociationParams``:
click/fav/cart/buy, window 5, base 0.8, direction 1.0 / 0.7, length
normalisation, top-100 per item, row max-normalisation) from the same
synthetic log (``recall.synth.synthesize``, cached under ``bench/out``):

- ``dict_loop``: ``brute_force_association`` of ``tests/test_association.py``,
  the test oracle, given the events as Python tuples (the conversion is not
  timed, which favours the dict loop), then truncated to the top 100 per row;
- ``vectorised``: ``Association(params).item_similarity(train)`` from the
  indexed ``TrainData`` (filtering, sorting, sessions and collapsing included).

Both run ``--repeat`` times, alternating (A B B A ...), and the medians are
reported: the machine may be shared, and alternation spreads the noise evenly.

The two tables are checked to be identical (same neighbours, scores within a
relative 1e-9, up to the order of tied neighbours) before the timings are printed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_itemcf import ensure_data  # noqa: E402  (shared cached synthetic logs)
sys.path.insert(0, str(ROOT))  # the oracle lives in tests/


def csr_rows(m) -> dict:
    """``{row: [(col, score), ...best first]}`` of a CSR matrix's positive entries."""
    out = {}
    for row in range(m.shape[0]):
        start, stop = m.indptr[row], m.indptr[row + 1]
        entries = [(int(j), float(s)) for j, s in zip(m.indices[start:stop], m.data[start:stop]) if s > 0]
        if entries:
            out[row] = sorted(entries, key=lambda e: (-e[1], e[0]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each contender, alternating (medians reported)")
    args = parser.parse_args()

    from recall import schema as S
    from recall.channels.association import Association, AssociationParams
    from recall.context import IIDX, UIDX, TrainData
    from recall.io import load_dataset
    from tests.test_association import assert_same_table, brute_force_association

    data = load_dataset(ensure_data(args.users, args.items, args.days, args.seed))
    train = TrainData.build(data)
    params = AssociationParams()

    started = time.perf_counter()
    rows = list(train.events.select(UIDX, IIDX, S.BEHAVIOR, S.TS).iter_rows())
    convert_seconds = time.perf_counter() - started

    def dict_loop():
        full = brute_force_association(rows, params, train.now)
        return full, {i: row[:params.top_k] for i, row in full.items()}

    def vectorised():
        return Association(params).item_similarity(train)

    # Alternate the contenders so machine noise (other jobs) hits both alike.
    timings: dict[str, list[float]] = {"dict_loop": [], "vectorised": []}
    for round_ in range(args.repeat):
        for name in ("dict_loop", "vectorised") if round_ % 2 == 0 else ("vectorised", "dict_loop"):
            started = time.perf_counter()
            result = dict_loop() if name == "dict_loop" else vectorised()
            timings[name].append(time.perf_counter() - started)
            print(f"round {round_ + 1} {name}: {timings[name][-1]:.3f}s", file=sys.stderr)
            if name == "dict_loop":
                full, expected = result
            else:
                table = result
    dict_seconds = statistics.median(timings["dict_loop"])
    ours = statistics.median(timings["vectorised"])

    assert_same_table(csr_rows(table), full, params.top_k)
    engaged = train.events.filter(train.events[S.BEHAVIOR].is_in(params.behaviors)).height
    command = shlex.join([".venv/bin/python", "bench/bench_association.py", *sys.argv[1:]])
    print(f"\n`{command}`\n")
    print(f"log: {train.events.height:,} events ({engaged:,} click/fav/cart/buy), {train.n_users:,} users, "
          f"{train.n_items:,} items; table: {table.nnz:,} (item, neighbour) pairs in {len(expected):,} rows, "
          f"identical in both; {os.cpu_count()} cores\n")
    print(f"| implementation | wall seconds (median of {args.repeat}, alternating) | speed-up |")
    print("|---|---:|---:|")
    print(f"| Python dict loop (test oracle) | {dict_seconds:.2f} | 1x |")
    print(f"| vectorised kernel | {ours:.3f} | {dict_seconds / ours:.0f}x |")
    print(f"\n(not timed: turning the events into Python tuples for the dict loop took {convert_seconds:.2f}s)")


if __name__ == "__main__":
    main()
