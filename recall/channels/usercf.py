"""User-based collaborative filtering: recommend what similar users engaged with.

With ``N(u)`` the items user u engaged with (``behaviors``, inside ``window_days``)
and ``N_i`` the number of users who engaged with item i, the user-user similarity
is cosine with inverse item frequency (IIF: a hot item says less about taste):

    sim(u, v) = sum_{i in N(u) & N(v)} w_i / sqrt(|N(u)| * |N(v)|)
    w_i = 1 / log(1 + N_i)      (or 1 with ``iif = false``: plain cosine)

for ``u != v`` sharing at least ``min_common_items`` items. Each user keeps its
``top_k_users`` most similar users ``S(u)`` (ties to the smaller user index).
Candidates are scored by what those neighbours did:

    score(u, i) = sum_{v in S(u)} sim(u, v) * r(v, i)
    r(v, i)     = max over v's events e on i of  bw(b_e) * 0.5 ** (age_e / h)

where ``bw`` is ``triggers.behavior_weights``, ``age_e`` the event's age in days
at ``now`` and ``h`` the recency half-life (``recency_half_life_days``, by default
``triggers.half_life_days``); the strongest single event counts, as for
triggers, so repeated clicks do not swamp a purchase. Items u already engaged
with (``TrainData.interactions``) are dropped and the top ``n`` are kept.

Users with more than ``max_user_items`` items are treated as crawlers: they are
left out entirely (they count in no ``N_i``, are nobody's neighbour and get no
candidates), as in itemCF.

Both stages are sparse products over blocks of users, so the users x users
matrix never exists: a block of rows of ``X W X^T`` (``X`` binary users x items,
``W = diag(w)``) is computed, truncated to its top-K per row and only then is the
next block started. Blocks hold at most ``user_block`` users *and* at most
``max_block_pairs`` (user, co-user) products, bounded above by
``sum_{i in N(u)} N_i`` per user, so a block of heavy users is cut short before
it can blow up memory. Learned state is the top-K table: ``n_users * top_k_users``
entries at most.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import Field

from recall import schema as S
from recall.interface import BehaviorList, Channel, ChannelParams, Span, empty_candidates
from recall.context import IIDX, UIDX, TrainData
from recall.decay import DAY, halving, log_damping
from recall.sparse import cost_blocks, csr_to_frame, row_indices, top_k_per_row

NEIGHBORS_TABLE = "u2u/usercf.parquet"


class UserCFParams(ChannelParams):
    behaviors: BehaviorList = Field(default_factory=lambda: ["click", "fav", "cart", "buy"],
                                 description="behaviours that count as engagement (for N(u) and r(v, i))")
    window_days: Span = Field(None, gt=0, description="only the last N days of training data (inf: all)")
    max_user_items: int = Field(1000, ge=1, description="users with more items are dropped as crawlers")
    iif: bool = Field(True, description="weight each shared item by 1/log(1 + N_i) (inverse item frequency)")
    top_k_users: int = Field(50, ge=1, description="most similar users kept per user")
    min_common_items: int = Field(1, ge=1, description="neighbours must share at least this many items")
    recency_half_life_days: float | None = Field(
        None, gt=0, description="half-life of r(v, i) in days; unset: triggers.half_life_days; inf: no decay")
    max_block_pairs: int = Field(2_000_000, ge=1,
                                 description="upper bound on (user, co-user) products per block (memory bound)")
    publish_neighbors: bool = Field(True, description=f"publish the user-user table as {NEIGHBORS_TABLE}")


def cosine(overlap, n_u, n_v, sqrt=np.sqrt):
    """``overlap / sqrt(|N(u)| |N(v)|)``; ``sqrt`` is the engine's (numpy's, or Spark's ``F.sqrt``:
    both correctly rounded, so the scores agree to the last bit)."""
    return overlap / sqrt(n_u * n_v)


def engagement_pairs(data: TrainData, p: UserCFParams) -> pl.DataFrame:
    """One row per (user, item) with its strength ``r``; crawlers and old events removed.

    Sorted by user then item, so each CSR row built from it has sorted columns
    (the sparse products then sum in item order, which the oracle test relies on).
    """
    events = data.events.filter(pl.col(S.BEHAVIOR).is_in(p.behaviors))
    if p.window_days is not None:
        events = events.filter(pl.col(S.TS) >= data.now - p.window_days * 86400)
    weights = data.triggers.behavior_weights
    bw = pl.DataFrame({S.BEHAVIOR: list(weights), "bw": list(weights.values())}).with_columns(
        pl.col(S.BEHAVIOR).cast(data.events.schema[S.BEHAVIOR]))
    half_life = p.recency_half_life_days
    if half_life is None:
        half_life = data.triggers.half_life_days
    decay = halving(data.now - pl.col(S.TS), half_life * DAY)
    return (events
            .join(bw, on=S.BEHAVIOR, how="left")
            .with_columns(r=pl.col("bw").fill_null(0.0) * decay)
            .group_by(UIDX, IIDX).agg(pl.col("r").max())
            .with_columns(n_u=pl.len().over(UIDX))
            .filter(pl.col("n_u") <= p.max_user_items)
            .sort(UIDX, IIDX))


def user_similarity(x: sp.csr_matrix, p: UserCFParams) -> sp.csr_matrix:
    """Top-K IIF-cosine neighbours of every user, block by block.

    Parameters
    ----------
    x : sp.csr_matrix
        Binary users x items engagement, crawlers' rows empty, columns sorted in each row.
    p : UserCFParams
        ``iif``, ``min_common_items``, ``top_k_users`` and the block limits.

    Returns
    -------
    sp.csr_matrix
        Users x users ``sim(u, v)``, at most ``top_k_users`` entries per row,
        columns sorted within each row (so later products sum in user order).
    """
    n_users = x.shape[0]
    n_u = np.diff(x.indptr).astype(np.float64)
    counts = np.bincount(x.indices, minlength=x.shape[1]).astype(np.float64)
    if p.iif:
        # Items nobody engaged with never appear in a product; any weight will do.
        item_weight = np.zeros_like(counts)
        item_weight[counts > 0] = log_damping(counts[counts > 0])
    else:
        item_weight = np.ones_like(counts)
    # Items x users with the item weight folded in, so X[block] @ right is the IIF overlap.
    right = sp.csr_matrix((sp.diags(item_weight) @ x.T))
    plain_t = sp.csr_matrix(x.T) if p.min_common_items > 1 else None
    # Upper bound of the stored entries of each row of X X^T: one per (shared item, co-user).
    costs = x @ counts
    kept = []
    for start, stop in cost_blocks(costs, p.user_block, p.max_block_pairs):
        left = x[start:stop]
        block = sp.csr_matrix(left @ right)
        if plain_t is not None:
            common = sp.csr_matrix(left @ plain_t)
            block = sp.csr_matrix(block.multiply(common >= p.min_common_items))
        rows = row_indices(block) + start
        cols = block.indices
        # Cosine denominator; the diagonal (a user is not its own neighbour) is zeroed.
        data = np.where(rows != cols, cosine(block.data, n_u[rows], n_u[cols]), 0.0)
        block = sp.csr_matrix((data, cols, block.indptr), shape=block.shape)
        kept.append(top_k_per_row(block, p.top_k_users))
    similarity = sp.vstack(kept, format="csr") if kept else sp.csr_matrix((n_users, n_users))
    # Column order inside each row fixes the summation order of the candidate product.
    similarity.has_sorted_indices = False
    similarity.sort_indices()
    return similarity


class UserCF(Channel):
    """User-based CF (see the module docstring for the formulas).

    Learned state: ``similarity_`` (users x users, top-K per row) and
    ``strength_`` (users x items, ``r(v, i)``), both CSR.
    """

    name = "usercf"
    description = "user-based CF: IIF cosine top-K neighbours, behaviour- and recency-weighted votes"
    Params = UserCFParams
    # Never recalls what the user already engaged with (the registry's contract test checks it).
    exclude_interacted: ClassVar[bool] = True

    def fit(self, data: TrainData) -> "UserCF":
        p = self.params
        pairs = engagement_pairs(data, p)
        users, items = pairs[UIDX].to_numpy(), pairs[IIDX].to_numpy()
        shape = (data.n_users, data.n_items)
        x = sp.csr_matrix((np.ones(pairs.height), (users, items)), shape=shape)
        self.strength_ = sp.csr_matrix((pairs["r"].to_numpy(), (users, items)), shape=shape)
        self.strength_.eliminate_zeros()  # zero-weight behaviours cast no vote
        self.similarity_ = user_similarity(x, p)
        return self

    def recommend(self, data: TrainData, n: int, users: np.ndarray | None = None) -> pl.DataFrame:
        p = self.params
        seen = data.interactions
        rows = np.arange(data.n_users) if users is None else np.asarray(users, dtype=np.int64)
        # Upper bound of each user's raw candidates: the items of all its neighbours.
        costs = (self.similarity_[rows] > 0).astype(np.float64) @ np.diff(self.strength_.indptr)
        frames = []
        for start, stop in cost_blocks(costs, p.user_block, p.max_block_pairs):
            block = rows[start:stop]
            scores = sp.csr_matrix(self.similarity_[block] @ self.strength_)
            scores = scores - scores.multiply(seen[block])
            frames.append(csr_to_frame(top_k_per_row(scores, n), data.user_ids, data.item_ids,
                                       S.USER, S.ITEM, row_index=block))
        frames = [f for f in frames if f.height]
        return pl.concat(frames) if frames else empty_candidates(data)

    def similar_users(self, data: TrainData) -> pl.DataFrame:
        """The user-to-user table ``user_id, neighbor_id, score, rank`` (rank 1 is the most similar)."""
        return csr_to_frame(self.similarity_, data.user_ids, data.user_ids, S.USER, S.NEIGHBOR)

    def extra_tables(self, data: TrainData) -> dict[str, pl.DataFrame]:
        return {NEIGHBORS_TABLE: self.similar_users(data)} if self.params.publish_neighbors else {}
