"""Item-based collaborative filtering, with the production refinements of the Tmall homepage.

For items i and j, summed over users u who engaged with both:

    C(i, j) = sum_u  w(u) * f(|b_ui - b_uj|)       for |b_ui - b_uj| <= W
    sim(i, j) = C(i, j) / (N_i^alpha * N_j^(1 - alpha))

- ``w(u) = 1 / log(1 + n_u)`` (IUF: a very active user says less about each pair), or 1;
- ``b_ui`` is the time bucket of u's latest engagement with i (``bucket_hours`` wide),
  ``f(d) = 0.5 ** (d * bucket_hours / decay_half_life_hours)`` is the time decay between
  the two interactions and ``W`` the pair window in buckets (no window: every pair counts);
- ``N_i`` is the number of users who engaged with i; ``alpha = 0.5`` is cosine and a
  larger ``alpha`` penalises hot trigger items harder;
- optionally only pairs within one category; each row is truncated to its ``top_k``
  neighbours and, optionally, divided by its maximum so triggers are comparable.

Users with more than ``max_user_items`` items are treated as crawlers and left out.

The kernel is sparse matrix products only. Rows of the matrix ``Y`` are
(user, time bucket) pairs; a rows x rows time kernel ``Q`` holds ``f(gap)`` between
buckets of the same user within the window, so ``Y^T W Q Y`` sums every pair with
its decay in one product (IUF in ``W``, the hot-item normalisation folded into the
two factors). Trigger items are processed in blocks so memory holds one block of
the untruncated table at a time.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import Field

from recall import schema as S
from recall.interface import BehaviorList, ChannelParams, I2IChannel, Span
from recall.context import IIDX, UIDX, TrainData
from recall.decay import halving, log_damping
from recall.errors import RecallError
from recall.sparse import blockwise_product, row_normalise_max, top_k_per_row


class ItemCFParams(ChannelParams):
    behaviors: BehaviorList = Field(default_factory=lambda: ["click", "fav", "cart", "buy"],
                                 description="behaviours that count as co-engagement")
    window_days: Span = Field(None, gt=0, description="only the last N days of training data (inf: all)")
    max_user_items: int = Field(1000, ge=2, description="users with more items are dropped as crawlers")
    iuf: bool = Field(True, description="weight users by 1/log(1 + n_u)")
    alpha: float = Field(0.8, ge=0, le=1, description="hot-item normalisation N_i^a N_j^(1-a); 0.5 is cosine")
    pair_window_hours: Span = Field(168.0, ge=0, description="max gap between the two interactions (inf: any)")
    bucket_hours: float = Field(24.0, gt=0, description="time resolution of the pair window and decay")
    decay_half_life_hours: Span = Field(72.0, gt=0, description="time decay between interactions (inf: none)")
    same_category: bool = Field(False, description="only pairs within one category_id")
    normalize: bool = Field(True, description="divide each row by its maximum")
    top_k: int = Field(100, ge=1, description="neighbours kept per item")
    item_block: int = Field(20_000, ge=1, description="trigger items per block (memory bound)")
    threads: int = Field(0, ge=0, description="blocks computed in parallel; 0: one per core")


def popularity_scales(counts, alpha: float):
    """The hot-item normalisation split over the two items: ``(N_i^-alpha, N_j^-(1 - alpha))`` (numpy)."""
    return counts ** -alpha, counts ** -(1.0 - alpha)


def max_bucket_gap(p: ItemCFParams) -> int:
    """``W``: the pair window in buckets (0 without a window: every bucket is 0)."""
    if p.pair_window_hours is None:
        return 0
    return int(math.floor(p.pair_window_hours / p.bucket_hours + 1e-9))


def pair_decay(gap, p: ItemCFParams):
    """``f(gap)``: the time decay between two interactions ``gap`` buckets apart."""
    return halving(gap * p.bucket_hours, p.decay_half_life_hours)


def engagement_rows(data: TrainData, p: ItemCFParams) -> pl.DataFrame:
    """One row per (user, item): the latest engagement time, crawlers and old events removed.

    Sorted by user and item; ``n_u`` is the user's number of items.
    """
    events = data.events.filter(pl.col(S.BEHAVIOR).is_in(p.behaviors))
    if p.window_days is not None:
        events = events.filter(pl.col(S.TS) >= data.now - p.window_days * 86400)
    # One int64 key per (user, item): a single-key group-by and sort, then numpy for the rest.
    width = max(data.n_items, 1)
    pairs = (events.select((pl.col(UIDX).cast(pl.Int64) * width + pl.col(IIDX)).alias("_pair"), S.TS)
             .group_by("_pair").agg(pl.col(S.TS).max()).sort("_pair"))
    key = pairs["_pair"].to_numpy()
    users = key // width
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if users.size else np.zeros(0, np.int64)
    lengths = np.diff(np.r_[starts, users.size])
    n_u = np.repeat(lengths, lengths)
    keep = n_u <= p.max_user_items
    return pl.DataFrame({
        UIDX: (users[keep]).astype(np.int32),
        IIDX: (key[keep] - users[keep] * width).astype(np.int32),
        S.TS: pairs[S.TS].filter(pl.Series(keep)),
        "n_u": pl.Series(n_u[keep], dtype=pl.UInt32),
    })


def cooccurrence(data: TrainData, p: ItemCFParams, finish) -> sp.csr_matrix:
    """Run the weighted co-occurrence kernel block by block.

    ``finish(start, block)`` turns the block ``sim[start:start+len]`` into the
    block to keep (masked, truncated); its results are stacked.
    """
    pairs = engagement_rows(data, p)
    n_items = data.n_items
    if pairs.height == 0:
        return sp.csr_matrix((n_items, n_items), dtype=np.float64)
    ts = pairs[S.TS].to_numpy()
    if p.pair_window_hours is None:
        bucket = np.zeros(pairs.height, dtype=np.int64)
        max_gap = 0
    else:
        bucket_seconds = p.bucket_hours * 3600
        bucket = ((ts - ts.min()) // bucket_seconds).astype(np.int64)
        max_gap = max_bucket_gap(p)
    # Rows of Y are the distinct (user, bucket) pairs, numbered in (user, bucket) order.
    n_buckets = int(bucket.max()) + 1
    users_of_pairs = pairs[UIDX].to_numpy().astype(np.int64)
    row_keys, rows_of_pairs = np.unique(users_of_pairs * n_buckets + bucket, return_inverse=True)
    rows_of_pairs = rows_of_pairs.ravel()
    n_rows = row_keys.size
    n_u = np.zeros(n_rows, dtype=np.float64)
    n_u[rows_of_pairs] = pairs["n_u"].to_numpy()

    # Every weighting is folded into the two factors, so one product gives the
    # normalised score: sim = (D_trigger Y^T W_user)(Y D_recalled).
    items_of_pairs = pairs[IIDX].to_numpy()
    counts = np.bincount(items_of_pairs, minlength=n_items).astype(np.float64)
    engaged = counts > 0
    trigger_scale = np.zeros(n_items)
    recalled_scale = np.zeros(n_items)
    trigger_scale[engaged], recalled_scale[engaged] = popularity_scales(counts[engaged], p.alpha)
    user_weight = log_damping(n_u) if p.iuf else np.ones(n_rows)
    y = sp.csr_matrix((recalled_scale[items_of_pairs], (rows_of_pairs, items_of_pairs)),
                      shape=(n_rows, n_items))
    weighted_t = sp.csr_matrix(  # items x rows
        (user_weight[rows_of_pairs] * trigger_scale[items_of_pairs], (items_of_pairs, rows_of_pairs)),
        shape=(n_items, n_rows))

    # The time kernel between a user's buckets: Q[r, r'] = f(gap) for rows r, r' of the
    # same user at most W buckets apart (Q = I without a window). Then
    # sim = (D Y^T W) (Q Y D): every gap's pairs come out of one product.
    sources, targets, weights = [np.arange(n_rows)], [np.arange(n_rows)], [np.ones(n_rows)]
    row_buckets = row_keys % n_buckets
    for gap in range(1, max_gap + 1):
        # The row of the same user ``gap`` buckets later, if there is one (row keys are sorted).
        later = np.minimum(np.searchsorted(row_keys, row_keys + gap), n_rows - 1)
        matched = (row_keys[later] == row_keys + gap) & (row_buckets + gap < n_buckets)
        earlier_rows, later_rows = np.flatnonzero(matched), later[matched]
        sources += [earlier_rows, later_rows]
        targets += [later_rows, earlier_rows]
        weights += [np.full(earlier_rows.size, pair_decay(gap, p))] * 2
    kernel = sp.csr_matrix((np.concatenate(weights), (np.concatenate(sources), np.concatenate(targets))),
                           shape=(n_rows, n_rows))
    neighbourhood = (kernel @ y).tocsr() if max_gap else y

    return blockwise_product(weighted_t, neighbourhood, finish, p.item_block, p.threads)


def truncate_block(p: ItemCFParams, categories: np.ndarray | None):
    """The itemCF ``finish`` step: drop the diagonal (and cross-category pairs), keep the top K."""

    def finish(start: int, block: sp.csr_matrix) -> sp.csr_matrix:
        def exclude(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            rows = rows + start
            drop = rows == cols
            if categories is not None:
                drop |= (categories[rows] != categories[cols]) | (categories[rows] < 0)
            return drop

        return top_k_per_row(block, p.top_k, exclude=exclude)

    return finish


def category_codes(data: TrainData) -> np.ndarray | None:
    """Category of each item index as a small integer, -1 where unknown."""
    if data.items is None or S.CATEGORY not in data.items.columns:
        return None
    # Aligned in polars, not through numpy: a null integer category must stay null (unknown, -1),
    # not become the float NaN that would read as one shared category "NaN".
    column = (pl.DataFrame({S.ITEM: data.item_ids})
              .join(data.items.select(S.ITEM, pl.col(S.CATEGORY).cast(pl.String)), on=S.ITEM, how="left",
                    maintain_order="left")[S.CATEGORY])
    return column.cast(pl.Categorical).to_physical().cast(pl.Int64).fill_null(-1).to_numpy()


def required_categories(data: TrainData, channel: str) -> np.ndarray:
    """:func:`category_codes` for a channel whose ``same_category`` option needs them."""
    categories = category_codes(data)
    if categories is None:
        raise RecallError(f"channels.{channel}.same_category needs an items table with a "
                          "'category_id' column; add one or set same_category = false")
    return categories


class ItemCF(I2IChannel):
    name = "itemcf"
    description = "item-based CF: IUF, time decay, hot-item normalisation, same-category option"
    Params = ItemCFParams

    def item_similarity(self, data: TrainData) -> sp.csr_matrix:
        p = self.params
        categories = required_categories(data, self.name) if p.same_category else None
        similarity = cooccurrence(data, p, truncate_block(p, categories))
        return row_normalise_max(similarity) if p.normalize else similarity
