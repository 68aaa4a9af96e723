"""Swing against a brute-force Python oracle of the documented formula (loops over user pairs)."""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recall import schema as S
from recall.channels.swing import Swing, SwingParams, engagement, sample_users
from recall.context import TrainData
from recall.io import Dataset, normalise_events
from tests.conftest import random_log


def brute_force_swing(events: pl.DataFrame, p: SwingParams, now: int, sample: dict | None = None) -> dict:
    """The module docstring's formula with plain loops: ``{item: [(neighbor, score), ...best first]}``.

    ``sample`` maps an item to the users its row sums over (default: all its users).
    """
    items_of = defaultdict(set)
    for u, i, b, ts in events.select(S.USER, S.ITEM, S.BEHAVIOR, S.TS).iter_rows():
        if b in p.behaviors and (p.window_days is None or ts >= now - p.window_days * 86400):
            items_of[u].add(i)
    items_of = {u: its for u, its in items_of.items() if p.min_user_items <= len(its) <= p.max_user_items}
    users_of = defaultdict(set)
    for u, its in items_of.items():
        for i in its:
            users_of[i].add(u)
    weight = {u: (p.user_alpha + len(its)) ** -p.user_beta for u, its in items_of.items()}
    sim = defaultdict(lambda: defaultdict(float))
    for i, users in users_of.items():
        pool = users if sample is None else sample.get(i, set())
        for u, v in combinations(sorted(pool), 2):
            common = items_of[u] & items_of[v]
            for j in common - {i}:
                sim[i][j] += weight[u] * weight[v] / (p.alpha + len(common))
    out = {}
    for i, row in sim.items():
        ranked = sorted(row.items(), key=lambda x: (-x[1], x[0]))[: p.top_k]
        if p.normalize and ranked:
            top = ranked[0][1]
            ranked = [(j, s / top) for j, s in ranked]
        out[i] = ranked
    return out


def table_of(channel: Swing, train: TrainData) -> dict:
    out = defaultdict(list)
    frame = channel.similar_items(train).sort(S.ITEM, S.RANK)
    for i, j, s in frame.select(S.ITEM, S.NEIGHBOR, S.SCORE).iter_rows():
        out[i].append((j, s))
    return dict(out)


def assert_same_table(got: dict, expected: dict) -> None:
    assert expected and set(got) == set(expected)
    for i, row in expected.items():
        assert dict(got[i]) == pytest.approx(dict(row), rel=1e-9), i


PARAMS = [
    dict(min_user_items=1),
    dict(min_user_items=3, max_user_items=9, alpha=0.0, user_alpha=0.0, user_beta=0.5),
    dict(min_user_items=2, alpha=3.0, user_alpha=15.0, user_beta=0.3, normalize=False,
         behaviors=["click", "buy"], window_days=6.0),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("params", PARAMS, ids=["defaults", "no-smoothing", "flink-like"])
def test_swing_matches_brute_force(seed, params):
    events = random_log(seed, n_events=400, n_users=20, n_items=12)
    p = SwingParams(top_k=100, **params)  # every neighbour kept: no tie at a cut
    train = TrainData.build(Dataset(events=events))
    channel = Swing(p).fit(train)
    assert_same_table(table_of(channel, train), brute_force_swing(events, p, train.now))


@pytest.mark.parametrize("seed", [0, 3])
def test_swing_with_sampled_item_users_matches_brute_force(seed):
    events = random_log(seed, n_events=400, n_users=20, n_items=12)
    p = SwingParams(min_user_items=1, max_users_per_item=4, normalize=False, top_k=100)
    train = TrainData.build(Dataset(events=events), seed=seed)
    channel = Swing(p).fit(train)
    sampled = sample_users(engagement(train, p), p.max_users_per_item, seed)
    by_item = sampled.tocsc()
    sample = {train.item_ids[i]: {train.user_ids[int(u)]
                                  for u in by_item.indices[by_item.indptr[i]:by_item.indptr[i + 1]]}
              for i in range(train.n_items)}
    assert channel.facts()["items_sampled"] > 0
    assert_same_table(table_of(channel, train), brute_force_swing(events, p, train.now, sample))


def test_sample_keeps_cap_users_per_item_and_is_seeded():
    events = random_log(5, n_events=600, n_users=30, n_items=8)
    train = TrainData.build(Dataset(events=events))
    x = engagement(train, SwingParams(min_user_items=1))
    counts = np.bincount(x.indices, minlength=x.shape[1])
    a, b, c = (sample_users(x, 5, s) for s in (1, 1, 2))
    assert np.array_equal(np.bincount(a.indices, minlength=x.shape[1]), np.minimum(counts, 5))
    assert (a != b).nnz == 0 and (a != c).nnz > 0
    assert (a - a.multiply(x)).nnz == 0  # a subset of the engagement
    assert sample_users(x, int(counts.max()), 1) is x


def test_small_blocks_give_the_same_table():
    events = random_log(4, n_events=500, n_users=25, n_items=15)
    train = TrainData.build(Dataset(events=events))
    base = Swing(SwingParams(min_user_items=2)).fit(train).similar_items(train)
    small = Swing(SwingParams(min_user_items=2, user_block=3, max_block_entries=40, item_block=2,
                              threads=2)).fit(train).similar_items(train)
    assert small.select(S.ITEM, S.NEIGHBOR, S.RANK).equals(base.select(S.ITEM, S.NEIGHBOR, S.RANK))
    assert np.allclose(small[S.SCORE].to_numpy(), base[S.SCORE].to_numpy(), rtol=1e-12)


def test_pairs_that_overlap_everywhere_count_little():
    """Two bots co-clicking 10 items weigh less for (0, 5) than three ordinary users do for (0, 1)."""
    rows = [(bot, item) for bot in (100, 101) for item in range(10)]
    rows += [(user, item) for user in (1, 2, 3) for item in (0, 1, 20 + user)]
    events = pl.DataFrame({S.USER: [r[0] for r in rows], S.ITEM: [r[1] for r in rows],
                           S.BEHAVIOR: ["click"] * len(rows), S.TS: list(range(len(rows)))})
    train = TrainData.build(Dataset(events=normalise_events(events, Path("<planted>"))))
    table = table_of(Swing(SwingParams(min_user_items=1, normalize=False)).fit(train), train)
    scores = dict(table[0])
    assert scores[1] > 5 * scores[5]


def test_users_outside_the_item_range_are_left_out():
    events = random_log(2, n_events=300, n_users=10, n_items=12)
    train = TrainData.build(Dataset(events=events))
    x = engagement(train, SwingParams(min_user_items=6, max_user_items=8))
    n_u = np.diff(x.indptr)
    assert ((n_u == 0) | ((n_u >= 6) & (n_u <= 8))).all() and (n_u > 0).any()


def test_max_below_min_user_items_is_refused():
    with pytest.raises(ValueError, match="max_user_items"):
        SwingParams(min_user_items=20, max_user_items=10)
