"""Random walks: empirical transition frequencies against the exact DeepWalk / Node2Vec probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import chi2

from recall.errors import RecallError
from recall.walks import deepwalk_walks, node2vec_walks, walk_steps, walks_to_sentences

# A small directed weighted graph with one-way and two-way edges, a triangle, a
# node (5) whose in- and out-neighbours differ, and a dead end (6).
EDGES = {(0, 1): 3, (1, 0): 1, (0, 2): 1, (2, 0): 2, (1, 2): 2, (2, 3): 1, (3, 2): 1, (1, 3): 4,
         (3, 4): 2, (4, 1): 1, (4, 5): 3, (5, 3): 1, (5, 1): 2, (2, 5): 1, (5, 6): 1, (0, 4): 2}
N = 7


def small_graph() -> sp.csr_matrix:
    rows, cols = zip(*EDGES)
    return sp.csr_matrix((np.array(list(EDGES.values()), float), (rows, cols)), shape=(N, N))


def exact_first_order(v: int) -> dict[int, float]:
    out = {x: w for (a, x), w in EDGES.items() if a == v}
    total = sum(out.values())
    return {x: w / total for x, w in out.items()}


def exact_node2vec(t: int, v: int, p: float, q: float) -> dict[int, float]:
    """The paper's formula with loops: w(v, x) * (1/p if x == t, 1 if t -> x exists, else 1/q)."""
    weights = {}
    for (a, x), w in EDGES.items():
        if a != v:
            continue
        bias = 1 / p if x == t else (1.0 if (t, x) in EDGES else 1 / q)
        weights[x] = w * bias
    total = sum(weights.values())
    return {x: w / total for x, w in weights.items()}


def check_frequencies(counts: dict, exact: dict) -> None:
    """Chi-square over all groups, and per-cell |freq - prob| within 5 standard errors."""
    stat, dof = 0.0, 0
    for group, probs in exact.items():
        observed = counts.get(group, {})
        total = sum(observed.values())
        assert total > 2000, f"too few samples for {group}"
        assert set(observed) <= set(probs), f"impossible move from {group}: {set(observed) - set(probs)}"
        for x, prob in probs.items():
            freq = observed.get(x, 0) / total
            assert abs(freq - prob) <= 5 * np.sqrt(prob * (1 - prob) / total) + 1e-12, (group, x, freq, prob)
            stat += (observed.get(x, 0) - total * prob) ** 2 / (total * prob)
        dof += len(probs) - 1
    assert chi2.sf(stat, dof) > 1e-4, (stat, dof)


def test_deepwalk_first_steps_match_edge_weights():
    walks = deepwalk_walks(small_graph(), walks_per_node=8000, walk_length=2, seed=1)
    counts: dict = {}
    for v, x in walks.tolist():
        counts.setdefault(v, {}).setdefault(x, 0)
        counts[v][x] += 1
    check_frequencies(counts, {v: exact_first_order(v) for v in range(N) if v != 6})


@pytest.mark.parametrize(("p", "q"), [(1.0, 1.0), (0.5, 2.0), (2.0, 0.5), (0.25, 4.0), (4.0, 1.0), (0.25, 0.5), (1.0, 0.25)])
def test_node2vec_second_steps_match_exact_probabilities(p, q):
    walks = node2vec_walks(small_graph(), walks_per_node=2500, walk_length=6, p=p, q=q, seed=7)
    # Every (t, v, x) triple along a walk is a second-order step with the same law.
    t, v, x = walks[:, :-2].ravel(), walks[:, 1:-1].ravel(), walks[:, 2:].ravel()
    ok = x >= 0
    triples, n = np.unique(np.stack([t[ok], v[ok], x[ok]], axis=1), axis=0, return_counts=True)
    counts: dict = {}
    for (a, b, c), k in zip(triples.tolist(), n.tolist()):
        counts.setdefault((a, b), {})[c] = k
    groups = [g for g, obs in counts.items() if sum(obs.values()) > 2000]
    assert len(groups) >= 10
    check_frequencies(counts, {(a, b): exact_node2vec(a, b, p, q) for a, b in groups})


def test_node2vec_first_step_is_first_order():
    walks = node2vec_walks(small_graph(), walks_per_node=8000, walk_length=2, p=0.25, q=4.0, seed=3)
    counts: dict = {}
    for v, x in walks.tolist():
        counts.setdefault(v, {}).setdefault(x, 0)
        counts[v][x] += 1
    check_frequencies(counts, {v: exact_first_order(v) for v in range(N) if v != 6})


@pytest.mark.parametrize("walker", ["deepwalk", "node2vec"])
def test_walks_are_seeded_and_follow_edges(walker):
    rng = np.random.default_rng(0)
    n = 300
    graph = sp.random(n, n, density=0.03, random_state=rng, format="csr")
    graph.data = np.ceil(graph.data * 5)

    def run(seed):
        if walker == "deepwalk":
            return deepwalk_walks(graph, 3, 15, seed)
        return node2vec_walks(graph, 3, 15, 0.5, 2.0, seed)

    walks = run(11)
    assert walks.dtype == np.int32 and walks.shape == (3 * int((np.diff(graph.indptr) > 0).sum()), 15)
    np.testing.assert_array_equal(walks, run(11))
    assert not np.array_equal(walks, run(12))
    a, b = walks[:, :-1].ravel(), walks[:, 1:].ravel()
    moved = b >= 0
    assert (graph[a[moved], b[moved]] > 0).all()
    # Padding only after a dead end, and then to the end of the row.
    stopped = (a >= 0) & (b < 0)
    assert (np.diff(graph.indptr)[a[stopped]] == 0).all()
    assert ((walks[:, 1:] >= 0) <= (walks[:, :-1] >= 0)).all()


@pytest.mark.parametrize("walker", [
    lambda g, s: deepwalk_walks(g, 1, 5, 0, start_nodes=s),
    lambda g, s: node2vec_walks(g, 1, 5, 0.5, 2.0, 0, start_nodes=s)])
def test_dead_ends_are_padded(walker):
    chain = sp.csr_matrix((np.ones(2), ([0, 1], [1, 2])), shape=(4, 4))
    walks = walker(chain, np.array([0, 1, 2, 3]))
    np.testing.assert_array_equal(walks, [[0, 1, 2, -1, -1], [1, 2, -1, -1, -1], [2, -1, -1, -1, -1],
                                          [3, -1, -1, -1, -1]])
    assert walk_steps(walks) == 3
    assert walks_to_sentences(walks) == [[0, 1, 2], [1, 2], [2], [3]]


def test_default_start_nodes_and_order():
    walks = deepwalk_walks(small_graph(), 3, 4, seed=0)
    starts = np.arange(6)  # node 6 has no out-edge, so no walk starts there
    np.testing.assert_array_equal(walks[:, 0], np.tile(starts, 3))


def test_unsorted_and_zero_weight_edges():
    # Column indices out of order and an explicit zero: the zero edge is never taken.
    graph = sp.csr_matrix((np.array([1.0, 0.0, 3.0]), np.array([2, 1, 0]), np.array([0, 3, 3, 3])), shape=(3, 3))
    walks = deepwalk_walks(graph, 4000, 2, seed=5, start_nodes=np.array([0]))
    assert set(walks[:, 1].tolist()) == {0, 2}
    assert abs((walks[:, 1] == 0).mean() - 0.75) < 0.03


def test_bad_input_is_refused():
    with pytest.raises(RecallError, match="p > 0"):
        node2vec_walks(small_graph(), 1, 5, p=0, q=1, seed=0)
    with pytest.raises(RecallError, match="negative"):
        deepwalk_walks(-small_graph(), 1, 5, seed=0)
    with pytest.raises(RecallError, match="square"):
        deepwalk_walks(sp.csr_matrix((2, 3)), 1, 5, seed=0)


def test_guide_table_finds_the_binary_search_edge():
    """The guided search returns exactly the inverse-CDF edge of a plain binary search."""
    from recall.walks import Sampler

    rng = np.random.default_rng(4)
    n = 200
    graph = sp.random(n, n, density=0.1, random_state=rng, format="lil")
    graph[0, :] = 1e-6  # a row of tiny weights with one heavy edge: long guide buckets
    graph[0, 5] = 1e3
    graph = sp.csr_matrix(graph)
    sampler = Sampler.of(graph)
    nodes = rng.choice(np.flatnonzero(np.diff(graph.indptr) > 0), 200_000)
    nodes[:20_000] = 0
    u = rng.random(nodes.size)
    u[:10] = np.nextafter(1.0, 0)
    expected = np.minimum(np.searchsorted(sampler.key, nodes + u, side="right"), sampler.indptr[nodes + 1] - 1)
    np.testing.assert_array_equal(sampler.edge_of(nodes, u), expected)
