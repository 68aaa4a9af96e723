"""Sparse helpers against brute force, with many ties."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recall.sparse import csr_to_frame, row_normalise_max, top_k_dense, top_k_per_row
import polars as pl


@pytest.mark.parametrize("levels", [2, 8, 256])
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("k", [1, 3, 8, 40])
def test_top_k_per_row_matches_sorting(seed, k, levels):
    """Exact against a full sort, ties included; few histogram levels stress the pre-filter."""
    rng = np.random.default_rng(seed)
    rows, cols = 30, 60
    dense = rng.integers(-2, 5, size=(rows, cols)).astype(float)  # small ints: plenty of ties
    if seed % 2:
        dense = dense * rng.random((rows, cols))  # continuous values too
    dense[rng.random((rows, cols)) < 0.4] = 0
    dense[3] = 0.0  # an empty row
    got = top_k_per_row(sp.csr_matrix(dense), k, levels=levels).toarray()
    for r in range(rows):
        entries = [(-dense[r, c], c) for c in range(cols) if dense[r, c] > 0]
        keep = sorted(entries)[:k]
        expected = np.zeros(cols)
        for negative, c in keep:
            expected[c] = -negative
        np.testing.assert_array_equal(got[r], expected)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 3, 8, 40, 80])
def test_top_k_dense_equals_top_k_per_row(seed, k):
    """The dense selection keeps exactly what the sparse one keeps, ties and negatives included."""
    rng = np.random.default_rng(seed)
    dense = rng.integers(-3, 4, size=(25, 60)).astype(np.float32)
    if seed % 2:
        dense = dense * rng.random((25, 60)).astype(np.float32)
    dense[4] = -1.0  # a row without positive entries
    got = top_k_dense(dense, k)
    expected = top_k_per_row(sp.csr_matrix(dense.astype(np.float64)), k)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got.toarray(), expected.toarray())


def test_csr_to_frame_ranks_by_score_then_column():
    m = sp.csr_matrix(np.array([[0, 2.0, 5.0, 2.0], [1.0, 0, 0, 0]]))
    frame = csr_to_frame(m, pl.Series([10, 11]), pl.Series([0, 1, 2, 3]), "a", "b")
    assert frame.rows() == [(10, 2, 5.0, 1), (10, 1, 2.0, 2), (10, 3, 2.0, 3), (11, 0, 1.0, 1)]


def test_csr_to_frame_matches_a_brute_force_ranking_with_ties():
    rng = np.random.default_rng(3)
    dense = rng.integers(0, 4, size=(40, 30)).astype(np.float64) / 2  # many ties, many zeros
    frame = csr_to_frame(sp.csr_matrix(dense), pl.Series(range(40)), pl.Series(range(30)), "a", "b")
    expected = []
    for r in range(40):
        ranked = sorted((c for c in range(30) if dense[r, c] > 0), key=lambda c: (-dense[r, c], c))
        expected += [(r, c, dense[r, c], rank) for rank, c in enumerate(ranked, 1)]
    assert frame.rows() == expected


def test_row_normalise_max():
    m = row_normalise_max(sp.csr_matrix(np.array([[0, 2.0, 4.0], [0, 0, 0], [3.0, 0, 0]])))
    np.testing.assert_allclose(m.toarray(), [[0, 0.5, 1.0], [0, 0, 0], [1.0, 0, 0]])


def test_top_k_per_row_exclude_mask():
    dense = np.array([[5.0, 4.0, 3.0], [1.0, 2.0, 3.0]])
    got = top_k_per_row(sp.csr_matrix(dense), 1, exclude=lambda r, c: r == c).toarray()
    np.testing.assert_array_equal(got, [[0, 4.0, 0], [0, 0, 3.0]])
