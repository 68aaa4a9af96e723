"""The walk corpus of the graph-embedding channels, sized by the events rather than the catalogue.

DeepWalk as published starts ``walks_per_node`` walks from every node, so the
corpus (and every skip-gram channel's cost) grows with the catalogue: a sparse
log with many one-off items pays for millions of walks from nodes that carry
almost no signal (on the Taobao 84k log, 430,000 walks for 62,000 session
transitions). Here the walk starts follow the data instead:

* the budget is ``walks_per_transition`` walks per unit of out-strength (one
  session transition i -> j is one unit of weight of the item graph), at least
  ``min_walks`` in all, so the corpus grows with the events (``min_walks_per_item``
  adds a floor per item with out-edges, for sparse logs where one-off items
  carry the signal; ``floor_walk_length`` can cut those floor walks short,
  which on the Taobao 84k log halves the corpus but cost DeepWalk test recall,
  so they are full length by default);
* node v starts ``B s_v / S`` walks in expectation (``s_v`` its out-strength,
  ``S`` the total, ``B`` the budget): the integer part always, one more with
  the probability of the fractional part (seeded), so the starts are exactly
  proportional in expectation and reproducible;
* items with fewer than ``min_degree`` distinct out-neighbours start no walks of
  their own; they still appear on their predecessors' walks, and an item that
  ends up on no walk but has edges gets the weighted mean of its neighbours'
  vectors (:func:`neighbour_fill`; EGES uses its side information instead).

Setting ``walks_per_node`` restores the per-node sizing (every item with an
out-edge starts that many walks).

The corpus is built once per training data and settings and shared: DeepWalk
and EGES with the same graph and walk settings train on the very same walks
(:func:`walk_corpus` keeps it on the :class:`~recall.context.TrainData`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from recall.context import TrainData
from recall.graph import GraphParams, item_graph


class WalkParams(BaseModel):
    """How many walks, from where, and how long (mixed into the channels' params models)."""

    walks_per_transition: float = Field(
        0.5, gt=0, description="walks started per session transition (unit of out-strength) of the item graph: "
                               "the corpus grows with the events, not the catalogue")
    # 5,000: on the bundled sample's validation window (10,804 transitions) DeepWalk R@200 0.390 vs
    # 0.373 at 10,000, EGES 0.424 vs 0.419, Node2Vec 0.369 vs 0.373, at 0.6x the walks (BENCHMARKS.md).
    min_walks: int = Field(5_000, ge=1, description="walks in all at least (small logs)")
    # 4: on the Taobao 84k validation window DeepWalk's R@200 0.0051 (0.0015 without the floor,
    # 0.0054 with 10 walks per node) at 2.5x fewer walks than per node (BENCHMARKS.md, issue 15).
    min_walks_per_item: int = Field(4, ge=0, description="walks every item with at least min_degree "
                                                         "out-neighbours starts at least (sparse logs)")
    min_degree: int = Field(1, ge=1, description="items with fewer distinct out-neighbours start no walks of "
                                                 "their own (they get vectors from their neighbours)")
    walks_per_node: int | None = Field(None, ge=1, description="if set, the per-node sizing instead: this many "
                                                               "walks from every item with an out-edge")
    walk_length: int = Field(20, ge=2, description="items per walk, the start included")
    # None: cutting the floor walks to 6 items (the start and a skip-gram window of 5) halves the
    # Taobao 84k corpus and held pooled validation recall within a hit, but on the test window
    # DeepWalk's R@200 fell from 0.0073 to 0.0019 and Node2Vec's from 0.0054 to 0.0032 (BENCHMARKS.md):
    # on a sparse graph the floor walks are most of every item's context, not just their start's.
    floor_walk_length: int | None = Field(None, ge=2, description="items per walk of the walks started only to "
                                                                 "meet min_walks_per_item (None: walk_length); "
                                                                 "shorter is cheaper on sparse logs, at a cost")


@dataclass(frozen=True)
class WalkCorpus:
    """Walks (int32, -1 padded) on ``graph`` and the settings they came from."""

    graph: sp.csr_matrix
    walks: np.ndarray

    @property
    def tokens(self) -> int:
        return int((self.walks >= 0).sum())


def walk_starts(graph: sp.csr_matrix, p: WalkParams, seed: int) -> np.ndarray:
    """Start node of every walk (int64, shuffled), sized as the module docstring says."""
    return walk_plan(graph, p, seed)[0]


def walk_plan(graph: sp.csr_matrix, p: WalkParams, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Start node (int64) and length (int32) of every walk, shuffled together.

    A walk is ``walk_length`` long unless it was started only to meet
    ``min_walks_per_item`` (a floor walk): then ``floor_walk_length``.
    """
    graph = sp.csr_matrix(graph)
    degree = np.diff(graph.indptr)
    floor_walks = np.zeros(0, dtype=np.int64)
    if p.walks_per_node is not None:
        starts = np.tile(np.flatnonzero(degree > 0), p.walks_per_node)
    else:
        strength = np.zeros(graph.shape[0])
        rows = np.flatnonzero(degree > 0)
        if rows.size:
            strength[rows] = np.add.reduceat(graph.data.astype(np.float64), graph.indptr[rows])
        strength[degree < p.min_degree] = 0.0
        total = strength.sum()
        if total <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
        budget = max(p.walks_per_transition * float(graph.data.sum()), float(p.min_walks))
        expected = budget * strength / total
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x57A7,)))
        share = np.floor(expected).astype(np.int64)
        share += rng.random(expected.size) < expected - share
        counts = np.where(strength > 0, np.maximum(share, p.min_walks_per_item), 0)
        starts = np.repeat(np.arange(graph.shape[0], dtype=np.int64), counts)
        if (p.floor_walk_length or p.walk_length) < p.walk_length:
            # A node's first `share` walks are its share of the budget, the rest its floor walks.
            floor_walks = np.flatnonzero(np.arange(starts.size) - np.repeat(np.cumsum(counts) - counts, counts)
                                         >= np.repeat(share, counts))
    lengths = np.full(starts.size, p.walk_length, dtype=np.int32)
    lengths[floor_walks] = p.floor_walk_length or p.walk_length
    # Shuffled, so a hub's many walks are spread over the corpus (gensim's learning rate
    # decays along it) rather than trained back to back.
    order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x5EED,))).permutation(starts.size)
    return starts[order], lengths[order]


def walk_corpus(data: TrainData, graph_params: GraphParams, p: WalkParams, node2vec: tuple[float, float] | None = None
                ) -> WalkCorpus:
    """The walk corpus of ``data`` under these settings, built once and shared by every channel asking for it.

    ``node2vec = (p, q)`` gives second-order walks; None (or p = q = 1) DeepWalk walks.
    """
    from recall.walks import deepwalk_walks, node2vec_walks

    if node2vec == (1.0, 1.0):
        node2vec = None
    graph_json = graph_params.model_dump_json()
    graph = data.shared(("item graph", graph_json), lambda: item_graph(data, graph_params))

    def build() -> WalkCorpus:
        starts, lengths = walk_plan(graph, p, data.seed)
        if node2vec is None:
            walks = deepwalk_walks(graph, 1, p.walk_length, data.seed, start_nodes=starts)
        else:
            walks = node2vec_walks(graph, 1, p.walk_length, node2vec[0], node2vec[1], data.seed,
                                   start_nodes=starts)
        short = np.flatnonzero(lengths < walks.shape[1])
        if short.size:  # none by default: no mask the size of the corpus
            # Floor walks are cut short after the fact, so every walk's prefix is the same draw.
            walks[short] = np.where(np.arange(walks.shape[1]) >= lengths[short, None], -1, walks[short])
        return WalkCorpus(graph=graph, walks=walks)

    return data.shared(("walk corpus", graph_json, p.model_dump_json(), node2vec), build)


def neighbour_fill(graph: sp.csr_matrix, vectors: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectors for items without one that have edges: the edge-weighted mean of their neighbours' vectors.

    Neighbours are in- and out-neighbours (the graph symmetrised); only neighbours
    with a vector count. Returns the vectors (unnormalised where filled) and the new mask.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    missing = np.flatnonzero(~mask)
    if missing.size == 0:
        return vectors, mask
    graph = sp.csr_matrix(graph)
    both = (graph + graph.T).tocsr()[missing]
    both = both @ sp.diags(mask.astype(np.float64))  # only neighbours that have a vector
    both.eliminate_zeros()
    weight = np.asarray(both.sum(axis=1)).ravel()
    filled = weight > 0
    if not filled.any():
        return vectors, mask
    vectors = vectors.copy()
    rows = missing[filled]
    vectors[rows] = (both[filled] @ vectors / weight[filled, None]).astype(np.float32)
    mask = mask.copy()
    mask[rows] = np.abs(vectors[rows]).sum(axis=1) > 0
    return vectors, mask


__all__ = ["WalkCorpus", "WalkParams", "neighbour_fill", "walk_corpus", "walk_plan", "walk_starts"]
