"""Random walks on a weighted directed CSR graph, vectorised over blocks of walkers, on all cores.

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

**First-order steps: alias tables** (Walker, 1977). Each row of d out-edges is
turned into d equal slots; slot s keeps its own edge with probability
``own[s]`` and otherwise moves to the edge ``alias[s]``. One uniform u picks the
slot ``floor(u d)`` and, from the fraction left over, the coin, so a step costs
a constant number of array operations whatever the degree: no search. The tables
of all rows are built at once, without a per-row loop, by the sweeping
construction of Huebschle-Schneider and Sanders (2019, "Parallel weighted random
sampling"): within a row, light slots (scaled weight d w / W < 1) in order take
their missing mass from heavy slots in order; which heavy serves which light
follows from comparing the running sum of the lights' deficits with the running
sum of the heavies' excesses (one ``searchsorted``), and a heavy that has given
away its excess becomes a light served by the next heavy. The implied
distribution equals w / W up to float64 rounding (~1e-13; a test rebuilds it).
Tables are one entry per edge, like the CSR arrays.

**Node2Vec: rejection sampling on the fly**, never from per-edge second-order
tables (those grow with the sum of squared degrees and explode on dense
graphs): propose x from the first-order alias table of v, accept with
probability ``alpha_pq(t, x) / M``, and propose again for the rejected
walkers. The accepted x then has exactly the node2vec distribution. Two
refinements keep acceptance high without changing the law (see
:func:`node2vec_walks`): the envelope is ``M = max(1, 1/q)`` with the return
move's excess ``1/p - M`` handled as a separate block (KnightKing's outlier
folding), and draws that accept whatever x is skip the neighbour test. The test
"t -> x exists" is a lookup of ``t * n + x`` in a bucketed hash set of all
edges (:class:`EdgeSet`: one 16-byte bucket read and a few compares per
query). Rejections make walkers need different numbers of proposals, so the
walkers of a block are not kept in step: every round each unfinished walker
proposes once and the accepted ones move on (see :class:`_Node2VecRule`).

**Memory.** On a graph larger than the core's cache every random read of a
table is a trip to L3 or memory, and those reads, not arithmetic, bound the
speed. So what one draw needs sits in one record: the slot's threshold next to
its two targets (and, for Node2Vec, next to the two edges' step-back
probabilities), 16 or 32 bytes, one cache line. The only per-edge tables are
these records and the hash set, each a small multiple of the CSR arrays.

**Blocks and threads.** Walkers are cut into blocks of :data:`BLOCK` walkers;
a block walks all its steps with whole-block numpy operations (``take`` with
``out=``, in-place ufuncs, branch-free selects), allocating nothing per step
for DeepWalk and little for Node2Vec. numpy's array operations release the
GIL, so ``workers`` threads walking different blocks run on different cores.
Every block draws from its own ``np.random.Generator``, seeded from
``SeedSequence(seed, spawn_key=(block,))``: the walks depend on the seed only,
not on the number of threads or the order in which they finish. A walker at a
node without out-edges (a dead end) stops; the rest of its row is padded with
-1 (the tables route a dead end, and -1 itself, to -1, so a stopped walker
costs no branch).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from recall.errors import RecallError

PAD = -1

# Walkers per block. Large enough that numpy's per-call overhead (~1 us) is small
# against a pass over the block (8k to 64k measured alike on the benchmark graph),
# small enough that a thread's scratch arrays stay a few MB. Part of the random
# stream: changing it changes the walks drawn for a seed.
BLOCK = 16384
# The block's position-major buffer gets rows of BLOCK + ROW_PAD entries: rows
# 64 KiB apart would all map to the same L1 cache sets, which makes the final
# transpose into walks-major order ~7x slower.
ROW_PAD = 48
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing multiplier (2^64 / golden ratio)


@dataclass(frozen=True)
class Sampler:
    """Per-graph tables shared by every step: CSR arrays and alias tables.

    The alias tables have one extra node and slot at the end, the sentinel: node
    ``-1`` indexes it (numpy's negative indexing) and it moves to -1 with
    probability one, as does every dead end, so stopped walkers need no mask.
    Slot and edge ``E`` (the sentinel's) doubles as "no edge".

    A step reads a slot's threshold and then, depending on the coin, one of its
    two targets. Both live in one 16-byte record (``[threshold, own, alias]``,
    four int32 words of which the first two are the float64 threshold), so the
    second read hits the cache line the first one brought in: on graphs larger
    than the core's cache each random read costs a trip to L3 or memory.
    Node2Vec's records (:attr:`walk_records`) add what its next move needs.
    """

    indptr: np.ndarray   # int64, n + 1
    indices: np.ndarray  # int32 column of each edge, sorted within each row
    prob: np.ndarray     # float64: each edge's share of its row's weight
    degree: np.ndarray   # int64 out-degree of each node
    own: np.ndarray      # float64, E: probability that a slot keeps its own edge
    alias: np.ndarray    # int64, E: the edge a slot moves to otherwise
    slots: np.ndarray    # float64, n + 1: slots of each node's alias table (1 for dead ends, sentinel)
    start: np.ndarray    # int64, n + 1: first slot of each node (the sentinel slot for dead ends)
    node_records: np.ndarray  # int32, 4 (E + 1): per slot [threshold (float64), own edge's node, alias's node]
    n: int

    @classmethod
    def of(cls, graph: sp.csr_matrix) -> "Sampler":
        graph = _checked(graph)
        n = graph.shape[0]
        indptr = graph.indptr.astype(np.int64)
        degree = np.diff(indptr)
        rows = np.repeat(np.arange(n, dtype=np.int64), degree)
        weights = graph.data.astype(np.float64)
        row_total = np.zeros(n)
        if weights.size:
            row_total[degree > 0] = np.add.reduceat(weights, indptr[:-1][degree > 0])
        prob = weights / row_total[rows]
        own, alias = _alias_tables(indptr, degree, rows, prob)
        indices = graph.indices.astype(np.int32)
        dead = degree == 0
        # Per slot [threshold, own target, alias target] as four int32 words, the sentinel
        # slot last. The threshold is the slot's rank in its row plus the probability of
        # keeping its own edge: with y = u d the draw keeps slot floor(y)'s own edge iff
        # y < threshold (exact up to float64 rounding at the rank's magnitude: ~1e-13 for
        # ranks below a thousand).
        records = np.empty((prob.size + 1, 4), dtype=np.int32)
        rank = np.arange(prob.size, dtype=np.float64) - indptr[:-1][rows]
        records[:, :2] = np.append(rank + own, 1.0).view(np.int32).reshape(-1, 2)
        records[:-1, 2], records[:-1, 3] = indices, indices[alias]
        records[-1, 2:] = PAD  # the sentinel slot always "keeps" (y < 1) its target, -1
        return cls(indptr=indptr, indices=indices, prob=prob, degree=degree, own=own, alias=alias,
                   slots=np.append(np.where(dead, 1.0, degree), 1.0),
                   start=np.append(np.where(dead, prob.size, indptr[:-1]), prob.size),
                   node_records=records.reshape(-1), n=n)

    @cached_property
    def rows(self) -> np.ndarray:
        """The source node of every edge."""
        return np.repeat(np.arange(self.n, dtype=np.int64), self.degree)

    @cached_property
    def edge_set(self) -> "EdgeSet":
        """Hash set of the edge keys ``row * n + column`` (Node2Vec's neighbour test)."""
        return EdgeSet.of(self.rows * self.n + self.indices, key_bound=self.n * self.n + self.n + 1)

    @cached_property
    def prob_or_zero(self) -> np.ndarray:
        """:attr:`prob` and a final 0, which index -1 ("no edge") reads."""
        return np.append(self.prob, 0.0)

    @cached_property
    def walk_records(self) -> np.ndarray:
        """Node2Vec's slot records: 32 bytes, eight int32 words per slot, the sentinel slot last.

        Words 0-1: the threshold (float64), as in :attr:`node_records`; 2-5: for the
        own and the alias edge v -> x, ``w(x, v) / W_x`` (float64 each; 0 without an
        edge x -> v), the first-order probability of stepping back, which sizes the
        outlier block of the next move; 6-7: the own and the alias edge's node x. A
        proposal reads all it needs from one record, in one cache line, whichever
        edge the coin picks.
        """
        n_edges = self.prob.size
        found = self.edge_set.find(self.indices.astype(np.int64) * self.n + self.rows)  # x -> v for each v -> x
        back = self.prob_or_zero[found]  # found == -1 reads the final 0
        records = np.empty((n_edges + 1, 8), dtype=np.int32)
        words = records.view(np.float64)
        words[:, 0] = self.node_records.view(np.float64)[0::2]
        words[:-1, 1], words[:-1, 2] = back, back[self.alias]
        words[-1, 1:3] = 0.0
        records[:-1, 6], records[:-1, 7] = self.indices, self.indices[self.alias]
        records[-1, 6:] = PAD
        return records.reshape(-1)

    def step(self, nodes: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """Next node for walkers at ``nodes`` given one uniform [0, 1) each (-1 after a dead end).

        The alias draw: slot ``floor(u d)`` of the node's d slots keeps its own edge
        if the leftover of ``u d`` is below the slot's probability, else takes its alias.
        """
        nodes = np.asarray(nodes)
        y = np.take(self.slots, nodes, mode="wrap") * uniform
        # y >= 0, so the cast truncates to the floor; u < 1 keeps u * d < d in float64.
        at = y.astype(np.int64)
        at += np.take(self.start, nodes, mode="wrap")
        at += at  # 2 * slot: the threshold's index among float64 words
        moved = y >= np.take(self.node_records.view(np.float64), at, mode="wrap")
        at += at  # 4 * slot
        at += moved
        return np.take(self.node_records[2:], at, mode="wrap")

    def _slot_into(self, nodes: np.ndarray, uniform: np.ndarray, work: "_Work") -> tuple[np.ndarray, np.ndarray]:
        """The first half of a block's draw, in place: ``(y, slot)`` with ``y = u d`` and ``slot`` its slot."""
        m = nodes.size
        y, slot, base = work.y[:m], work.slot[:m], work.base[:m]
        np.take(self.slots, nodes, out=y, mode="wrap")
        np.multiply(y, uniform, out=y)
        np.copyto(slot, y, casting="unsafe")  # the floor, as in step
        np.take(self.start, nodes, out=base, mode="wrap")
        np.add(slot, base, out=slot)
        return y, slot

    def step_into(self, nodes: np.ndarray, uniform: np.ndarray, out: np.ndarray, work: "_Work") -> None:
        """:meth:`step` for a block, in place: ``uniform`` is overwritten, ``out`` receives the nodes.

        Nothing is allocated: every operation writes into the thread's scratch arrays.
        """
        y, at = self._slot_into(nodes, uniform, work)
        moved = work.moved[:nodes.size]
        np.add(at, at, out=at)
        np.take(self.node_records.view(np.float64), at, out=uniform, mode="wrap")
        np.greater_equal(y, uniform, out=moved)
        np.add(at, at, out=at)
        np.add(at, moved, out=at)
        np.take(self.node_records[2:], at, out=out, mode="wrap")

    def propose_into(self, nodes: np.ndarray, uniform: np.ndarray, out: np.ndarray, back: np.ndarray | None,
                     work: "_Work") -> None:
        """:meth:`step_into` on :attr:`walk_records`; ``back``, if given, gets each move's step-back probability."""
        y, at = self._slot_into(nodes, uniform, work)
        moved, word = work.moved[:nodes.size], work.word[:nodes.size]
        records = self.walk_records
        np.multiply(at, 4, out=at)  # the record's first float64 word
        np.take(records.view(np.float64), at, out=uniform, mode="wrap")
        np.greater_equal(y, uniform, out=moved)
        np.add(at, at, out=word)  # the record's first int32 word
        np.add(word, moved, out=word)
        np.take(records[6:], word, out=out, mode="wrap")
        if back is not None:
            np.add(at, moved, out=at)
            np.take(records.view(np.float64)[1:], at, out=back, mode="wrap")

    def implied_probabilities(self) -> np.ndarray:
        """Probability of each edge under the alias tables as sampled (for tests: must equal ``prob``)."""
        rank = np.arange(self.prob.size) - self.indptr[:-1][self.rows]
        own = self.node_records.view(np.float64)[0:-2:2] - rank  # the thresholds the steps compare with
        mass = own + np.bincount(self.alias, weights=1.0 - own, minlength=own.size)
        return mass / np.maximum(self.degree, 1)[self.rows]


def _alias_tables(indptr: np.ndarray, degree: np.ndarray, rows: np.ndarray,
                  prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Alias tables of every row at once by sweeping (Huebschle-Schneider and Sanders, 2019).

    Returns ``own`` (probability that a slot keeps its edge) and ``alias`` (the
    edge it moves to otherwise), one entry per edge.

    With weights scaled to mean one per row (``p = d w / W``), slots with p < 1
    (light) lack ``1 - p`` and slots with p >= 1 (heavy) have ``p - 1`` to spare.
    The sweep hands the lights, in order, to the heavies, in order: light i goes
    to the heavy j whose excess interval ``[E_{j-1}, E_j)`` (running sums of the
    excesses) holds the deficit accumulated before i, ``D_{i-1}``. Heavy j then
    keeps ``1 + r_j`` of its own slot, with ``r_j = r_{j-1} + (p_j - 1) - c_j``
    (``c_j`` the deficits handed to it) in [-1, 0], and gives the remaining
    ``-r_j`` to its alias, heavy j + 1; the row's last heavy keeps its whole
    slot (``r = 0`` there up to rounding). Each heavy's total is then
    ``1 + r_j + c_j - r_{j-1} = p_j`` and each light's is ``p_i``: exact.
    Running sums over all rows at once serve every row, because each row's
    deficits and excesses balance; a light is clamped to its own row's heavies
    in case rounding says otherwise at a row's very end.
    """
    n_edges = prob.size
    own = np.ones(n_edges)
    alias = np.arange(n_edges, dtype=np.int64)
    if n_edges == 0:
        return own, alias
    scaled = prob * degree[rows]
    heavy = scaled >= 1.0
    deficit = np.where(heavy, 0.0, 1.0 - scaled)
    heavies, lights = np.flatnonzero(heavy), np.flatnonzero(~heavy)
    deficit_before = (np.cumsum(deficit) - deficit)[lights]
    excess_through = np.cumsum(np.where(heavy, scaled - 1.0, 0.0))[heavies]
    # Heavies of row r are heavies[first[r]:stop[r]]; every row with an edge has one.
    first, stop = np.searchsorted(heavies, indptr[:-1]), np.searchsorted(heavies, indptr[1:])
    served_by = np.searchsorted(excess_through, deficit_before, side="right")
    light_rows = rows[lights]
    served_by = np.clip(served_by, first[light_rows], stop[light_rows] - 1)
    own[lights] = scaled[lights]
    alias[lights] = heavies[served_by]
    handed = np.bincount(served_by, weights=deficit[lights], minlength=heavies.size)
    # r_j as a running sum within each row: a global cumsum minus the row's start.
    running = np.cumsum(scaled[heavies] - 1.0 - handed)
    heavy_rows = rows[heavies]
    residual = running - np.concatenate(([0.0], running))[first[heavy_rows]]
    last = np.arange(heavies.size) == stop[heavy_rows] - 1
    own[heavies] = np.where(last, 1.0, np.clip(1.0 + residual, 0.0, 1.0))
    alias[heavies[~last]] = heavies[np.flatnonzero(~last) + 1]
    return own, alias


@dataclass(frozen=True)
class EdgeSet:
    """Bucketed hash table of distinct integer keys (``row * n + column``) to their positions.

    A key's home is bucket ``(key * 2^64 / phi) >> (64 - bits)`` (Fibonacci
    hashing). A bucket is 16 bytes: 4 int32 keys when every possible key fits in
    int32, else 2 int64, so numpy gathers a bucket as one complex128 item (its
    fast fixed-size ``take``) and compares the few slots as strided columns,
    each a plain loop over the queries; wider buckets would need a broadcast
    comparison along short rows, which numpy runs row by row. Load: a quarter
    to a half of the slots on average, so few buckets fill (Poisson tail: 1.9%
    of 4-slot buckets at one key per bucket). A key that finds its home full
    goes to the next bucket with room (linear probing by bucket); a lookup that
    misses in a full bucket looks at the next. Built and queried vectorised,
    without a per-key loop.
    """

    keys: np.ndarray   # (2^bits, slots): the keys in each bucket, an impossible key in free slots
    where: np.ndarray  # (2^bits, slots): each key's position in the input, -1 in free slots
    full: np.ndarray   # bool, 2^bits: the bucket has no free slot (a missing key may be further on)
    bits: int

    @classmethod
    def of(cls, keys: np.ndarray, key_bound: int) -> "EdgeSet":
        """Index ``keys``; every key that will ever be looked up lies in ``(-key_bound, key_bound)``."""
        dtype = np.int32 if key_bound < 2**31 - 1 else np.int64
        empty = np.iinfo(dtype).min  # never a query key
        slots = 16 // np.dtype(dtype).itemsize
        keys = np.asarray(keys).astype(dtype)
        bits = max(1, int(np.ceil(np.log2(max(keys.size, 1) / (slots / 4)))))
        n_buckets = 1 << bits
        table = np.full((n_buckets, slots), empty, dtype=dtype)
        where = np.full((n_buckets, slots), -1, dtype=np.int32 if keys.size < 2**31 else np.int64)
        used = np.zeros(n_buckets, dtype=np.int64)
        bucket = _hash(keys, bits)
        pending = np.arange(keys.size)
        while pending.size:
            # Rank the keys aiming at each bucket; those that fit take the next free slots,
            # the rest try the following bucket.
            order = np.argsort(bucket[pending], kind="stable")
            pending, aim = pending[order], bucket[pending][order]
            slot = np.arange(aim.size) - np.searchsorted(aim, aim) + used[aim]
            fits = slot < slots
            table[aim[fits], slot[fits]], where[aim[fits], slot[fits]] = keys[pending[fits]], pending[fits]
            used += np.bincount(aim[fits], minlength=n_buckets)
            pending = pending[~fits]
            bucket[pending] = (aim[~fits] + 1) & (n_buckets - 1)
        return cls(keys=table, where=where, full=used == slots, bits=bits)

    @property
    def dtype(self) -> np.dtype:
        """The key type: queries are cast to it (safe, given ``key_bound``)."""
        return self.keys.dtype

    @cached_property
    def buckets(self) -> np.ndarray:
        """The table as one 16-byte complex128 item per bucket (a view), for ``take``."""
        return self.keys.view(np.complex128).reshape(-1)

    @cached_property
    def any_full(self) -> bool:
        return bool(self.full.any())

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Position of each key in the keys the set was built from, -1 where absent."""
        return self._lookup(np.asarray(keys).astype(self.dtype, copy=False), positions=True)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        return self._lookup(np.asarray(keys).astype(self.dtype, copy=False), positions=False)

    def _match(self, bucket: np.ndarray, keys: np.ndarray,
               positions: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Whether each key is in its bucket; if ``positions``, in which slot (0 where it is not);
        and whether the bucket is full (its last slot used: slots fill in order)."""
        rows = np.take(self.buckets, bucket).view(self.dtype).reshape(-1, self.keys.shape[1])
        hit = rows[:, 0] == keys
        slot = np.zeros(keys.size, dtype=np.int64) if positions else None
        for j in range(1, rows.shape[1]):
            here = rows[:, j] == keys
            hit |= here
            if positions:
                slot += j * here  # at most one slot matches; no masked (branching) write
        return hit, slot, rows[:, -1] != np.iinfo(self.dtype).min

    def _lookup(self, keys: np.ndarray, positions: bool) -> np.ndarray:
        bucket = _hash(keys, self.bits)
        hit, slot, full = self._match(bucket, keys, positions)
        found = np.where(hit, self.where[bucket, slot], -1) if positions else hit
        if not self.any_full:  # no bucket overflowed: every key is at home
            return found
        # A miss in a full bucket: the key may have moved on to the next one.
        pending = np.flatnonzero(~hit & full)
        while pending.size:
            bucket[pending] = (bucket[pending] + 1) & (self.full.size - 1)
            b = bucket[pending]
            hit, slot, full = self._match(b, keys[pending], positions)
            found[pending[hit]] = self.where[b[hit], slot[hit]] if positions else True
            pending = pending[~hit & full]
        return found


def _hash(keys: np.ndarray, bits: int) -> np.ndarray:
    """Fibonacci hashing: the top ``bits`` bits of ``key * 2^64 / phi`` (uint64 wraps modulo 2^64)."""
    h = keys.astype(np.uint64)
    h *= _GOLDEN
    h >>= np.uint64(64 - bits)
    return h.view(np.int64)  # < 2^bits: the same numbers as int64


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
    if graph.shape[0] >= 2**31 - 1:
        raise RecallError("graphs of 2^31 - 1 nodes or more do not fit the int32 walks")
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
    return np.tile(start_nodes.astype(np.int32), walks_per_node)


class _Work:
    """One thread's scratch arrays for a block: reused across steps and blocks."""

    def __init__(self, walk_length: int):
        self.steps = np.empty((walk_length, BLOCK + ROW_PAD), dtype=np.int32)
        self.uniform = np.empty(BLOCK)
        self.coin = np.empty(BLOCK)
        self.y = np.empty(BLOCK)
        self.z = np.empty(BLOCK)
        self.extra = np.empty(BLOCK)
        self.next_extra = np.empty(BLOCK)
        self.slot = np.empty(BLOCK, dtype=np.int64)
        self.base = np.empty(BLOCK, dtype=np.int64)
        self.word = np.empty(BLOCK, dtype=np.int64)
        self.index = np.empty(BLOCK, dtype=np.int64)
        self.moved = np.empty(BLOCK, dtype=bool)
        # Node2Vec's per-walker state and proposals.
        self.walker = np.empty(BLOCK, dtype=np.int64)
        self.position = np.empty(BLOCK, dtype=np.int64)
        self.moving = np.empty(BLOCK, dtype=np.int64)
        self.spare = np.empty(BLOCK, dtype=np.int64)
        self.prev = np.empty(BLOCK, dtype=np.int32)
        self.cur = np.empty(BLOCK, dtype=np.int32)
        self.x = np.empty(BLOCK, dtype=np.int32)
        self.to_t = np.empty(BLOCK, dtype=bool)
        self.flags = np.empty(BLOCK, dtype=bool)
        self.accept = np.empty(BLOCK, dtype=bool)


def _default_workers(workers: int | None) -> int:
    if workers is None:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if workers < 1:
        raise RecallError(f"workers must be at least 1, got {workers}")
    return workers


def _first_order_block(sampler: Sampler, steps: np.ndarray, m: int, rng: np.random.Generator,
                       work: _Work) -> None:
    """Walk one block: ``steps[0, :m]`` holds the starts; fill rows 1.. with first-order moves."""
    uniform = work.uniform[:m]
    for position in range(1, steps.shape[0]):
        if position % 16 == 0 and steps[position - 1, :m].max() < 0:
            steps[position:, :m] = PAD  # every walker of the block has stopped
            return
        rng.random(out=uniform)
        sampler.step_into(steps[position - 1, :m], uniform, steps[position, :m], work)


def _walk(graph: sp.csr_matrix, walks_per_node: int, walk_length: int, seed: int,
          start_nodes: np.ndarray | None, workers: int | None, walk_block=_first_order_block) -> np.ndarray:
    """Shared driver: cut the walkers into blocks, walk the blocks on ``workers`` threads.

    ``walk_block(sampler, steps, m, rng, work)`` fills a block's position-major
    buffer ``steps[:, :m]`` from its first row (the starts).
    """
    if walk_length < 1:
        raise RecallError(f"walk_length must be at least 1, got {walk_length}")
    workers = _default_workers(workers)
    sampler = Sampler.of(graph)
    starts = _start_nodes(sampler, walks_per_node, start_nodes)
    walks = np.empty((starts.size, walk_length), dtype=np.int32)
    n_blocks = -(-starts.size // BLOCK)
    if walk_block is not _first_order_block and n_blocks:
        sampler.walk_records  # built (with the edge set) before the threads race to build it

    def walk_one(block: int, work: _Work) -> None:
        lo, hi = block * BLOCK, min((block + 1) * BLOCK, starts.size)
        m = hi - lo
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(block,))))
        steps = work.steps
        steps[0, :m] = starts[lo:hi]
        walk_block(sampler, steps, m, rng, work)
        # Walks-major output, copied in tiles of the block buffer that stay in L1.
        for a in range(0, m, 512):
            walks[lo + a:lo + min(a + 512, m)] = steps[:, a:min(a + 512, m)].T

    # Blocks are claimed one at a time from a shared counter, so a thread slowed down
    # by other load on the machine walks fewer blocks; the walks do not depend on it.
    lock, counter = threading.Lock(), iter(range(n_blocks))

    def worker() -> None:
        work = _Work(walk_length)
        while True:
            with lock:
                block = next(counter, None)
            if block is None:
                return
            walk_one(block, work)

    threads = min(workers, n_blocks)
    if threads <= 1:
        worker()
    else:
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(worker) for _ in range(threads)]:
                future.result()
    return walks


def deepwalk_walks(graph: sp.csr_matrix, walks_per_node: int, walk_length: int, seed: int,
                   start_nodes: np.ndarray | None = None, workers: int | None = None) -> np.ndarray:
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
        Seeds every block's random stream; the same seed gives the same walks,
        whatever ``workers``.
    start_nodes
        Nodes to start from; default every node with an out-edge.
    workers
        Threads walking blocks of walkers in parallel; default the usable cores.

    Returns
    -------
    np.ndarray
        int32 array ``(walks_per_node * len(start_nodes), walk_length)``, walk ``k`` starting
        at ``start_nodes[k % len(start_nodes)]``; after a dead end the row is padded with -1.
    """
    return _walk(graph, walks_per_node, walk_length, seed, start_nodes, workers)


def node2vec_walks(graph: sp.csr_matrix, walks_per_node: int, walk_length: int, p: float, q: float,
                   seed: int, start_nodes: np.ndarray | None = None, workers: int | None = None) -> np.ndarray:
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
        return _walk(graph, walks_per_node, walk_length, seed, start_nodes, workers)
    rule = _Node2VecRule(p, q)
    return _walk(graph, walks_per_node, walk_length, seed, start_nodes, workers, rule.walk_block)


class _Node2VecRule:
    """Node2Vec's acceptance constants and its block walker (see :func:`node2vec_walks`).

    Rejection makes walkers need different numbers of proposals per move, so the
    walkers of a block are not kept in step: every round, each unfinished walker
    makes one proposal, and those accepted move one position on. A walker's
    proposals are still independent trials until its first acceptance, so each
    move has exactly the node2vec law; the block costs about
    ``walk_length / acceptance`` rounds of whole-array operations and no rounds
    over small leftovers. Finished walkers are dropped from the working arrays
    once they are a quarter of them.
    """

    def __init__(self, p: float, q: float):
        self.envelope = max(1.0, 1.0 / q)
        self.outlier = max(0.0, 1.0 / p - self.envelope)  # return mass beyond the envelope, per unit P(v -> t)
        # With an outlier block 1/p > M, so a proposed return is always accepted.
        self.accept_return = min(1.0 / p, self.envelope) / self.envelope
        self.accept_any = min(1.0, 1.0 / q) / self.envelope  # below this any non-return proposal is accepted
        self.near_is_favoured = q >= 1  # which outcome of the neighbour test accepts the rest

    def walk_block(self, sampler: Sampler, steps: np.ndarray, m: int, rng: np.random.Generator,
                   work: _Work) -> None:
        length = steps.shape[0]
        if length < 2:
            return
        # Per walker: its column in the block, previous and current node, the outlier
        # mass of the edge it came by and the position of its current node.
        walker, prev, cur, extra, position = work.walker, work.prev, work.cur, work.extra, work.position
        # The first move has no previous node: a first-order move.
        uniform = work.uniform[:m]
        rng.random(out=uniform)
        sampler.propose_into(steps[0, :m], uniform, steps[1, :m], extra[:m] if self.outlier > 0 else None, work)
        if self.outlier > 0:
            extra[:m] *= self.outlier
        if length == 2:
            return
        walker[:m] = np.arange(m)
        prev[:m], cur[:m], position[:m] = steps[0, :m], steps[1, :m], 1
        flat, stride, last = steps.reshape(-1), steps.shape[1], length - 1
        k = m
        while True:
            accept = self.propose(sampler, prev[:k], cur[:k], extra[:k], rng, work)
            np.less(position[:k], last, out=work.flags[:k])
            accept &= work.flags[:k]  # a finished walker waits for the next compaction
            # The accepted walkers move: branch-free selects, as acceptance is a coin flip
            # per walker and masked copies (putmask, copyto where=) branch per element.
            moving, spare = work.moving[:k], work.spare[:k]
            np.subtract(0, accept, out=moving, dtype=np.int64)  # all ones where the walker moves
            _select(prev[:k], cur[:k], moving, spare)
            _select(cur[:k], work.x[:k], moving, spare)
            if self.outlier > 0:
                _select(extra[:k].view(np.int64), work.next_extra[:k].view(np.int64), moving, spare)
            position[:k] -= moving
            # Every walker writes its current node at its position; one that did not
            # move writes the same node again, which is cheaper than a masked write.
            index = work.index[:k]
            np.multiply(position[:k], stride, out=index)
            index += walker[:k]
            flat[index] = cur[:k]
            finished = np.count_nonzero(position[:k] == last)
            if finished == k:
                return
            if 4 * finished > k:
                keep = np.flatnonzero(position[:k] != last)
                k = keep.size
                for array in (walker, prev, cur, position, extra):
                    array[:k] = array[keep]

    def propose(self, sampler: Sampler, prev: np.ndarray, cur: np.ndarray, extra: np.ndarray,
                rng: np.random.Generator, work: _Work) -> np.ndarray:
        """One proposal per walker, in place: node ``work.x``; returns the acceptance.

        With an outlier block, ``work.next_extra`` gets the outlier mass of the
        proposed move's edge, for the walkers that take it. Nothing the size of the
        block is allocated.
        """
        k = cur.size
        uniform, coin, x = work.uniform[:k], work.coin[:k], work.x[:k]
        accept, to_t = work.accept[:k], work.to_t[:k]
        rng.random(out=uniform)
        if self.outlier > 0:
            # The outlier block's size P(v -> t) (1/p - M) depends on the edge t -> v only.
            z, next_extra = work.z[:k], work.next_extra[:k]
            self._fold(uniform, extra, z)
            returned = np.flatnonzero(z < extra)
            sampler.propose_into(cur, uniform, x, next_extra, work)
            next_extra *= self.outlier
            if returned.size:
                # Back to t along v -> t: the next move's outlier block is sized by w(t, v) / W_t,
                # the probability of the edge t -> v the walker came by.
                t, edges = prev[returned], sampler.edge_set
                x[returned] = t
                came_by = edges.find(t.astype(edges.dtype) * sampler.n + cur[returned])
                next_extra[returned] = sampler.prob_or_zero[came_by] * self.outlier
        else:
            sampler.propose_into(cur, uniform, x, None, work)
        rng.random(out=coin)
        self._accept(sampler, x, prev, coin, accept, to_t)
        return accept

    def _fold(self, uniform: np.ndarray, extra: np.ndarray, z: np.ndarray) -> None:
        """Split a uniform over ``[0, M + extra)``: z (kept for the return test) and, in place, the proposal's uniform.

        Past the outlier block, ``(z - extra) / M`` is again uniform on [0, 1).
        """
        np.add(extra, self.envelope, out=z)
        np.multiply(z, uniform, out=z)
        np.subtract(z, extra, out=uniform)
        if self.envelope != 1.0:
            uniform /= self.envelope
        np.clip(uniform, 0.0, _BELOW_ONE, out=uniform)  # a returned walker's value is unused, but must index

    def _accept(self, sampler: Sampler, x: np.ndarray, t: np.ndarray, coin: np.ndarray, accept: np.ndarray,
                to_t: np.ndarray) -> None:
        """Decide every proposal x made from v after t, given a uniform coin each.

        A return (x == t) is accepted w.p. accept_return; any other proposal at
        once when the coin is below accept_any, otherwise by the neighbour test
        (t -> x exists: accepted if q >= 1, rejected if q < 1); a stopped walker
        (x == -1) stays stopped.
        """
        np.equal(x, t, out=to_t)
        np.less(coin, self.accept_any, out=accept)
        if self.accept_return >= 1.0:
            accept |= to_t
        else:
            accept[to_t] = coin[to_t] < self.accept_return
        accept |= x < 0
        test = np.flatnonzero(~(accept | to_t))
        if test.size:
            edges = sampler.edge_set
            near = edges.contains(t[test].astype(edges.dtype) * sampler.n + x[test])
            accept[test] = near if self.near_is_favoured else ~near


_BELOW_ONE = np.nextafter(1.0, 0.0)


def _select(target: np.ndarray, source: np.ndarray, mask: np.ndarray, spare: np.ndarray) -> None:
    """``target = source`` where ``mask`` is all ones (-1), unchanged where it is 0; in place, no branch.

    ``target += (source - target) & mask`` in wrapping integer arithmetic, exact for
    any integers (floats go through their int64 view). ``spare`` is int64 scratch.
    """
    np.subtract(source, target, out=spare, dtype=np.int64, casting="unsafe")
    spare &= mask
    np.add(target, spare, out=target, casting="unsafe")


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


__all__ = ["PAD", "EdgeSet", "Sampler", "deepwalk_walks", "node2vec_walks", "walk_steps", "walks_to_sentences"]
