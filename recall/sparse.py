"""Vectorised sparse-matrix helpers shared by the channels."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl
import scipy.sparse as sp


def row_indices(m: sp.csr_matrix) -> np.ndarray:
    """The row number of every stored entry of a CSR matrix."""
    return np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))


def top_k_per_row(m: sp.csr_matrix, k: int, exclude=None, levels: int = 256) -> sp.csr_matrix:
    """Keep the ``k`` largest positive entries of each row; ties go to the smaller column.

    Linear time, in two stages. A histogram pass (``levels`` buckets per row, up to
    the row maximum) finds the bucket holding each row's k-th largest value and
    drops everything below it: exact, since bucketing keeps the order. On the
    survivors, each long row's k-th largest value comes from ``np.partition`` on
    rows padded into dense buckets of similar length (a loop over ~log2(max row
    length) widths, never over rows); entries above it are kept, and entries
    equal to it in column order until the row has ``k``. ``exclude(rows, cols)``,
    if given, masks entries to drop first (e.g. the diagonal). Entries keep their
    order within the row; :func:`csr_to_frame` ranks them. The input must hold no
    duplicate (row, col) entries (sparse products and scipy conversions have none).
    """
    m = sp.csr_matrix(m)  # duplicate (row, col) entries are not expected: products have none
    rows = row_indices(m)
    keep = m.data > 0
    if exclude is not None:
        keep &= ~exclude(rows, m.indices)
    counts = np.bincount(rows[keep], minlength=m.shape[0])
    long_rows = counts > k
    if long_rows.any():
        # Only rows longer than k need pruning; the histogram's cost is per long row.
        in_long = keep & long_rows[rows]
        long_index = np.cumsum(long_rows) - 1
        keep[in_long] = _histogram_survivors(m.data[in_long], long_index[rows[in_long]],
                                             int(long_rows.sum()), k, levels)
    rows, cols, values = rows[keep], m.indices[keep], m.data[keep]
    selected = _exact_top_k(rows, cols, values, m.shape[0], k)
    rows, cols, values = rows[selected], cols[selected], values[selected]
    indptr = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=m.shape[0]))))
    return sp.csr_matrix((values, cols, indptr), shape=m.shape)


def top_k_dense(block: np.ndarray, k: int) -> sp.csr_matrix:
    """:func:`top_k_per_row` of a dense block (positive entries only, ties to the smaller column).

    Each row's k-th largest value comes from ``np.partition``; only entries at or
    above it go into the sparse selection, so no sparse copy of the whole block is made.
    """
    if block.shape[1] > k:
        kth = -np.partition(-block, k - 1, axis=1)[:, k - 1]
        keep = (block >= kth[:, None]) & (block > 0)
    else:
        keep = block > 0
    rows, cols = np.nonzero(keep)
    candidates = sp.csr_matrix((block[rows, cols].astype(np.float64), (rows, cols)), shape=block.shape)
    return top_k_per_row(candidates, k)


def _histogram_survivors(values, rows, n_rows, k, levels):
    """Mask of entries in or above the bucket of their row's k-th largest value.

    ``values`` are positive, ``rows`` sorted row numbers in ``range(n_rows)``.
    """
    row_max = np.zeros(n_rows)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])  # each row's run of entries
    row_max[rows[starts]] = np.maximum.reduceat(values, starts)
    scale = np.divide(levels, row_max, out=np.zeros_like(row_max), where=row_max > 0)
    bucket = np.minimum((values * scale[rows]).astype(np.int64), levels - 1)
    hist = np.bincount(rows * levels + bucket, minlength=n_rows * levels)
    at_or_above = np.cumsum(hist.reshape(n_rows, levels)[:, ::-1], axis=1)
    reached = at_or_above >= k
    threshold = np.where(reached.any(axis=1), levels - 1 - reached.argmax(axis=1), 0)
    return bucket >= threshold[rows]


def _exact_top_k(rows, cols, values, n_rows, k):
    """Mask of the k largest values per row, ties to the smaller column (rows sorted)."""
    counts = np.bincount(rows, minlength=n_rows)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    threshold = np.full(n_rows, -np.inf)
    long_rows = np.flatnonzero(counts > k)
    if long_rows.size:
        widths = 1 << np.ceil(np.log2(counts[long_rows])).astype(np.int64)
        for width in np.unique(widths):
            bucket = long_rows[widths == width]
            lengths = counts[bucket]
            dense = np.full((bucket.size, width), -np.inf)
            local = np.repeat(np.arange(bucket.size), lengths)
            within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            dense[local, within] = values[np.repeat(starts[bucket], lengths) + within]
            threshold[bucket] = -np.partition(-dense, k - 1, axis=1)[:, k - 1]
    cut = threshold[rows]
    keep = values > cut
    tied = np.flatnonzero((values == cut) & (cut > -np.inf))
    if tied.size:
        room = k - np.bincount(rows[keep], minlength=n_rows)
        tied = tied[np.lexsort((cols[tied], rows[tied]))]  # only the ties need column order
        tied_rows = rows[tied]
        run_starts = np.flatnonzero(np.r_[True, tied_rows[1:] != tied_rows[:-1]])
        run_lengths = np.diff(np.r_[run_starts, tied.size])
        tied_rank = np.arange(tied.size) - np.repeat(run_starts, run_lengths)
        keep[tied[tied_rank < room[tied_rows]]] = True
    return keep


def csr_to_frame(m: sp.csr_matrix, row_ids: pl.Series, col_ids: pl.Series,
                 row_name: str, col_name: str, row_offset: int = 0,
                 row_index: np.ndarray | None = None) -> pl.DataFrame:
    """Long table ``row_name, col_name, score, rank`` of a sparse matrix's positive entries.

    Rank 1 is the best score in its row; ties go to the smaller column index.
    For matrices holding a subset of rows, ``row_offset`` is added to the row
    numbers (a contiguous block), or ``row_index[r]`` is the real row of row ``r``.
    """
    rows = row_indices(m)
    positive = m.data > 0
    rows, cols, vals = rows[positive], m.indices[positive].astype(np.int64), m.data[positive]
    # Polars' multithreaded sort: about 2.5x np.lexsort((cols, -vals, rows)) on a 5.5M-entry table.
    order = (pl.DataFrame({"row": rows, "score": vals, "col": cols})
             .with_row_index("order")
             .sort(["row", "score", "col"], descending=[False, True, False])["order"].to_numpy())
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, rows, side="left")
    real_rows = rows + row_offset if row_index is None else np.asarray(row_index, dtype=np.int64)[rows]
    return pl.DataFrame({
        row_name: row_ids.gather(real_rows),
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


def row_blocks(rows: np.ndarray | None, n: int, size: int):
    """Yield the row numbers ``rows`` (all of ``range(n)`` when None) in chunks of ``size``.

    A chunk is a ``slice`` when its rows are consecutive (cheap views of CSR rows)
    and an index array otherwise; both index numpy and scipy the same way.
    """
    if rows is None:
        for start, stop in blocks(n, size):
            yield slice(start, stop)
        return
    rows = np.asarray(rows, dtype=np.int64)
    for start, stop in blocks(rows.size, size):
        chunk = rows[start:stop]
        if chunk.size and chunk[-1] - chunk[0] == chunk.size - 1:
            yield slice(int(chunk[0]), int(chunk[-1]) + 1)
        else:
            yield chunk


def chunk_rows(chunk: slice | np.ndarray) -> np.ndarray:
    """The row numbers of a chunk from :func:`row_blocks`."""
    if isinstance(chunk, slice):
        return np.arange(chunk.start, chunk.stop, dtype=np.int64)
    return chunk


def cost_blocks(costs: np.ndarray, max_rows: int, max_cost: int):
    """Yield ``(start, stop)`` row ranges of at most ``max_rows`` rows and ``max_cost`` total cost.

    A single row costing more than ``max_cost`` gets a block of its own: it
    cannot be split, and skipping it would silently drop a user.

    Parameters
    ----------
    costs : np.ndarray
        Non-negative cost of each row (an upper bound of the entries it will produce).
    max_rows, max_cost : int
        Limits per block.

    Yields
    ------
    tuple[int, int]
        Consecutive ranges covering ``range(len(costs))``.
    """
    cumulative = np.cumsum(costs, dtype=np.float64)
    n = costs.size
    start = 0
    while start < n:
        before = cumulative[start - 1] if start else 0.0
        stop = int(np.searchsorted(cumulative, before + max_cost, side="right"))
        stop = min(max(stop, start + 1), start + max_rows, n)
        yield start, stop
        start = stop


def blockwise_product(left: sp.csr_matrix, right: sp.spmatrix, finish, block: int,
                      threads: int = 0, max_work: int = 300_000) -> sp.csr_matrix:
    """``left @ right``, ``block`` rows of ``left`` at a time, each block kept as ``finish(start, block)``.

    ``finish`` turns the untruncated rows ``start:start + len(block)`` of the
    product into the rows to keep (e.g. masked and truncated to the top K), so
    memory holds a few untruncated blocks, never the whole product. scipy's
    product and numpy's selection release the GIL, so blocks run on ``threads``
    threads (0: one per core); at most that many untruncated blocks are alive at
    once, and each block's result does not depend on the thread count.
    """
    n = left.shape[0]
    workers = threads or os.cpu_count() or 1
    size = min(block, max(1, math.ceil(n / workers)))
    # Blocks are also cut by their work (multiply-adds, an upper bound of the entries they
    # produce), so each untruncated block stays small enough for the CPU caches: the
    # selection in ``finish`` makes several passes over it.
    left = sp.csr_matrix(left)
    right_lengths = np.diff(sp.csr_matrix(right).indptr).astype(np.float64)
    work = np.bincount(row_indices(left), weights=right_lengths[left.indices], minlength=n)

    def one(bounds: tuple[int, int]) -> sp.csr_matrix:
        start, stop = bounds
        return finish(start, sp.csr_matrix(left[start:stop] @ right))

    with ThreadPoolExecutor(workers) as pool:
        kept = list(pool.map(one, cost_blocks(work, size, max_work)))
    return sp.vstack(kept, format="csr") if kept else sp.csr_matrix((n, right.shape[1]))
