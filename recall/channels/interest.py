"""Interest (category) recall: the most popular items of the categories a user is into.

The tag or interest recall of industrial stacks (Tmall's homepage recalls by the
user's preferred categories next to its i2i channels). Where the log is sparse, most
items are seen by one or two users and item-item co-occurrence says little, while a
category's popularity is dense: a user browsing running shoes yesterday is likely to
look at the running shoes many others looked at.

For a user u, a category c and an item i of category c:

    affinity(u, c) = sum over u's triggers t in c of w(t)          (the shared trigger
                                                                   weights: behaviour x recency)
    popularity(i)  = distinct users who engaged with i, each vote halved every
                     ``popularity_half_life_days``
    score(u, i)    = affinity(u, c) * popularity(i) / size(c) ** size_exponent

with size(c) the summed popularity of c's items. ``size_exponent`` 0 ranks by raw
popularity across the user's categories (big categories dominate); 1 ranks by the
item's share of its category (each interest counts alike). Each user keeps their
``max_categories`` strongest categories and each category its ``items_per_category``
most popular items; items the user engaged with are left out (the retargeting channel
owns those). Items without a category are never recalled by this channel.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import Field

from recall import schema as S
from recall.channels.itemcf import category_codes
from recall.context import IIDX, TrainData, item_popularity
from recall.errors import RecallError
from recall.interface import Channel, ChannelParams, Span, empty_candidates
from recall.sparse import chunk_rows, csr_to_frame, row_blocks, top_k_per_row


class InterestParams(ChannelParams):
    max_categories: int = Field(20, ge=1, description="a user's strongest categories kept")
    items_per_category: int = Field(300, ge=1, description="most popular items kept per category")
    size_exponent: float = Field(0.5, ge=0, le=1, description="0: raw popularity; 1: share of the category")
    popularity_half_life_days: Span = Field(14.0, gt=0, description="recency half-life of a popularity "
                                                                   "vote (inf: all history counts alike)")


def category_matrix(categories: np.ndarray, n_categories: int) -> sp.csr_matrix:
    """Items x categories one-hot (items without a category have an empty row)."""
    known = np.flatnonzero(categories >= 0)
    return sp.csr_matrix((np.ones(len(known), dtype=np.float32), (known, categories[known])),
                         shape=(len(categories), n_categories))


def category_lists(data: TrainData, categories: np.ndarray, n_categories: int, p: InterestParams
                   ) -> sp.csr_matrix:
    """Categories x items: each category's most popular items, weighted ``popularity / size ** exponent``."""
    popular = item_popularity(data, p.popularity_half_life_days)
    items = popular[IIDX].to_numpy()
    votes = popular["n"].to_numpy().astype(np.float64)
    known = categories[items] >= 0
    items, votes = items[known], votes[known]
    cats = categories[items]
    size = np.bincount(cats, weights=votes, minlength=n_categories)
    weight = votes / np.maximum(size[cats], 1e-12) ** p.size_exponent
    lists = sp.csr_matrix((weight, (cats, items)), shape=(n_categories, data.n_items))
    return top_k_per_row(lists, p.items_per_category)


class Interest(Channel):
    name = "interest"
    description = "interest recall: the most popular items of the user's strongest categories"
    Params = InterestParams

    def fit(self, data: TrainData) -> "Interest":
        categories = category_codes(data)
        if categories is None:
            raise RecallError("channels.interest needs an items table with a 'category_id' column; "
                              "add one or set channels.interest.enabled = false")
        n_categories = int(categories.max(initial=-1)) + 1  # codes are 0..n-1, -1 unknown
        self.one_hot_ = category_matrix(categories, n_categories)
        self.lists_ = category_lists(data, categories, n_categories, self.params)
        return self

    def recommend(self, data: TrainData, n: int, users: np.ndarray | None = None) -> pl.DataFrame:
        p = self.params
        seen = data.interactions
        frames = []
        for chunk in row_blocks(users, data.n_users, p.user_block):
            affinity = top_k_per_row((data.trigger_matrix[chunk] @ self.one_hot_).tocsr(), p.max_categories)
            scores = (affinity @ self.lists_).tocsr()
            scores = scores - scores.multiply(seen[chunk])
            frames.append(csr_to_frame(top_k_per_row(scores, n), data.user_ids, data.item_ids,
                                       S.USER, S.ITEM, row_index=chunk_rows(chunk)))
        return pl.concat(frames) if frames else empty_candidates(data)
