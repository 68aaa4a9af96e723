"""Walk corpora sized by the events (recall/corpus.py)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recall.corpus import WalkParams, neighbour_fill, walk_corpus, walk_plan, walk_starts
from recall.graph import GraphParams


def star_graph() -> sp.csr_matrix:
    # 0 -> 1 (weight 30), 0 -> 2 (10); 1 -> 0 (4); 2 -> 3 (1); 3 has no out-edge; 4 is isolated.
    rows, cols, weights = [0, 0, 1, 2], [1, 2, 0, 3], [30.0, 10.0, 4.0, 1.0]
    return sp.csr_matrix((weights, (rows, cols)), shape=(5, 5))


def test_starts_are_proportional_to_out_strength_within_one():
    graph = star_graph()
    p = WalkParams(walks_per_transition=2.0, min_walks=1, min_walks_per_item=0)
    starts = walk_starts(graph, p, seed=0)
    counts = np.bincount(starts, minlength=5)
    expected = 2.0 * 45 * np.array([40, 4, 1, 0, 0]) / 45
    assert (np.abs(counts - expected) < 1).all()
    assert counts[3] == counts[4] == 0  # no out-edge: no walks of its own
    # Stochastic rounding is unbiased: over seeds the mean count is the expectation.
    mean = np.mean([np.bincount(walk_starts(graph, WalkParams(walks_per_transition=0.3, min_walks=1, min_walks_per_item=0), s),
                                minlength=5) for s in range(400)], axis=0)
    np.testing.assert_allclose(mean, 0.3 * np.array([40, 4, 1, 0, 0]), atol=0.15)


def test_min_walks_floor_min_degree_and_per_node_sizing():
    graph = star_graph()
    assert walk_starts(graph, WalkParams(walks_per_transition=0.1, min_walks=450, min_walks_per_item=0), 0).size == pytest.approx(450, abs=2)
    counts = np.bincount(walk_starts(graph, WalkParams(min_degree=2, min_walks=100), 0), minlength=5)
    assert counts[0] == 100 and counts[1:].sum() == 0  # only node 0 has two out-neighbours
    counts = np.bincount(walk_starts(graph, WalkParams(walks_per_node=3), 0), minlength=5)
    assert counts.tolist() == [3, 3, 3, 0, 0]
    assert walk_starts(graph, WalkParams(), 0).tolist() == walk_starts(graph, WalkParams(), 0).tolist()
    # The per-item floor: every item with an out-edge starts at least that many.
    counts = np.bincount(walk_starts(graph, WalkParams(walks_per_transition=0.01, min_walks=1,
                                                       min_walks_per_item=3), 0), minlength=5)
    assert counts.tolist() == [3, 3, 3, 0, 0]


def test_floor_walks_are_short_and_the_budget_walks_full_length():
    graph = star_graph()
    p = WalkParams(walks_per_transition=2.0, min_walks=1, min_walks_per_item=5, walk_length=8, floor_walk_length=3)
    starts, lengths = walk_plan(graph, p, seed=0)
    # Budget 2 x 45 = 90 walks: shares 80, 8 and 2 (exact); node 2 tops up to 5 with 3 floor walks.
    full = np.bincount(starts[lengths == 8], minlength=5)
    short = np.bincount(starts[lengths == 3], minlength=5)
    assert full.tolist() == [80, 8, 2, 0, 0] and short.tolist() == [0, 0, 3, 0, 0]
    # The lengths change no start: the same walks, in the same order, as at full length.
    assert starts.tolist() == walk_starts(graph, p.model_copy(update={"floor_walk_length": None}), 0).tolist()
    assert (walk_plan(graph, p.model_copy(update={"floor_walk_length": None}), 0)[1] == 8).all()


def test_corpus_cuts_floor_walks_after_drawing_them():
    from recall.context import TrainData
    from tests.test_eges import planted

    data = TrainData.build(planted(), seed=1)
    settings = dict(walk_length=10, min_walks=50, walks_per_transition=0.01, min_walks_per_item=3)
    long = walk_corpus(data, GraphParams(), WalkParams(**settings, floor_walk_length=None)).walks
    cut = walk_corpus(data, GraphParams(), WalkParams(**settings, floor_walk_length=4)).walks
    graph = walk_corpus(data, GraphParams(), WalkParams(**settings)).graph
    _, lengths = walk_plan(graph, WalkParams(**settings, floor_walk_length=4), data.seed)
    assert (lengths == 4).sum() > 0 and (lengths == 10).sum() > 0
    short = lengths == 4
    np.testing.assert_array_equal(cut[~short], long[~short])
    np.testing.assert_array_equal(cut[short, :4], long[short, :4])
    assert (cut[short, 4:] == -1).all()


def test_neighbour_fill_is_the_weighted_mean_of_neighbours_with_vectors():
    graph = star_graph()
    vectors = np.array([[1, 0], [0, 1], [0, 0], [0, 0], [0, 0]], dtype=np.float32)
    mask = np.array([True, True, False, False, False])
    filled, new_mask = neighbour_fill(graph, vectors, mask)
    # Item 2: edges 0 -> 2 (10) and 2 -> 3 (1); only 0 has a vector.
    np.testing.assert_allclose(filled[2], [1, 0])
    # Item 3: only neighbour 2, which had no vector before the fill; item 4: no edges.
    assert new_mask.tolist() == [True, True, True, False, False]
    np.testing.assert_array_equal(filled[:2], vectors[:2])


def test_deepwalk_and_eges_share_one_corpus():
    from recall.channels.deepwalk import DeepWalk
    from recall.channels.eges import EGES
    from recall.context import TrainData
    from tests.test_eges import planted

    data = TrainData.build(planted(), seed=1)
    settings = dict(walk_length=8, min_walks=200, session_gap_hours=1.0)
    deepwalk = DeepWalk(DeepWalk.Params(**settings))
    eges = EGES(EGES.Params(**settings))
    assert eges.walks(data) is deepwalk.walks(data)
    other = walk_corpus(data, GraphParams(session_gap_hours=1.0), WalkParams(walk_length=8, min_walks=300))
    assert other.walks is not deepwalk.walks(data) and other.walks.shape[0] >= 300
