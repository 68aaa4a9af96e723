"""Embedding channels on one item graph: walks vs pecanpy, skip-gram tokens/s, faiss build and query.

Usage::

    .venv/bin/python bench/bench_embeddings.py [--repeat 3] [--walks-per-node 10] [--walk-length 80]
        [--pecanpy /tmp/pecan/bin/python] [--workers 2] [--walks-only]

The graph is the session item graph (1-hour sessions, ``recall.graph.item_graph``)
of the 5M-event synthetic log that ``bench/bench_itemcf.py`` caches under
``bench/out/`` (50k users, 20k items, 14 days, seed 0).

**Walks vs pecanpy.** pecanpy pins numpy < 2, so it lives in a throwaway venv::

    python3 -m venv /tmp/pecan && /tmp/pecan/bin/pip install pecanpy

and runs as a subprocess on the same graph written as a weighted, directed edge
list. The two sides do the same work, measured the same way:

- the same walks: ``walks_per_node`` walks from every node with an edge (pecanpy's
  node set), each of ``walk_length`` moves (pecanpy's ``walk_length`` counts moves,
  so ours are asked for ``walk_length + 1`` nodes), DeepWalk-style (p = q = 1) and
  Node2Vec (p = 0.5, q = 2);
- steps are the moves actually taken on both sides (a walk that reaches a dead
  end stops early);
- both use the 2 cores: pecanpy's numba ``prange`` loop on its default thread
  count (reported), ours ``--workers`` threads;
- warm-ups are excluded on both sides: a walk from 64 nodes on the same graph
  runs right before each timed call (on pecanpy's side it compiles the numba
  loop, specific to the graph's ``move_forward`` closure; on ours it runs the same
  code once, after pecanpy's process had the cores and caches). Reading the edge list (and building its
  CSR) is excluded on its side, as our CSR is built before the timed call too;
  our sampling tables (alias records, the edge hash set) are built inside our
  timed call (also reported alone). SparseOTF has no preprocessing;
  PreCompFirstOrder's alias tables (and their JIT) are excluded from its time;
- the timed call returns the walks as an integer matrix on both sides
  (pecanpy's ``_random_walks``, what ``simulate_walks`` runs before mapping
  indices to strings).

SparseOTF (second-order transition probabilities computed on the fly at every
step, also for p = q = 1) is the comparison the issue's targets are set
against; for DeepWalk, pecanpy's fastest first-order mode (PreCompFirstOrder:
numba alias tables) is shown for reference. The contenders alternate (ours,
pecanpy, ours, ...) ``--repeat`` times and the median rate is reported, with
every run's rate, the per-pair ratios, and steps per CPU-second (process CPU
time over the timed call; less sensitive to other load on the machine than
wall time, though not immune: caches are shared).

**Skip-gram.** gensim Word2Vec (sg=1, negative 5, window 5, dim 64) over DeepWalk
walks: tokens (walk nodes x epochs) per second of training, 1 and 2 workers.

**faiss.** Index build and query time for the i2i table (top-101: the item
itself plus 100 neighbours) of every item of the learned vectors, exact
(IndexFlatIP) vs HNSW (M = 32, efSearch raised to k), and for 10k queries on
200k clustered random vectors (64-d); HNSW's recall against exact is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

PECANPY_SCRIPT = r"""
import json, sys, time
import numpy as np
from numba_progress import ProgressBar
from pecanpy import pecanpy

path, mode, p, q, num_walks, walk_length, seed = sys.argv[1:8]
p, q, num_walks, walk_length, seed = float(p), float(q), int(num_walks), int(walk_length), int(seed)
started = time.perf_counter()
g = getattr(pecanpy, mode)(p=p, q=q, workers=2, verbose=False, random_state=seed)
g.read_edg(path, weighted=True, directed=True, delimiter="\t")
load = time.perf_counter() - started
started = time.perf_counter()
g._preprocess_transition_probs()  # nothing for SparseOTF; alias tables (and their JIT) for PreCompFirstOrder
preprocess = time.perf_counter() - started
move_forward, has_nbrs = g.get_move_forward(), g.get_has_nbrs()

def walk(starts):
    # What simulate_walks runs, minus the final mapping of indices to strings.
    with ProgressBar(total=starts.size, disable=True) as progress:
        return g._random_walks(starts.size, walk_length, seed, starts, has_nbrs, move_forward, progress)

started = time.perf_counter()
walk(np.arange(min(64, g.num_nodes), dtype=np.uint32))  # numba compiles here, for this graph's move_forward
compile_seconds = time.perf_counter() - started
starts = np.concatenate([np.arange(g.num_nodes, dtype=np.uint32)] * num_walks)
np.random.seed(seed)
np.random.shuffle(starts)
started, cpu = time.perf_counter(), time.process_time()
mat = walk(starts)
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
import numba
# Column -1 holds each walk's node count (the start + walk_length moves when it does not stop).
print(json.dumps({"load_seconds": load, "preprocess_seconds": preprocess, "compile_seconds": compile_seconds,
                  "seconds": seconds, "cpu_seconds": cpu, "steps": int((mat[:, -1].astype(np.int64) - 1).sum()),
                  "walks": int(starts.size), "nodes": int(g.num_nodes), "edges": int(g.num_edges),
                  "threads": numba.get_num_threads()}))
"""


def build_graph():
    from bench_itemcf import ensure_data

    from recall.context import TrainData
    from recall.graph import GraphParams, graph_stats, item_graph
    from recall.io import load_dataset

    data_dir = ensure_data(50_000, 20_000, 14, 0)
    train = TrainData.build(load_dataset(data_dir))
    started = time.perf_counter()
    graph = item_graph(train, GraphParams())
    seconds = time.perf_counter() - started
    return train, graph, graph_stats(graph), seconds


def write_edge_list(graph, path: Path) -> None:
    coo = graph.tocoo()
    with open(path, "w") as handle:
        for row, col, weight in zip(coo.row.tolist(), coo.col.tolist(), coo.data.tolist()):
            handle.write(f"{row}\t{col}\t{weight:g}\n")


def ours(graph, p: float, q: float, walks_per_node: int, walk_length: int, seed: int, workers: int) -> dict:
    """Our walks from every node with an edge; ``walk_length`` moves, as pecanpy's ``walk_length``.

    Timed from the CSR matrix to the walks array, building the sampling tables included.
    """
    from recall.walks import Sampler, deepwalk_walks, node2vec_walks, walk_steps

    active = np.flatnonzero((np.diff(graph.indptr) > 0) | (np.bincount(graph.indices, minlength=graph.shape[0]) > 0))

    def walk(starts: np.ndarray, passes: int) -> np.ndarray:
        if p == 1 and q == 1:
            return deepwalk_walks(graph, passes, walk_length + 1, seed, start_nodes=starts, workers=workers)
        return node2vec_walks(graph, passes, walk_length + 1, p, q, seed, start_nodes=starts, workers=workers)

    # The same warm-up as pecanpy's side: a walk from 64 nodes right before the timed call
    # (here it runs the same code once after pecanpy's process had the cores and caches).
    walk(active[:64], 1)
    started, cpu = time.perf_counter(), time.process_time()
    walks = walk(active, walks_per_node)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    # The tables alone, for the record (already inside ``seconds``).
    started = time.perf_counter()
    sampler = Sampler.of(graph)
    if p != 1 or q != 1:
        sampler.walk_records
    tables = time.perf_counter() - started
    return {"seconds": seconds, "cpu_seconds": cpu, "tables_seconds": tables, "steps": walk_steps(walks),
            "walks": int(walks.shape[0]), "walks_array": walks}


def pecanpy_run(python: str, mode: str, edges: Path, p: float, q: float, walks_per_node: int, walk_length: int,
                seed: int) -> dict:
    out = subprocess.run([python, "-c", PECANPY_SCRIPT, str(edges), mode, str(p), str(q), str(walks_per_node),
                          str(walk_length), str(seed)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# (label, p, q, pecanpy modes): SparseOTF is the comparison the targets are set against;
# PreCompFirstOrder (alias tables for first-order walks, numba) is pecanpy's fastest
# DeepWalk mode, shown for reference.
WALKERS = (("DeepWalk (p = q = 1)", 1.0, 1.0, ("SparseOTF", "PreCompFirstOrder")),
           ("Node2Vec (p = 0.5, q = 2)", 0.5, 2.0, ("SparseOTF",)))


def bench_walks(graph, args) -> tuple[list[dict], np.ndarray]:
    rows, dw_walks = [], None
    with tempfile.TemporaryDirectory() as tmp:
        edges = Path(tmp) / "graph.edg"
        write_edge_list(graph, edges)
        for label, p, q, modes in WALKERS:
            mine, theirs = [], {mode: [] for mode in modes} if args.pecanpy else {}
            for rep in range(args.repeat):
                # Alternate the contenders so that other load on the machine hits both alike.
                run = ours(graph, p, q, args.walks_per_node, args.walk_length, seed=rep, workers=args.workers)
                if p == 1 and dw_walks is None:
                    dw_walks = run["walks_array"]
                mine.append(run)
                line = f"  {label} rep {rep}: ours {run['steps'] / run['seconds'] / 1e6:.2f} M steps/s"
                for mode in theirs:
                    theirs[mode].append(pecanpy_run(args.pecanpy, mode, edges, p, q, args.walks_per_node,
                                                    args.walk_length, seed=rep))
                    last = theirs[mode][-1]
                    line += f", pecanpy {mode} {last['steps'] / last['seconds'] / 1e6:.3f} M steps/s"
                print(line, file=sys.stderr)
            base = {"walker": label, "walks": mine[0]["walks"], "ours_steps": mine[0]["steps"],
                    "ours_seconds": statistics.median(r["seconds"] for r in mine),
                    "ours_tables": statistics.median(r["tables_seconds"] for r in mine),
                    "ours_rates": [r["steps"] / r["seconds"] for r in mine],
                    "ours_cpu_rate": statistics.median(r["steps"] / r["cpu_seconds"] for r in mine)}
            base["ours_rate"] = statistics.median(base["ours_rates"])
            for mode, runs in theirs.items() or [(None, [])]:
                row = dict(base, mode=mode)
                if runs:
                    row.update(pecanpy_steps=runs[0]["steps"],
                               pecanpy_seconds=statistics.median(r["seconds"] for r in runs),
                               pecanpy_prep=statistics.median(r["load_seconds"] + r["preprocess_seconds"]
                                                              for r in runs),
                               pecanpy_compile=statistics.median(r["compile_seconds"] for r in runs),
                               pecanpy_threads=runs[0]["threads"],
                               pecanpy_rates=[r["steps"] / r["seconds"] for r in runs],
                               pecanpy_cpu_rate=statistics.median(r["steps"] / r["cpu_seconds"] for r in runs))
                    row["pecanpy_rate"] = statistics.median(row["pecanpy_rates"])
                    row["ratio"] = row["ours_rate"] / row["pecanpy_rate"]
                    row["cpu_ratio"] = row["ours_cpu_rate"] / row["pecanpy_cpu_rate"]
                    row["paired"] = [a["steps"] / a["seconds"] / (b["steps"] / b["seconds"]) for a, b in zip(mine, runs)]
                rows.append(row)
    return rows, dw_walks


def bench_skipgram(walks: np.ndarray, n_items: int, args) -> tuple[list[dict], np.ndarray, np.ndarray]:
    from recall.embedding import EmbeddingParams, skipgram
    from recall.walks import walks_to_sentences

    # A slice of the walks keeps the run short; tokens/s hardly depends on corpus size.
    sentences = walks_to_sentences(walks[: args.skipgram_walks])
    tokens = sum(len(s) for s in sentences)
    rows, vectors, mask = [], None, None
    for workers in (1, 2):
        params = EmbeddingParams(dim=64, epochs=args.epochs, workers=workers)
        started = time.perf_counter()
        v, m = skipgram(sentences, params, seed=0, n_items=n_items)
        seconds = time.perf_counter() - started
        rows.append({"workers": workers, "tokens": tokens * args.epochs, "seconds": seconds,
                     "rate": tokens * args.epochs / seconds, "items": int(m.sum())})
        if vectors is None:
            vectors, mask = v, m
    return rows, vectors, mask


def bench_faiss(vectors: np.ndarray, mask: np.ndarray, label: str, k: int = 100,
                queries: int | None = None) -> list[dict]:
    """Build exact and HNSW indexes; time top-k for every item (or a sample of ``queries`` items)."""
    from recall.embedding import EmbeddingParams, VectorIndex

    items = np.flatnonzero(mask)
    asked = items if queries is None else np.random.default_rng(0).choice(items, queries, replace=False)
    rows, exact_found = [], None
    for ann in ("exact", "hnsw"):
        params = EmbeddingParams(ann=ann, hnsw_m=32, top_k=k)
        started = time.perf_counter()
        index = VectorIndex.build(vectors[items], items, params)
        build = time.perf_counter() - started
        started = time.perf_counter()
        found = np.concatenate([index.search(vectors[asked[lo:lo + params.query_block]], k + 1)[1]
                                for lo in range(0, asked.size, params.query_block)])
        query = time.perf_counter() - started
        row = {"vectors": label, "items": int(items.size), "queries": int(asked.size), "index": ann,
               "build_seconds": build, "query_seconds": query, "queries_per_second": asked.size / query}
        if ann == "exact":
            exact_found = found
        else:
            hits = sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), exact_found.tolist()))
            row["recall"] = hits / exact_found.size
        rows.append(row)
    return rows


def clustered_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    from recall.embedding import normalise_rows

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // 50, dim)).astype(np.float32)
    return normalise_rows(centres[rng.integers(0, centres.shape[0], n)]
                          + 0.6 * rng.normal(size=(n, dim)).astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--walks-per-node", type=int, default=10)
    parser.add_argument("--walk-length", type=int, default=80)
    parser.add_argument("--skipgram-walks", type=int, default=40_000, help="walks fed to gensim")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--faiss-items", type=int, default=200_000)
    parser.add_argument("--faiss-queries", type=int, default=10_000, help="queries on the random vectors")
    parser.add_argument("--pecanpy", default="/tmp/pecan/bin/python",
                        help="python of a venv with pecanpy installed ('' to skip)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="threads of our walkers")
    parser.add_argument("--walks-only", action="store_true", help="skip the skip-gram and faiss parts")
    args = parser.parse_args()
    if args.pecanpy and not Path(args.pecanpy).exists():
        print(f"no {args.pecanpy}: create it with 'python3 -m venv /tmp/pecan && /tmp/pecan/bin/pip install "
              "pecanpy', or pass --pecanpy ''", file=sys.stderr)
        sys.exit(1)

    train, graph, stats, graph_seconds = build_graph()
    walk_rows, walks = bench_walks(graph, args)
    sg_rows, faiss_rows = [], []
    if not args.walks_only:
        sg_rows, vectors, mask = bench_skipgram(walks, train.n_items, args)
        faiss_rows = bench_faiss(vectors, mask, "DeepWalk vectors")
        faiss_rows += bench_faiss(clustered_vectors(args.faiss_items, 64), np.ones(args.faiss_items, bool),
                                  f"{args.faiss_items // 1000}k clustered random", queries=args.faiss_queries)

    print(f"Command: `.venv/bin/python bench/bench_embeddings.py --repeat {args.repeat} --walks-per-node "
          f"{args.walks_per_node} --walk-length {args.walk_length} --workers {args.workers}"
          f"{' --walks-only' if args.walks_only else ''}`; {os.cpu_count()} cores, load average at the end "
          f"{os.getloadavg()[0]:.1f} (1 min) / {os.getloadavg()[1]:.1f} (5 min).\n")
    print(f"Graph: {train.events.height:,} events -> {stats['nodes']:,} items with edges, {stats['edges']:,} "
          f"directed edges (mean out-degree {stats['mean_out_degree']:.1f}, max {stats['max_out_degree']}, "
          f"{stats['dead_ends']} dead ends, {stats['weakly_connected']} weak components), built in "
          f"{graph_seconds:.2f} s.\n")
    print("| walker | pecanpy mode | walks | moves (ours / pecanpy) | ours s (tables s) | ours M steps/s "
          "(runs) | pecanpy s | pecanpy M steps/s (runs) | ours / pecanpy (paired runs) | per CPU-second: "
          "ours / pecanpy M steps | pecanpy read + prep, compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")

    def runs(rates):
        return ", ".join(f"{rate / 1e6:.1f}" for rate in rates)

    for r in walk_rows:
        ours_cells = (f"{r['ours_seconds']:.3f} ({r['ours_tables']:.3f}) | {r['ours_rate'] / 1e6:.1f} "
                      f"({runs(r['ours_rates'])})")
        if "ratio" in r:
            print(f"| {r['walker']} | {r['mode']} | {r['walks']:,} | {r['ours_steps']:,} / {r['pecanpy_steps']:,} | "
                  f"{ours_cells} | {r['pecanpy_seconds']:.2f} | {r['pecanpy_rate'] / 1e6:.2f} "
                  f"({runs(r['pecanpy_rates'])}) | **{r['ratio']:.1f}x** "
                  f"({', '.join(f'{x:.1f}' for x in r['paired'])}) | "
                  f"{r['ours_cpu_rate'] / 1e6:.1f} / {r['pecanpy_cpu_rate'] / 1e6:.2f} = {r['cpu_ratio']:.1f}x | "
                  f"{r['pecanpy_prep']:.2f}, {r['pecanpy_compile']:.1f} |")
        else:
            print(f"| {r['walker']} | - | {r['walks']:,} | {r['ours_steps']:,} / - | {ours_cells} | - | - | - | "
                  f"{r['ours_cpu_rate'] / 1e6:.1f} / - | - |")
    if args.walks_only:
        return
    print("\n| skip-gram (gensim, dim 64, window 5, negative 5) | tokens | seconds | tokens/s |")
    print("|---|---|---|---|")
    for r in sg_rows:
        print(f"| {r['workers']} worker{'s' if r['workers'] > 1 else ''} | {r['tokens']:,} | {r['seconds']:.2f} | "
              f"{r['rate']:,.0f} |")
    print("\n| vectors | items | index | build s | queries (top-101) | query s | queries/s | recall@101 vs exact |")
    print("|---|---|---|---|---|---|---|---|")
    for r in faiss_rows:
        recall = f"{r['recall']:.3f}" if "recall" in r else "1 (exact)"
        print(f"| {r['vectors']} | {r['items']:,} | {r['index']} | {r['build_seconds']:.2f} | {r['queries']:,} | "
              f"{r['query_seconds']:.2f} | {r['queries_per_second']:,.0f} | {recall} |")


if __name__ == "__main__":
    main()
