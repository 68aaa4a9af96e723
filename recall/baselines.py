"""The simple methods the merge must beat, served as a deployment would serve them.

Every baseline lists ``n`` items per user and is topped up from all-time popularity
(minus what the user engaged with): a user without history, or one for whom the
method finds fewer than ``n`` items, gets the popular items a deployment would show
in their place. Without that top-up, a personalised baseline scores zero on every
user it cannot serve and flatters whatever it is compared with.

- ``popularity``: items by distinct engaged users over all training history;
- ``popularity_recent``: the same, each (user, item) weighted by the recency decay
  ``0.5 ** (age / half_life)`` of its latest engagement;
- ``bm25`` and ``als``: implicit's BM25 item-item and ALS recommenders;
- ``ease``: EASE (Steck 2019), closed form on the ``max_items`` most engaged items.

All of them see the training data only (events before T, :mod:`recall.split`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import polars as pl

from recall import schema as S
from recall.context import IIDX, TrainData, item_popularity

Baseline = Callable[[TrainData, pl.Series, int], pl.DataFrame]


def popular_lists(train: TrainData, users: pl.Series, n: int, ranking: pl.DataFrame) -> pl.DataFrame:
    """The ``ranking`` (``item_idx, n``, best first) for each user, minus their engaged items, top ``n``."""
    idx = train.user_index(users)
    seen = train.interactions
    max_seen = int(np.diff(seen.indptr).max(initial=0))
    top = ranking.head(n + max_seen).with_columns(pop_rank=pl.int_range(pl.len()))
    known = idx >= 0
    rows = seen[idx[known]]
    engaged = pl.DataFrame({"u": np.repeat(np.flatnonzero(known), np.diff(rows.indptr)).astype(np.int64),
                            IIDX: rows.indices.astype(np.int32)})
    frame = (pl.DataFrame({"u": np.arange(len(idx), dtype=np.int64)}).join(top, how="cross")
             .join(engaged.with_columns(pl.col(IIDX).cast(top.schema[IIDX])), on=["u", IIDX], how="anti")
             .sort("u", "pop_rank")
             .filter(pl.int_range(pl.len()).over("u") < n))
    return pl.DataFrame({
        S.USER: users.gather(frame["u"].to_numpy()),
        S.ITEM: train.item_ids.gather(frame[IIDX].to_numpy()),
        S.SCORE: frame["n"].cast(pl.Float64),
    }).with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over(S.USER).alias(S.RANK))


def popularity(train: TrainData, users: pl.Series, n: int) -> pl.DataFrame:
    """Most-engaged items (distinct users) over all training history, minus the user's own."""
    return popular_lists(train, users, n, item_popularity(train))


def popularity_recent(train: TrainData, users: pl.Series, n: int, half_life_days: float = 7.0) -> pl.DataFrame:
    """Popularity with each engagement decayed by its age at T (half-life ``half_life_days``)."""
    return popular_lists(train, users, n, item_popularity(train, half_life_days))


def topped_up(primary: pl.DataFrame, fallback: pl.DataFrame, n: int) -> pl.DataFrame:
    """``primary``'s list per user, then ``fallback``'s items not in it, re-ranked, ``n`` per user."""
    both = pl.concat([primary.select(S.USER, S.ITEM, S.SCORE, pl.lit(0).alias("part"), S.RANK),
                      fallback.select(S.USER, S.ITEM, S.SCORE, pl.lit(1).alias("part"), S.RANK)],
                     how="vertical_relaxed")
    return (both.sort(S.USER, "part", S.RANK)
            .unique([S.USER, S.ITEM], keep="first", maintain_order=True)
            .filter(pl.int_range(pl.len()).over(S.USER) < n)
            .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over(S.USER).alias(S.RANK))
            .select(S.USER, S.ITEM, S.SCORE, S.RANK))


def implicit_frame(train: TrainData, idx: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> pl.DataFrame:
    """implicit's (users x N) id and score arrays as a ranked candidate table (padding dropped)."""
    valid = (ids >= 0) & np.isfinite(scores) & (scores > -1e30)
    rows = np.repeat(idx, ids.shape[1]).reshape(ids.shape)
    return pl.DataFrame({
        S.USER: train.user_ids.gather(rows[valid]),
        S.ITEM: train.item_ids.gather(ids[valid].astype(np.int64)),
        S.SCORE: scores[valid].astype(np.float64),
    }).with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over(S.USER).alias(S.RANK))


def known_users(train: TrainData, users: pl.Series) -> np.ndarray:
    """Indices of the users with engagement in training: a model has nothing to say about the others."""
    idx = train.user_index(users)
    idx = idx[idx >= 0]
    return idx[np.diff(train.interactions.indptr)[idx] > 0]


def implicit_bm25(train: TrainData, users: pl.Series, n: int, k1: float = 1.2, b: float = 0.75,
                  neighbours: int = 100) -> pl.DataFrame:
    """implicit's BM25 item-item recommender on the same training data (no top-up)."""
    from implicit.nearest_neighbours import BM25Recommender

    user_items = train.interactions.astype(np.float64).tocsr()
    model = BM25Recommender(K=neighbours, K1=k1, B=b)
    idx = known_users(train, users)
    with warnings.catch_warnings():  # implicit warns about its own internal COO conversion
        warnings.simplefilter("ignore")
        model.fit(user_items, show_progress=False)
        ids, scores = model.recommend(idx, user_items[idx], N=n, filter_already_liked_items=True)
    # BM25 gives unrelated items a zero score: those are padding, not recommendations.
    positive = np.where(scores > 0, scores, -np.inf)
    return implicit_frame(train, idx, ids, positive)


def implicit_als(train: TrainData, users: pl.Series, n: int, *, factors: int = 64, iterations: int = 15,
                 regularization: float = 0.05, alpha: float = 1.0) -> pl.DataFrame:
    """implicit's AlternatingLeastSquares, seeded, liked items filtered (no top-up)."""
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    user_items = train.interactions.astype(np.float32).tocsr()
    idx = known_users(train, users)
    # implicit runs its own threads; a multithreaded BLAS underneath only oversubscribes the cores
    # (implicit warns about exactly this), so BLAS is pinned to one thread while it works.
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AlternatingLeastSquares(factors=factors, iterations=iterations, regularization=regularization,
                                        alpha=alpha, random_state=train.seed, use_gpu=False)
        model.fit(user_items, show_progress=False)
        ids, scores = model.recommend(idx, user_items[idx], N=min(n, train.n_items),
                                      filter_already_liked_items=True)
    return implicit_frame(train, idx, np.atleast_2d(ids), np.atleast_2d(scores))


def ease(train: TrainData, users: pl.Series, n: int, *, lam: float = 200.0, max_items: int = 10_000,
         dtype=np.float32) -> pl.DataFrame:
    """EASE (Steck 2019) on the ``max_items`` most engaged items: ``B = I - P / diag(P)``, zero diagonal.

    Dense in the kept items (memory ``4 max_items^2`` bytes in float32, time cubic),
    so the catalogue is cut to the most engaged items; users are scored on those. The
    weights are the ``ease`` channel's (:class:`recall.channels.ease.EASEWeights`),
    solved in float32 as the channel's are by default: about 2x faster than float64
    at 10,000 items, with the same Recall@200 on the Taobao 84k log (BENCHMARKS.md).
    """
    from recall.channels.ease import EASEWeights

    ranking = item_popularity(train).head(max_items)
    kept = np.sort(ranking[IIDX].to_numpy())
    idx = known_users(train, users)
    x = train.interactions[:, kept].tocsr()
    engaged = x[idx]
    scores = EASEWeights(x, lam, dtype).scores(engaged)
    scores[engaged.toarray() > 0] = -np.inf
    top = min(n, kept.size)
    part = np.argpartition(-scores, top - 1, axis=1)[:, :top] if top else np.zeros((len(idx), 0), np.int64)
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    ids = kept[np.take_along_axis(part, order, axis=1)]
    return implicit_frame(train, idx, ids, np.take_along_axis(part_scores, order, axis=1))
