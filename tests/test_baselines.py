"""Baselines against brute-force oracles: popularity, its top-up, EASE's closed form."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recall import baselines as B
from recall import schema as S
from recall.channels.ease import ease_weights
from recall.context import TrainData
from recall.io import Dataset
from tests.conftest import random_log


@pytest.fixture(scope="module")
def train() -> TrainData:
    return TrainData.build(Dataset(random_log(11, n_events=800, n_users=30, n_items=25, days=10)), seed=2)


def test_popularity_matches_brute_force(train):
    engaged = train.engaged()
    counts = {}
    for user, item in set(engaged.select(S.USER, S.ITEM).iter_rows()):
        counts[item] = counts.get(item, 0) + 1
    order = sorted(counts, key=lambda i: (-counts[i], i))
    users = train.user_ids
    got = B.popularity(train, users, 5)
    seen = {}
    for user, item in engaged.select(S.USER, S.ITEM).iter_rows():
        seen.setdefault(user, set()).add(item)
    for user in users.to_list():
        expected = [i for i in order if i not in seen.get(user, set())][:5]
        assert got.filter(pl.col(S.USER) == user).sort(S.RANK)[S.ITEM].to_list() == expected


def test_recent_popularity_weights_by_age(train):
    ranking = B.item_popularity(train, half_life_days=1.0)
    pairs = train.engaged().group_by("user_idx", "item_idx").agg(pl.col(S.TS).max())
    expected = {}
    for _, item, ts in pairs.iter_rows():
        expected[item] = expected.get(item, 0.0) + 0.5 ** ((train.now - ts) / 86400.0)
    assert dict(ranking.iter_rows()) == pytest.approx(expected)


def test_topped_up_fills_from_the_fallback_without_duplicates():
    primary = pl.DataFrame({S.USER: [1, 1], S.ITEM: [10, 11], S.SCORE: [2.0, 1.0], S.RANK: [1, 2]})
    fallback = pl.DataFrame({S.USER: [1, 1, 1, 2, 2], S.ITEM: [11, 12, 13, 12, 14],
                             S.SCORE: [9.0, 8.0, 7.0, 9.0, 8.0], S.RANK: [1, 2, 3, 1, 2]})
    got = B.topped_up(primary, fallback, 3).with_columns(pl.col(S.RANK).cast(pl.Int64))
    assert got.select(S.USER, S.ITEM, S.RANK).rows() == [(1, 10, 1), (1, 11, 2), (1, 12, 3), (2, 12, 1), (2, 14, 2)]


def test_ease_weights_match_numpy_closed_form():
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((40, 12)) < 0.3).astype(np.float32))
    lam = 5.0
    dense = x.toarray().astype(np.float64)
    p = np.linalg.inv(dense.T @ dense + lam * np.eye(12))
    expected = np.eye(12) - p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(ease_weights(x, lam), expected, atol=1e-10)
    # EASE is the ridge regression of each item on the others: check one column directly.
    j = 3
    others = [i for i in range(12) if i != j]
    a = dense[:, others]
    beta = np.linalg.solve(a.T @ a + lam * np.eye(11), a.T @ dense[:, j])
    np.testing.assert_allclose(expected[others, j], beta, atol=1e-8)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-9), (np.float32, 1e-5)])
def test_ease_lists_follow_the_scores_and_skip_seen_items(train, dtype, rtol):
    users = train.user_ids
    got = B.ease(train, users, 4, lam=10.0, dtype=dtype)
    x = train.interactions.toarray().astype(np.float64)
    weights = ease_weights(sp.csr_matrix(x), 10.0)
    scores = x @ weights
    scores[x > 0] = -np.inf
    for u, user in enumerate(users.to_list()):
        mine = got.filter(pl.col(S.USER) == user).sort(S.RANK)
        expected = np.sort(scores[u][np.isfinite(scores[u])])[::-1][:4]
        np.testing.assert_allclose(mine[S.SCORE].to_numpy(), expected, rtol=rtol)
        assert not set(mine[S.ITEM].to_list()) & set(train.item_ids.gather(np.flatnonzero(x[u])).to_list())
