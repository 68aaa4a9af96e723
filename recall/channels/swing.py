"""Swing: item-item similarity from pairs of users who engaged with both items (Yang et al., 2020).

For items i and j, summed over unordered pairs of distinct users u, v who both
engaged with i and j:

    sim(i, j) = sum_{u < v in S_i, u, v in U_j}  w_u * w_v / (alpha + |I_u & I_v|)
    w_u = (user_alpha + |I_u|) ** -user_beta

- ``I_u`` is the set of items user u engaged with (``behaviors``, inside
  ``window_days``) and ``U_j`` the users who engaged with j;
- ``S_i`` is ``U_i``, or a seeded uniform sample of ``max_users_per_item`` of its
  users when i has more (the trigger side only, as in Flink ML: a hot item's row
  sums over sampled pairs, the overlaps ``|I_u & I_v|`` are always the full ones);
- users with fewer than ``min_user_items`` or more than ``max_user_items`` items
  are left out (crawlers and drive-by users; they still get candidates through
  their triggers).

Two users who overlap on many items are probably the same kind of noise (a bot,
a heavy user clicking everything): each common pair of theirs counts
``1 / (alpha + overlap)``, so co-clicks of such pairs do not dominate, while two
otherwise unrelated users who both engaged with i and j are strong evidence.
Each row keeps its ``top_k`` neighbours and, with ``normalize``, is divided by
its maximum so triggers are comparable. Recall is the shared trigger expansion.

Parameter names follow Alibaba PAI's Swing Train and Flink ML's Swing:

==========================  ======================  =====================
here                        PAI Swing Train         Flink ML Swing
==========================  ======================  =====================
``alpha``                   ``alpha``               ``alpha2``
``user_alpha``              ``userAlpha``           ``alpha1``
``user_beta``               ``userBeta``            ``beta``
``max_users_per_item``      ``maxItemNumber``       ``maxUserNumPerItem``
``min_user_items``          ``minUserItems``        ``minUserBehavior``
``max_user_items``          ``maxUserItems``        ``maxUserBehavior``
``normalize``               ``resultNormalize``     -
``top_k``                   -                       ``k``
==========================  ======================  =====================

**Kernel.** A pair (u, v) adds ``c_uv = w_u w_v / (alpha + |I_u & I_v|)`` to every
item pair in ``(I_u & I_v)^2``. With ``Z`` the user-pairs x items matrix of
``x_u * x_v`` (1 where both engaged) and ``Z_s`` the same on the sampled
engagement, ``S = Z_s^T diag(c) Z`` with the diagonal dropped. Pairs are found
block by block over users from the sparse ``X_s X_s^T`` (its upper triangle:
pairs that share a sampled item), never as a dense users x users matrix; their
rows of ``Z`` are elementwise products of gathered rows of ``X``, and pairs
sharing fewer than two items are dropped (they only reach the diagonal).
``S`` is then computed in blocks of trigger items on threads, each block
truncated to its top K at once, as in itemCF. Memory: ``Z`` and ``Z_s^T``
(one entry per (pair, common item)) plus a few untruncated item blocks.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import Field, model_validator

from recall import schema as S
from recall.context import IIDX, UIDX, TrainData
from recall.interface import BehaviorList, ChannelParams, I2IChannel, Span
from recall.sparse import blockwise_product, cost_blocks, row_indices, row_normalise_max, top_k_per_row


class SwingParams(ChannelParams):
    behaviors: BehaviorList = Field(default_factory=lambda: ["click", "fav", "cart", "buy"],
                                    description="behaviours that count as engagement")
    window_days: Span = Field(None, gt=0, description="only the last N days of training data (inf: all)")
    alpha: float = Field(1.0, ge=0, description="smoothing of the pair overlap: 1 / (alpha + |I_u & I_v|)")
    user_alpha: float = Field(5.0, ge=0, description="user weight (user_alpha + |I_u|) ** -user_beta")
    user_beta: float = Field(0.3, ge=0, description="user weight exponent; 0: every user weighs 1")
    max_users_per_item: int = Field(1000, ge=2, description="an item with more users sums over a seeded "
                                                            "sample of this many (its row only)")
    min_user_items: int = Field(2, ge=1, description="users with fewer items are left out (PAI, Flink: 10)")
    max_user_items: int = Field(1000, ge=2, description="users with more items are left out as crawlers")
    normalize: bool = Field(True, description="divide each row by its maximum")
    top_k: int = Field(100, ge=1, description="neighbours kept per item")
    item_block: int = Field(20_000, ge=1, description="trigger items per block (memory bound)")
    max_block_entries: int = Field(10_000_000, ge=1, description="stored entries per block of user pairs "
                                                                 "(memory bound)")
    threads: int = Field(0, ge=0, description="item blocks computed in parallel; 0: one per core")

    @model_validator(mode="after")
    def _user_range(self):
        if self.max_user_items < self.min_user_items:
            raise ValueError(f"max_user_items ({self.max_user_items}) must be at least min_user_items "
                             f"({self.min_user_items})")
        return self


def user_weight(n_items, p: SwingParams):
    """``w_u = (user_alpha + |I_u|) ** -user_beta`` (numpy; Spark looks it up per distinct ``|I_u|``)."""
    return (p.user_alpha + n_items) ** -p.user_beta


def pair_weight(w_u, w_v, overlap, p: SwingParams):
    """``c_uv = w_u * w_v / (alpha + |I_u & I_v|)``: what the pair (u, v) adds to each item pair it holds.

    Python operators only: numpy arrays here, Spark columns in :mod:`recall.spark.swing`.
    """
    return w_u * w_v / (p.alpha + overlap)


def engagement(data: TrainData, p: SwingParams) -> sp.csr_matrix:
    """Binary users x items engagement, rows of users outside the item-count range emptied."""
    events = data.events.filter(pl.col(S.BEHAVIOR).is_in(p.behaviors))
    if p.window_days is not None:
        events = events.filter(pl.col(S.TS) >= data.now - p.window_days * 86400)
    pairs = (events.select(UIDX, IIDX).unique()
             .filter(pl.len().over(UIDX).is_between(p.min_user_items, p.max_user_items))
             .sort(UIDX, IIDX))
    return sp.csr_matrix((np.ones(pairs.height), (pairs[UIDX].to_numpy(), pairs[IIDX].to_numpy())),
                         shape=(data.n_users, data.n_items))


def sample_users(x: sp.csr_matrix, cap: int, seed: int) -> sp.csr_matrix:
    """``x`` with each item's users cut to a seeded uniform sample of ``cap`` (items at or below keep all).

    Every (user, item) entry draws a random key; an item keeps its ``cap`` users
    with the smallest keys, so the sample depends only on ``x`` and ``seed``.
    """
    counts = np.bincount(x.indices, minlength=x.shape[1])
    if counts.max(initial=0) <= cap:
        return x
    by_item = sp.csc_matrix(x)
    by_item.sort_indices()
    items = np.repeat(np.arange(x.shape[1]), np.diff(by_item.indptr))
    keys = np.random.default_rng(seed).random(by_item.nnz)
    order = np.lexsort((keys, items))
    rank = np.empty(by_item.nnz, dtype=np.int64)
    rank[order] = np.arange(by_item.nnz) - by_item.indptr[items[order]]
    keep = rank < cap
    return sp.csr_matrix((by_item.data[keep], (by_item.indices[keep], items[keep])), shape=x.shape)


def user_weights(x: sp.csr_matrix, p: SwingParams) -> np.ndarray:
    """``w_u = (user_alpha + |I_u|) ** -user_beta`` (0 for users left out)."""
    n_u = np.diff(x.indptr).astype(np.float64)
    weights = np.zeros_like(n_u)
    active = n_u > 0
    weights[active] = user_weight(n_u[active], p)
    return weights


def user_pairs(x: sp.csr_matrix, sampled: sp.csr_matrix, p: SwingParams):
    """Yield ``(z, z_sampled, c)`` per block of user pairs that can contribute to an item pair.

    ``z`` (pairs x items) is 1 where both users engaged, ``z_sampled`` the same on
    the sampled engagement; ``c`` is each pair's weight. Pairs come from the upper
    triangle of ``sampled @ sampled.T``, computed block by block over users (each
    block's stored entries bounded by ``max_block_entries``); pairs with fewer than
    two common items are dropped (most of them before their rows are gathered).
    """
    weights = user_weights(x, p)
    n_u = np.diff(x.indptr)
    sampled_t = sp.csr_matrix(sampled.T)
    item_users = np.diff(sampled_t.indptr)
    # Upper bound of the stored entries of each row of X_s X_s^T.
    costs = sampled @ item_users.astype(np.float64)
    is_sampled = sampled.nnz < x.nnz
    partial = n_u > np.diff(sampled.indptr)  # users some item's sample left out
    for start, stop in cost_blocks(costs, p.user_block, p.max_block_entries):
        block = sp.csr_matrix(sampled[start:stop] @ sampled_t)
        rows = row_indices(block) + start
        upper = block.indices > rows
        # The product counts the overlap on the sampled engagement, which is the whole overlap
        # unless a user lost entries to an item's sample: other pairs sharing one item go
        # before their rows are gathered.
        upper &= (block.data >= 2) | partial[rows] | partial[block.indices]
        first, second = rows[upper], block.indices[upper].astype(np.int64)
        # Gathering both users' rows stores n_u + n_v entries per pair: bounded per chunk.
        for a, b in cost_blocks(n_u[first] + n_u[second], first.size or 1, p.max_block_entries):
            u, v = first[a:b], second[a:b]
            z = sp.csr_matrix(x[u].multiply(x[v]))
            overlap = np.diff(z.indptr)
            keep = np.flatnonzero(overlap >= 2)
            if keep.size == 0:
                continue
            z, u, v, overlap = z[keep], u[keep], v[keep], overlap[keep]
            z_sampled = sp.csr_matrix(sampled[u].multiply(sampled[v])) if is_sampled else z
            yield z, z_sampled, pair_weight(weights[u], weights[v], overlap, p)


def swing_similarity(x: sp.csr_matrix, p: SwingParams, seed: int) -> tuple[sp.csr_matrix, dict]:
    """Items x items Swing scores, each row truncated to ``top_k`` (not normalised), and fit facts.

    Parameters
    ----------
    x : sp.csr_matrix
        Binary users x items engagement, rows of left-out users empty.
    p : SwingParams
        The formula's parameters and the block limits.
    seed : int
        Seed of the per-item user sample.
    """
    n_items = x.shape[1]
    sampled = sample_users(x, p.max_users_per_item, seed)
    weighted, sampled_t, n_pairs = [], [], 0
    for z, z_sampled, c in user_pairs(x, sampled, p):
        weighted.append(sp.csr_matrix(sp.diags(c) @ z))
        sampled_t.append(sp.csr_matrix(z_sampled.T))
        n_pairs += c.size
    facts = {"users": int((np.diff(x.indptr) > 0).sum()), "user_pairs": n_pairs,
             "items_sampled": int((np.bincount(x.indices, minlength=n_items) > p.max_users_per_item).sum())}
    if not weighted:
        return sp.csr_matrix((n_items, n_items), dtype=np.float64), facts
    right = sp.vstack(weighted, format="csr")
    left = sp.hstack(sampled_t, format="csr")  # items x pairs, pairs in the order of `right`

    def finish(start: int, block: sp.csr_matrix) -> sp.csr_matrix:
        return top_k_per_row(block, p.top_k, exclude=lambda rows, cols: rows + start == cols)

    return blockwise_product(left, right, finish, p.item_block, p.threads), facts


class Swing(I2IChannel):
    """Swing i2i (see the module docstring); learned state ``similarity_`` and ``facts_``."""

    name = "swing"
    description = "Swing: user-pair i2i, pairs that overlap everywhere count little (Alibaba)"
    Params = SwingParams

    def item_similarity(self, data: TrainData) -> sp.csr_matrix:
        p = self.params
        similarity, self.facts_ = swing_similarity(engagement(data, p), p, data.seed)
        return row_normalise_max(similarity) if p.normalize else similarity

    def facts(self) -> dict:
        return dict(self.facts_)
