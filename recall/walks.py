"""Random walks on a weighted directed CSR graph, vectorised over all walkers at once.

**DeepWalk** (Perozzi et al., KDD 2014, with weighted edges as in EGES): from node v
the next node is x with probability

    P(x | v) = w(v, x) / sum_y w(v, y)          over the out-edges of v.

**Node2Vec** (Grover & Leskovec, KDD 2016): the walk is second order. Having come
from t to v, the next node x (an out-neighbour of v) has probability proportional to

    w(v, x) * alpha_pq(t, x),   alpha_pq(t, x) = 1/p  if x == t           (return)
                                                 1    if t has an edge to x (stay near t: BFS-like)
                                                 1/q  otherwise            (move outward: DFS-like)

On a directed graph "neighbour of t" means that the edge t -> x exists (distance
d_tx = 1 in the paper's notation; x -> t alone does not count), as pecanpy does
for directed graphs. The first step of a walk has no t and is a DeepWalk step.

Both walkers take one step for every live walker per iteration; there is no
Python loop over walkers. A step is inverse-CDF sampling on the row's cumulative
weights: each row's cumulative weights are normalised to (0, 1] and offset by
the row number, so one sorted float64 array ``key`` holds every row's
distribution in ``(v, v + 1]``, and the out-edge for a uniform draw ``u`` is the
first edge whose key exceeds ``v + u`` (what ``searchsorted(key, v + u, "right")``
returns). The search starts from a guide table (Chen and Asau, 1974: bucket
``floor(u deg(v))`` of row v points at the first edge past ``v + b / deg(v)``),
so it takes O(1) expected comparisons instead of a binary search, whose
mispredicted branches on random queries cost ~135 ns each; the result is the
same edge. Walkers at a node without out-edges (a dead end) stop; the rest of
their row is padded with -1.

Node2Vec's bias is computed on the fly by rejection sampling, never from
per-edge second-order tables (those grow with the sum of squared degrees and
explode on dense graphs): propose x from the DeepWalk distribution of v, accept
with probability ``alpha_pq(t, x) / M``, and propose again only for the rejected
walkers. The accepted x then has exactly the node2vec distribution. Two
refinements keep acceptance high without changing the law (see
:func:`node2vec_walks`): the envelope is ``M = max(1, 1/q)`` with the return
move's excess ``1/p - M`` handled as a separate block (KnightKing's outlier
folding), and draws that accept whatever x is skip the neighbour test. The test
"t -> x exists" is a binary search of ``t * n + x`` in the sorted keys
``row * n + column`` of all edges, i.e. a search of x inside t's sorted CSR row,
with the queries sorted first (numpy's search is ~4x faster on sorted queries).
Only first-order, one-entry-per-edge tables are kept (cumulative keys, guide,
edge keys, the reverse edge of each edge), the size of the CSR arrays.

Walks are reproducible: every draw comes from ``np.random.default_rng(seed)`` in a
fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from recall.errors import RecallError

PAD = -1


# Below this many queries a plain searchsorted is cheaper than sorting them first.
SORT_QUERIES_FROM = 2048
# Linear advances from the guide entry before falling back to a binary search.
GUIDE_ROUNDS = 4


def search_sorted(array: np.ndarray, queries: np.ndarray, side: str = "left") -> np.ndarray:
    """``np.searchsorted(array, queries, side)``, faster for many unordered queries.

    numpy's binary search reuses the previous query's position when queries
    increase, so sorting the queries first (and scattering the answers back)
    turns ~17 mispredicted branches and cache misses per query into a few:
    ~135 ns per random query into ~35 ns including the argsort, on a 143k array.
    """
    if queries.size < SORT_QUERIES_FROM:
        return np.searchsorted(array, queries, side=side)
    order = np.argsort(queries)  # equal queries get equal answers, so stability does not matter
    out = np.empty(queries.size, dtype=np.int64)
    out[order] = np.searchsorted(array, queries[order], side=side)
    return out


@dataclass(frozen=True)
class Sampler:
    """Per-graph tables shared by every step: the CSR arrays, cumulative keys and guide table."""

    indptr: np.ndarray   # int64, n + 1
    indices: np.ndarray  # int64 column of each edge, sorted within each row
    key: np.ndarray      # float64: row + normalised cumulative weight, increasing
    prob: np.ndarray     # float64: each edge's share of its row's weight
    guide: np.ndarray    # int64: for slot b of row v, the first edge whose key exceeds v + b / deg(v)
    degree: np.ndarray   # int64 out-degree of each node
    n: int

    @classmethod
    def of(cls, graph: sp.csr_matrix) -> "Sampler":
        graph = _checked(graph)
        n = graph.shape[0]
        indptr = graph.indptr.astype(np.int64)
        degree = np.diff(indptr)
        rows = np.repeat(np.arange(n, dtype=np.int64), degree)
        # Per-row cumulative weights: one global cumsum minus each row's running start.
        cum = np.cumsum(graph.data, dtype=np.float64)
        before = np.concatenate(([0.0], cum))[indptr[:-1]]
        total = cum[indptr[1:] - 1] - before if cum.size else np.zeros(0)
        row_total = np.repeat(total, degree)
        frac = (cum - np.repeat(before, degree)) / np.where(row_total > 0, row_total, 1.0)
        # The last edge of a row ends exactly at 1, whatever the rounding of the cumsum.
        frac[indptr[1:][degree > 0] - 1] = 1.0
        key = rows + frac
        # Guide table (Chen and Asau's indexed search): a row of d edges gets d equal
        # buckets of [0, 1); bucket b points at the first edge whose cumulative share
        # exceeds b / d. A draw u in bucket floor(u d) starts there and advances over
        # the few edges left in the bucket: expected O(1) instead of a binary search.
        slot = np.arange(indptr[-1], dtype=np.int64) - np.repeat(indptr[:-1], degree)
        bounds = rows + slot / np.where(degree > 0, degree, 1)[rows]
        guide = np.minimum(np.searchsorted(key, bounds, side="right"), np.repeat(indptr[1:] - 1, degree))
        return cls(indptr=indptr, indices=graph.indices.astype(np.int64), key=key,
                   prob=graph.data / np.where(row_total > 0, row_total, 1.0), guide=guide, degree=degree, n=n)

    @cached_property
    def edge_keys(self) -> np.ndarray:
        """Sorted ``row * n + column`` of every edge (CSR order is already sorted); Node2Vec only."""
        return self.rows * self.n + self.indices

    @cached_property
    def rows(self) -> np.ndarray:
        """The source node of every edge."""
        return np.repeat(np.arange(self.n, dtype=np.int64), self.degree)

    @cached_property
    def reverse(self) -> np.ndarray:
        """For each edge v -> x, the position of x -> v (-1 if absent); Node2Vec only.

        One entry per edge, like the CSR arrays themselves: a walker that arrived at v
        along t -> v finds w(v, t) here without a search.
        """
        return self.find_edges(self.indices, self.rows)

    def step(self, nodes: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """Next node for walkers at ``nodes`` (all with out-edges), given one uniform [0, 1) each.

        The inverse of the row's cumulative distribution: the first out-edge whose
        key exceeds ``node + u`` (what ``searchsorted(key, node + u, "right")`` gives),
        found from the guide table.
        """
        return self.indices[self.edge_of(nodes, uniform)]

    def edge_of(self, nodes: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """The edge (position in the CSR arrays) drawn by ``uniform`` in each node's row."""
        degree = self.degree[nodes]
        last = self.indptr[nodes + 1] - 1
        bucket = np.minimum((uniform * degree).astype(np.int64), degree - 1)
        edge = self.guide[self.indptr[nodes] + bucket]
        target = nodes + uniform
        # Every edge before the guide entry has a key <= v + b/d <= target, so the answer
        # is at or after it: advance while the key does not exceed the target.
        behind = np.flatnonzero((self.key[edge] <= target) & (edge < last))
        for _ in range(GUIDE_ROUNDS):
            if behind.size == 0:
                return edge
            edge[behind] += 1
            still = (self.key[edge[behind]] <= target[behind]) & (edge[behind] < last[behind])
            behind = behind[still]
        if behind.size:  # a bucket holding many tiny edges: binary search the rest
            found = np.searchsorted(self.key, target[behind], side="right")
            # v + u can round up to v + 1 when u is within 1e-16 of 1: stay in the row.
            edge[behind] = np.minimum(found, last[behind])
        return edge

    def find_edges(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Position of each edge source -> target in the CSR arrays, -1 where there is none.

        A binary search of ``source * n + target`` in the sorted edge keys, i.e. of the
        target inside the source's sorted CSR row.
        """
        keys = self.edge_keys
        if keys.size == 0:
            return np.full(source.size, -1, dtype=np.int64)
        wanted = source * self.n + target
        at = np.minimum(search_sorted(keys, wanted), keys.size - 1)
        return np.where(keys[at] == wanted, at, -1)


def _checked(graph: sp.csr_matrix) -> sp.csr_matrix:
    if not sp.issparse(graph) or graph.shape[0] != graph.shape[1]:
        raise RecallError("the graph must be a square scipy sparse matrix (items x items)")
    graph = sp.csr_matrix(graph)
    if graph.nnz and graph.data.min() < 0:
        raise RecallError("the graph has negative edge weights; walk probabilities need weights >= 0")
    if graph.nnz and graph.data.min() == 0:
        graph = graph.copy()
        graph.eliminate_zeros()  # a zero-weight edge is no edge
    if not graph.has_sorted_indices:
        graph = graph.sorted_indices()
    return graph


def _start_nodes(sampler: Sampler, walks_per_node: int, start_nodes: np.ndarray | None) -> np.ndarray:
    if walks_per_node < 1:
        raise RecallError(f"walks_per_node must be at least 1, got {walks_per_node}")
    if start_nodes is None:
        # Every node that has somewhere to go; nodes with only in-edges still appear
        # inside the walks of their predecessors.
        start_nodes = np.flatnonzero(sampler.degree > 0)
    start_nodes = np.asarray(start_nodes, dtype=np.int64)
    if start_nodes.size and (start_nodes.min() < 0 or start_nodes.max() >= sampler.n):
        raise RecallError(f"start_nodes must be node indices in [0, {sampler.n})")
    # DeepWalk's passes: every pass visits each start node once.
    return np.tile(start_nodes, walks_per_node)


def _walk(graph: sp.csr_matrix, walks_per_node: int, walk_length: int, seed: int,
          start_nodes: np.ndarray | None, choose=None) -> np.ndarray:
    """Shared driver: first-order moves, or after the first ``choose(sampler, came_by, cur, rng)``.

    ``came_by`` is the edge each walker arrived at ``cur`` by; ``choose`` returns the
    edge each takes next (positions in the CSR arrays).
    """
    if walk_length < 1:
        raise RecallError(f"walk_length must be at least 1, got {walk_length}")
    sampler = Sampler.of(graph)
    starts = _start_nodes(sampler, walks_per_node, start_nodes)
    rng = np.random.default_rng(seed)
    # Built position-major, so each step writes one contiguous row (a column of the
    # walks-major result would be a strided scatter, one cache line per walker).
    steps = np.full((walk_length, starts.size), PAD, dtype=np.int32)
    steps[0] = starts
    live = np.arange(starts.size)  # walkers still walking
    cur = starts
    edge = None  # the edge each walker arrived by (None before the first move)
    for position in range(1, walk_length):
        moving = sampler.degree[cur] > 0  # a dead end stops the walker: the rest stays -1
        if not moving.all():
            live, cur = live[moving], cur[moving]
            edge = edge[moving] if edge is not None else None
        if live.size == 0:
            break
        if edge is None or choose is None:
            edge = sampler.edge_of(cur, rng.random(cur.size))
        else:
            edge = choose(sampler, edge, cur, rng)
        cur = sampler.indices[edge]
        steps[position, live] = cur
    return np.ascontiguousarray(steps.T)


def deepwalk_walks(graph: sp.csr_matrix, walks_per_node: int, walk_length: int, seed: int,
                   start_nodes: np.ndarray | None = None) -> np.ndarray:
    """Weighted first-order random walks (DeepWalk).

    Parameters
    ----------
    graph
        Square CSR matrix; ``graph[v, x]`` is the weight of the edge v -> x.
    walks_per_node
        Walks started from each start node.
    walk_length
        Nodes per walk, the start included.
    seed
        Seed of ``np.random.default_rng``; the same seed gives the same walks.
    start_nodes
        Nodes to start from; default every node with an out-edge.

    Returns
    -------
    np.ndarray
        int32 array ``(walks_per_node * len(start_nodes), walk_length)``, walk ``k`` starting
        at ``start_nodes[k % len(start_nodes)]``; after a dead end the row is padded with -1.
    """
    return _walk(graph, walks_per_node, walk_length, seed, start_nodes)


def node2vec_walks(graph: sp.csr_matrix, walks_per_node: int, walk_length: int, p: float, q: float,
                   seed: int, start_nodes: np.ndarray | None = None) -> np.ndarray:
    """Second-order biased random walks (Node2Vec) with the exact p / q bias, by rejection sampling.

    Parameters are those of :func:`deepwalk_walks` plus the return parameter ``p``
    (bias 1/p of going back to the previous node) and the in-out parameter ``q``
    (bias 1/q of moving to a node the previous node has no edge to). ``p = q = 1``
    is DeepWalk.

    Notes
    -----
    The envelope is ``M = max(1, 1/q)`` times the first-order distribution, plus,
    when ``1/p > M``, an "outlier" block of mass ``P(v -> t) (1/p - M)`` that returns
    to t outright (outlier folding, Yang et al., SOSP 2019, "KnightKing"), so a
    strong return bias does not lower the acceptance of every other proposal.
    A proposal x != t is accepted with probability ``bias(x) / M``: a draw below
    ``min(1, 1/q) / M`` accepts without looking at the graph, and only the rest
    need the neighbour test "t -> x exists". A proposal x == t is accepted with
    probability ``min(1/p, M) / M``. Every case gives x the mass
    ``P(v -> x) * bias(x)``, so accepted moves follow the node2vec law exactly.
    """
    if not (p > 0 and q > 0 and np.isfinite(p) and np.isfinite(q)):
        raise RecallError(f"node2vec needs finite p > 0 and q > 0, got p={p}, q={q}")
    if p == 1 and q == 1:
        return _walk(graph, walks_per_node, walk_length, seed, start_nodes)
    envelope = max(1.0, 1.0 / q)
    outlier = max(0.0, 1.0 / p - envelope)       # return mass beyond the envelope, per unit P(v -> t)
    accept_return = min(1.0 / p, envelope) / envelope
    accept_any = min(1.0, 1.0 / q) / envelope    # below this every non-return proposal is accepted
    near_is_favoured = q >= 1                   # which outcome of the neighbour test accepts the rest
    below_one = np.nextafter(1.0, 0.0)

    def choose(sampler: Sampler, came_by: np.ndarray, cur: np.ndarray, rng) -> np.ndarray:
        prev = sampler.rows[came_by]
        chosen = np.empty(cur.size, dtype=np.int64)
        back = sampler.reverse[came_by]  # the edge v -> t, if any
        if outlier > 0:  # the outlier block's size depends on w(v, t), fixed for the whole step
            extra = np.where(back >= 0, sampler.prob[np.maximum(back, 0)] * outlier, 0.0)
        else:
            extra = np.zeros(cur.size)
        pending = np.arange(cur.size)
        while pending.size:
            t, v, ex = prev[pending], cur[pending], extra[pending]
            z = rng.random(pending.size) * (envelope + ex)
            returned = z < ex
            # Past the outlier block, (z - ex) / M is again uniform on [0, 1): it draws the proposal.
            e = sampler.edge_of(v, np.minimum((z - ex) / envelope, below_one))
            e[returned] = back[pending[returned]]
            x = sampler.indices[e]
            r = rng.random(pending.size)
            to_t = (x == t) & ~returned
            accept = returned | (to_t & (r < accept_return)) | (~to_t & ~returned & (r < accept_any))
            test = np.flatnonzero(~accept & ~to_t & ~returned)
            if test.size:
                near = sampler.find_edges(t[test], x[test]) >= 0
                accept[test] = near if near_is_favoured else ~near
            chosen[pending[accept]] = e[accept]
            pending = pending[~accept]
        return chosen

    return _walk(graph, walks_per_node, walk_length, seed, start_nodes, choose)


def walks_to_sentences(walks: np.ndarray) -> list[list[int]]:
    """Walks (or any -1-padded int array) as gensim sentences: lists of node ints, padding stripped.

    gensim takes any hashable token, so node indices stay ints (no string
    conversion). The slicing below is the one per-sentence loop, and it is
    inherent in gensim's input format (gensim itself iterates over sentences).
    """
    walks = np.asarray(walks)
    if walks.ndim != 2:
        raise RecallError("walks must be a 2-d array (walks x length)")
    valid = walks >= 0
    lengths = valid.sum(axis=1)
    flat = walks[valid].tolist()  # row-major: each walk's nodes stay in order
    bounds = np.concatenate(([0], np.cumsum(lengths))).tolist()
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def walk_steps(walks: np.ndarray) -> int:
    """Moves actually taken by the walkers: nodes per walk minus one, padding excluded."""
    lengths = (np.asarray(walks) >= 0).sum(axis=1)
    return int(np.maximum(lengths - 1, 0).sum())


__all__ = ["PAD", "Sampler", "deepwalk_walks", "node2vec_walks", "walk_steps", "walks_to_sentences"]
