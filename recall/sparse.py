"""Vectorised sparse-matrix helpers shared by the channels."""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp


def row_indices(m: sp.csr_matrix) -> np.ndarray:
    """The row number of every stored entry of a CSR matrix."""
    return np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))


def top_k_per_row(m: sp.csr_matrix, k: int, exclude=None) -> sp.csr_matrix:
    """Keep the ``k`` largest positive entries of each row; ties go to the smaller column.

    Linear time: each long row's k-th largest value comes from ``np.partition`` on
    rows padded into dense buckets of similar length (a loop over ~log2(max row
    length) buckets, never over rows); then entries above it are kept, and entries
    equal to it in column order until the row has ``k``. Entries come back in
    column order; :func:`csr_to_frame` ranks them. ``exclude(rows, cols)``, if
    given, returns a mask of entries to drop before selecting (e.g. the diagonal).
    """
    m = sp.csr_matrix(m)
    m.sum_duplicates()  # canonical: sorted columns, which the tie-break relies on
    rows = row_indices(m)
    values = m.data.astype(np.float64, copy=True)
    drop = values <= 0
    if exclude is not None:
        drop |= exclude(rows, m.indices)
    values[drop] = -np.inf  # never kept: the threshold is -inf at the lowest
    counts = np.diff(m.indptr)
    threshold = np.full(m.shape[0], -np.inf)
    long_rows = np.flatnonzero(counts > k)
    if long_rows.size:
        widths = 1 << np.ceil(np.log2(counts[long_rows])).astype(np.int64)
        for width in np.unique(widths):
            bucket = long_rows[widths == width]
            lengths = counts[bucket]
            dense = np.full((bucket.size, width), -np.inf)
            local = np.repeat(np.arange(bucket.size), lengths)
            within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            dense[local, within] = values[np.repeat(m.indptr[bucket], lengths) + within]
            threshold[bucket] = -np.partition(-dense, k - 1, axis=1)[:, k - 1]
    cut = threshold[rows]
    keep = values > cut
    tied = np.flatnonzero((values == cut) & (cut > -np.inf))
    if tied.size:
        room = k - np.bincount(rows[keep], minlength=m.shape[0])
        tied_rows = rows[tied]  # ascending, and columns ascend within a row
        tied_rank = np.arange(tied.size) - np.searchsorted(tied_rows, tied_rows)
        keep[tied[tied_rank < room[tied_rows]]] = True
    indptr = np.concatenate(([0], np.cumsum(np.bincount(rows[keep], minlength=m.shape[0]))))
    return sp.csr_matrix((m.data[keep], m.indices[keep], indptr), shape=m.shape)


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
