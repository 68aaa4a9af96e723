"""Vectorised sparse-matrix helpers shared by the channels."""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp


def row_indices(m: sp.csr_matrix) -> np.ndarray:
    """The row number of every stored entry of a CSR matrix."""
    return np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))


def top_k_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest positive entries of each row; ties go to the smaller column.

    Entries come back sorted within each row by score, best first, so the
    position of an entry inside its row is its rank.
    """
    m = sp.csr_matrix(m)
    m.sum_duplicates()
    m.eliminate_zeros()
    rows = row_indices(m)
    keep_positive = m.data > 0
    rows, cols, vals = rows[keep_positive], m.indices[keep_positive], m.data[keep_positive]
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    counts = np.bincount(rows, minlength=m.shape[0])
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    position = np.arange(rows.size) - starts[rows]
    keep = position < k
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    indptr = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=m.shape[0]))))
    out = sp.csr_matrix((vals, cols, indptr), shape=m.shape)
    out.has_sorted_indices = False  # sorted by score, not by column: keep scipy from assuming otherwise
    return out


def csr_to_frame(m: sp.csr_matrix, row_ids: pl.Series, col_ids: pl.Series,
                 row_name: str, col_name: str, row_offset: int = 0) -> pl.DataFrame:
    """Long table ``row_name, col_name, score, rank`` of a sparse matrix's positive entries.

    Rank 1 is the best score in its row; ties go to the smaller column index.
    ``row_offset`` is added to the row numbers (for matrices holding one block of rows).
    """
    rows = row_indices(m)
    positive = m.data > 0
    rows, cols, vals = rows[positive], m.indices[positive].astype(np.int64), m.data[positive]
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, rows, side="left")
    return pl.DataFrame({
        row_name: row_ids.gather(rows + row_offset),
        col_name: col_ids.gather(cols),
        "score": vals.astype(np.float64),
        "rank": (np.arange(rows.size) - starts + 1).astype(np.int32),
    })


def row_normalise_max(m: sp.csr_matrix) -> sp.csr_matrix:
    """Divide each row by its largest entry, so every trigger's best neighbour scores 1."""
    m = sp.csr_matrix(m, copy=True)
    row_max = np.zeros(m.shape[0])
    nonempty = np.diff(m.indptr) > 0
    row_max[nonempty] = np.maximum.reduceat(m.data, m.indptr[:-1][nonempty])
    scale = np.divide(1.0, row_max, out=np.zeros_like(row_max), where=row_max > 0)
    m.data = m.data * np.repeat(scale, np.diff(m.indptr))
    return m


def blocks(n: int, size: int):
    """Yield ``(start, stop)`` ranges covering ``range(n)`` in steps of ``size``."""
    for start in range(0, n, max(1, size)):
        yield start, min(n, start + size)
