"""EASE: a closed-form linear item-item model (Steck, "Embarrassingly Shallow Autoencoders", 2019).

With ``X`` the binary users x items engagement (``behaviors``, inside
``window_days``), EASE solves ``min_B ||X - X B||^2 + lambda ||B||^2`` with
``diag(B) = 0``, in closed form:

    P = (X^T X + lambda I)^-1
    B = I - P diag(1 / diag(P))        i.e.  B_ij = -P_ij / P_jj  (i != j),  B_ii = 0

Row i of ``B`` says how much engaging with i predicts each other item; its
``top_k`` positive weights make item i's row of the i2i table (negative weights
are dropped rather than kept: the shared trigger expansion sums scores, and a
negative one would cancel another trigger's evidence). Recall is the shared
trigger expansion, so with binary triggers and no truncation a user's scores
would be EASE's own ``x_u B``; here triggers carry behaviour and recency weights
and rows are cut to ``top_k``.

**Memory.** ``B`` is dense in the catalogue, so EASE runs on the ``max_items``
items with the most engaged users (ties: the smaller item index); the others get
no row and are never recalled, and how many were cut is logged and recorded in
the manifest (``channel_facts.ease``). The Gram matrix is built densely, block
by block of rows, into one ``max_items^2`` array of ``dtype`` and inverted in
place (LAPACK Cholesky ``potrf`` + ``potri``: ``X^T X + lambda I`` is symmetric
positive definite for ``lambda > 0``), so the peak is about one such matrix plus
a row block: the default 10,000 items take 0.4 GB in float32 (0.8 GB in float64),
20,000 items 1.6 GB (3.2 GB), 30,000 items 3.6 GB (7.2 GB). Time grows as
``max_items^3`` (about ``n^3`` flops for the factorisation and inverse: on two
cores about 6 s at 10,000 items and 30-90 s at 20,000, see BENCHMARKS.md).
float32 halves memory and time and is ample for a ranking (the regularised Gram
is well conditioned); use float64 to compare against a reference.

**Few users.** ``X^T X`` has rank at most the number of users U, and by the
Woodbury identity, with ``K = X X^T`` (U x U) and ``M = (K + lambda I)^-1``,

    P = (I - X^T M X) / lambda,    X P = M X,    diag(P)_j = (1 - x_j^T M x_j) / lambda

(``x_j`` item j's column). So when the users engaging with the kept items are
at most half as many as the items (the Taobao 84k log: 815 users, 10,000 kept
items), :class:`EASEWeights` solves the U x U system in float64 instead and
builds ``B``'s rows block by block from ``M X`` (U x items): ``U^3`` plus
``nnz(X) x items`` flops instead of ``items^3``, and at most half the memory.
The weights are the same up to rounding (a test checks both solves against numpy).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import ConfigDict, Field

from recall import schema as S
from recall.context import IIDX, UIDX, TrainData
from recall.errors import RecallError
from recall.interface import BehaviorList, ChannelParams, I2IChannel, Span
from recall.logs import event
from recall.sparse import blocks, row_normalise_max, top_k_dense

log = logging.getLogger("recall")


class EASEParams(ChannelParams):
    # `lambda` is a Python keyword: the field is `lam`, read and written as `lambda`.
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    behaviors: BehaviorList = Field(default_factory=lambda: ["click", "fav", "cart", "buy"],
                                    description="behaviours that count as engagement")
    window_days: Span = Field(None, gt=0, description="only the last N days of training data (inf: all)")
    lam: float = Field(20.0, gt=0, alias="lambda", description="L2 penalty on B (Steck's lambda)")
    max_items: int = Field(10_000, ge=2, description="items kept, by engaged users (memory ~ max_items^2)")
    dtype: Literal["float32", "float64"] = Field("float32", description="precision of the dense solve")
    top_k: int = Field(100, ge=1, description="neighbours kept per item")
    normalize: bool = Field(False, description="divide each row by its maximum")
    row_block: int = Field(2048, ge=1, description="rows of the Gram and of B per block (temporaries)")


def invert_spd_in_place(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite C-contiguous matrix, computed in its own memory.

    LAPACK's Cholesky factorisation and inverse (``potrf``, ``potri``) overwrite
    the matrix; only one triangle comes back, and the other is filled in from it
    block by block (no index arrays of the whole matrix).
    """
    from scipy.linalg import lapack

    n = matrix.shape[0]
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (matrix,))
    # A symmetric C-contiguous matrix is its own transpose, which is Fortran-contiguous:
    # LAPACK works on that view in place. Its upper triangle is the C view's lower one.
    factor, info = potrf(matrix.T, lower=False, overwrite_a=True, clean=False)
    if info == 0:
        _, info = potri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise RecallError(f"the EASE Gram matrix is not positive definite (LAPACK info {info}); "
                          "raise channels.ease.lambda")
    step = 1024
    for start, stop in blocks(n, step):
        matrix[start:stop, stop:] = matrix[stop:, start:stop].T
        square = matrix[start:stop, start:stop]
        upper = np.triu_indices(stop - start, 1)
        square[upper] = square.T[upper]
    return matrix


def ease_weights(x: sp.spmatrix, lam: float, dtype=np.float64, row_block: int = 2048) -> np.ndarray:
    """EASE's weights ``B = I - P diag(1 / diag(P))``, ``P = (X^T X + lam I)^-1``, zero diagonal.

    Parameters
    ----------
    x : sp.spmatrix
        Users x items engagement (binary in EASE; any non-negative weights work).
    lam : float
        The L2 penalty (> 0).
    dtype
        float32 or float64: precision of the solve and of the result.
    row_block : int
        Rows of the Gram matrix built per sparse product (bounds the temporaries).

    Returns
    -------
    np.ndarray
        Dense ``(n_items, n_items)`` ``B`` of ``dtype``: row i holds the weights of
        the other items given item i. Memory: this one array (see the module docstring).
    """
    if lam <= 0:
        raise RecallError(f"EASE needs lambda > 0, got {lam}")
    x = sp.csr_matrix(x, dtype=np.float64)
    n = x.shape[1]
    x_t = sp.csr_matrix(x.T)
    gram = np.empty((n, n), dtype=dtype)
    for start, stop in blocks(n, row_block):
        gram[start:stop] = (x_t[start:stop] @ x).toarray()
    gram[np.diag_indices(n)] += lam
    weights = invert_spd_in_place(gram)
    diagonal = np.diag(weights).copy()
    weights /= -diagonal[None, :]
    np.fill_diagonal(weights, 0)
    return weights


class EASEWeights:
    """EASE's ``B`` for engagement ``x``, solved in item space or, with few users, in user space (module docstring).

    ``rows(start, stop)`` gives ``B[start:stop]`` (dense, ``dtype``) and
    ``scores(x_rows)`` gives ``x_rows @ B`` without forming ``B`` in user space.
    """

    def __init__(self, x: sp.spmatrix, lam: float, dtype=np.float64, row_block: int = 2048):
        if lam <= 0:
            raise RecallError(f"EASE needs lambda > 0, got {lam}")
        self.lam, self.dtype = lam, np.dtype(dtype)
        x = sp.csr_matrix(x, dtype=np.float64)
        n = x.shape[1]
        x = x[np.diff(x.indptr) > 0]  # users without engagement add nothing to X^T X
        self.user_space = 2 * x.shape[0] <= n
        if not self.user_space:
            self.weights = ease_weights(x, lam, self.dtype, row_block)
            return
        self.x_items = sp.csr_matrix(x.T)  # items x users: rows of X^T
        inverse = (x @ x.T).toarray()
        inverse[np.diag_indices_from(inverse)] += lam
        inverse = invert_spd_in_place(inverse)                     # M, float64
        self.mx = np.empty((x.shape[0], n), dtype=self.dtype)      # M X
        self.diagonal = np.empty(n)                                 # diag(P)
        for start, stop in blocks(n, row_block):
            mx = (self.x_items[start:stop] @ inverse).T           # M is symmetric
            self.mx[:, start:stop] = mx
            seen = x[:, start:stop].multiply(mx).sum(axis=0)      # x_j^T M x_j
            self.diagonal[start:stop] = (1.0 - np.asarray(seen).ravel()) / lam

    def rows(self, start: int, stop: int) -> np.ndarray:
        """``B[start:stop]``: row i holds the weights of the other items given item i (zero at i)."""
        if not self.user_space:
            return self.weights[start:stop]
        projected = np.asarray(self.x_items[start:stop] @ self.mx, dtype=np.float64)   # X^T M X rows
        block = projected / (self.lam * self.diagonal[None, :])   # -P_ij / P_jj off the diagonal
        block[np.arange(stop - start), np.arange(start, stop)] = 0.0
        return block.astype(self.dtype, copy=False)

    def scores(self, x_rows: sp.spmatrix) -> np.ndarray:
        """``x_rows @ B`` (dense): EASE's scores of these users' engagement rows."""
        x_rows = sp.csr_matrix(x_rows, dtype=np.float64)
        if not self.user_space:
            return np.asarray(x_rows @ self.weights)
        # x P = (x - (x X^T) M X) / lambda, and x B = x - x P diag(P)^-1: two dense arrays of the rows.
        scores = x_rows.toarray()
        p_rows = np.asarray((x_rows @ self.x_items) @ self.mx, dtype=np.float64)   # (x X^T) M X
        p_rows -= scores
        p_rows /= -self.lam * self.diagonal[None, :]   # x P diag(P)^-1
        scores -= p_rows
        return scores.astype(self.dtype, copy=False)


def engagement(data: TrainData, p: EASEParams) -> sp.csr_matrix:
    """Binary users x items engagement of the channel's behaviours and window."""
    events = data.events.filter(pl.col(S.BEHAVIOR).is_in(p.behaviors))
    if p.window_days is not None:
        events = events.filter(pl.col(S.TS) >= data.now - p.window_days * 86400)
    pairs = events.select(UIDX, IIDX).unique()
    return sp.csr_matrix((np.ones(pairs.height), (pairs[UIDX].to_numpy(), pairs[IIDX].to_numpy())),
                         shape=(data.n_users, data.n_items))


def most_engaged(x: sp.csr_matrix, max_items: int) -> np.ndarray:
    """Sorted indices of the ``max_items`` items with the most users (ties: smaller index), all engaged."""
    users = np.bincount(x.indices, minlength=x.shape[1])
    engaged = np.flatnonzero(users > 0)
    order = engaged[np.lexsort((engaged, -users[engaged]))]
    return np.sort(order[:max_items])


class EASE(I2IChannel):
    """EASE i2i on the most engaged items (see the module docstring).

    Learned state: ``items_`` (the item indices B covers), ``similarity_`` and ``facts_``.
    """

    name = "ease"
    description = "EASE: closed-form linear item-item model (Steck 2019) on the most engaged items"
    Params = EASEParams
    fit_cost = 1

    def item_similarity(self, data: TrainData) -> sp.csr_matrix:
        p = self.params
        x = engagement(data, p)
        engaged = int((np.bincount(x.indices, minlength=data.n_items) > 0).sum())
        self.items_ = items = most_engaged(x, p.max_items)
        self.facts_ = {"engaged_items": engaged, "items_kept": int(items.size),
                       "items_cut": engaged - int(items.size), "max_items": p.max_items}
        if items.size < engaged:
            event(log, "ease.items_cut", f"ease: kept the {items.size:,} most engaged of {engaged:,} items "
                  f"(max_items); the other {engaged - items.size:,} are never recalled by it",
                  **self.facts_)
        n = data.n_items
        if items.size < 2:
            return sp.csr_matrix((n, n), dtype=np.float64)
        weights = EASEWeights(x[:, items], p.lam, np.dtype(p.dtype), p.row_block)
        parts = []
        for start, stop in blocks(items.size, p.row_block):
            kept = top_k_dense(weights.rows(start, stop), p.top_k)
            rows = np.repeat(items[start:stop], np.diff(kept.indptr))
            parts.append((kept.data, rows, items[kept.indices]))
        del weights
        values, rows, cols = (np.concatenate(a) for a in zip(*parts))
        similarity = sp.csr_matrix((values, (rows, cols)), shape=(n, n))
        return row_normalise_max(similarity) if p.normalize else similarity

    def facts(self) -> dict:
        return dict(self.facts_)
