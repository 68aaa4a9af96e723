"""Random walks: empirical transition frequencies against the exact DeepWalk / Node2Vec probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import chi2

from recall.errors import RecallError
from recall.walks import EdgeSet, Sampler, _hash, deepwalk_walks, node2vec_walks, walk_steps, walks_to_sentences

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


def nasty_graph(seed: int = 4, n: int = 300) -> sp.csr_matrix:
    """Weights over ten orders of magnitude, ties, one-edge rows, a dense row and a dead end."""
    rng = np.random.default_rng(seed)
    graph = sp.random(n, n, density=0.05, random_state=rng, format="lil")
    graph[0, :] = 1e-6  # a dense row of tiny weights around one heavy edge
    graph[0, 5] = 1e3
    graph[1, :] = 0
    graph[1, 7] = 2.0  # a single out-edge
    graph[2, :] = 0
    graph[2, :40] = 3.0  # all weights equal: every slot keeps its own edge
    graph[3, :] = 0  # a dead end
    graph = sp.csr_matrix(graph)
    graph.data = np.where(rng.random(graph.nnz) < 0.3, np.round(graph.data * 4) + 1,
                          10.0 ** rng.uniform(-5, 5, graph.nnz))
    return graph


def test_alias_tables_reproduce_edge_probabilities():
    """Each slot's own / alias mass, summed per edge, is the edge's share of its row's weight."""
    graph = nasty_graph()
    sampler = Sampler.of(graph)
    prob = graph.data / np.repeat(np.asarray(graph.sum(axis=1)).ravel(), np.diff(graph.indptr))
    np.testing.assert_allclose(sampler.implied_probabilities(), prob, rtol=1e-11, atol=1e-15)
    assert ((sampler.own >= 0) & (sampler.own <= 1)).all()
    rows = np.repeat(np.arange(graph.shape[0]), np.diff(graph.indptr))
    assert (rows[sampler.alias] == rows).all()  # an alias never leaves its row


def test_alias_step_is_the_inverse_of_its_distribution():
    """A fine grid of uniforms through ``step`` hits each out-edge in proportion to its weight."""
    graph = nasty_graph(seed=5, n=60)
    sampler = Sampler.of(graph)
    grid = (np.arange(2**16) + 0.5) / 2**16
    for v in [0, 1, 2, 3, 10, 11, 12]:
        reached = sampler.step(np.full(grid.size, v), grid)
        row = graph[v]
        if row.nnz == 0:
            assert (reached == -1).all()  # a dead end goes to -1
            continue
        freq = np.bincount(reached, minlength=graph.shape[0]) / grid.size
        expected = np.zeros(graph.shape[0])
        expected[row.indices] = row.data / row.data.sum()
        # Each slot holds 2^16 / deg grid points; a threshold splits one point at most.
        assert np.abs(freq - expected).max() <= 2.0 * row.nnz / grid.size, v
    assert (sampler.step(np.array([-1, -1]), np.array([0.0, 0.999])) == -1).all()  # -1 stays -1


@pytest.mark.parametrize("walker", ["deepwalk", "node2vec"])
def test_walks_do_not_depend_on_the_number_of_threads(walker, monkeypatch):
    """Every block has its own seeded stream, so 1, 2 or 3 threads give the same walks."""
    import recall.walks as walks_module

    monkeypatch.setattr(walks_module, "BLOCK", 97)  # many blocks on a small graph
    graph = nasty_graph(seed=6, n=200)

    def run(workers, seed=3):
        if walker == "deepwalk":
            return deepwalk_walks(graph, 4, 12, seed, workers=workers)
        return node2vec_walks(graph, 4, 12, 0.5, 2.0, seed, workers=workers)

    one = run(1)
    assert one.shape[0] > 5 * 97
    for workers in (2, 3):
        np.testing.assert_array_equal(run(workers), one)
    assert not np.array_equal(run(2, seed=4), one)


@pytest.mark.parametrize("n", [1000, 100_000])  # int32 keys, then int64 keys (n * n >= 2^31)
def test_edge_set_against_a_python_set(n):
    rng = np.random.default_rng(n)
    keys = np.unique(rng.integers(0, n * n, 5000))
    # Pile 40 keys onto one home bucket, so that buckets overflow into their neighbours.
    probe = EdgeSet.of(keys, key_bound=n * n + n + 1)
    many = rng.integers(0, n * n, 400_000)
    same_home = many[_hash(many.astype(probe.dtype), probe.bits) == 7][:40]
    keys = np.unique(np.concatenate([keys, same_home]))
    edges = EdgeSet.of(keys, key_bound=n * n + n + 1)
    assert edges.full.any()
    queries = np.concatenate([keys, rng.integers(-n - 1, n * n, 20_000), same_home + 1])
    stored = set(keys.tolist())
    expected = np.array([key in stored for key in queries.tolist()])
    np.testing.assert_array_equal(edges.contains(queries), expected)
    position = edges.find(queries)
    np.testing.assert_array_equal(position >= 0, expected)
    np.testing.assert_array_equal(keys[position[expected]], queries[expected])


def test_short_walks():
    graph = small_graph()
    for walker in (lambda length: deepwalk_walks(graph, 2, length, seed=0),
                   lambda length: node2vec_walks(graph, 2, length, 0.5, 2.0, seed=0)):
        np.testing.assert_array_equal(walker(1), np.tile(np.arange(6), 2)[:, None])
        two = walker(2)
        assert all((a, b) in EDGES for a, b in two.tolist())
