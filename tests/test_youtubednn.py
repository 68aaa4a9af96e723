"""YouTube DNN two-tower channel: planted interest clusters, the training inputs against oracles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recall import schema as S
from recall.channels.youtubednn import (TwoTowerParams, YouTubeDNN, history_at, log_uniform_probabilities,
                                        training_events)
from recall.config import TriggerConfig
from recall.context import TrainData
from recall.decay import halving
from recall.io import Dataset, normalise_events
from tests.planted import planted_log, recall_at

K = 20


def fit(train: pl.DataFrame, users: pl.DataFrame | None = None, **params):
    data = TrainData.build(Dataset(events=train, users=users), seed=5)
    return YouTubeDNN(TwoTowerParams(progress=False, **params)).fit(data), data


@pytest.mark.parametrize("negatives", ["in_batch", "log_uniform"])
def test_user_vectors_recall_their_cluster(negatives):
    """Users click inside one planted cluster: held-out clicks are found far above the random rate."""
    train, test, _ = planted_log(seed=1)
    channel, data = fit(train, negatives=negatives, num_negatives=64, epochs=8)
    recs = channel.recommend(data, K)
    # A random unseen list of K finds K / (unseen items) of a user's held-out items.
    random_rate = K / (data.n_items - 12)
    found = recall_at(recs, test)
    assert found > 5 * random_rate, (found, random_rate)
    assert channel.facts()["losses"][-1] < channel.facts()["losses"][0]


def test_cold_users_get_their_groups_items_from_attributes():
    """Users without history but with an attribute shared by their cluster's users get that cluster."""
    train, test, clusters = planted_log(seed=2, n_users=300)
    cold = {u for u in range(300) if u % 5 == 0}
    users = pl.DataFrame({S.USER: list(range(300)), "group": [f"g{c[0]}" for c in clusters]})
    channel, data = fit(train.filter(~pl.col(S.USER).is_in(list(cold))), users=users, epochs=10)
    recs = channel.recommend(data, K).filter(pl.col(S.USER).is_in(list(cold)))
    assert recs[S.USER].n_unique() == len(cold)  # every cold user has a vector, from attributes alone
    cluster_of = recs[S.ITEM].to_numpy() // 25
    planted = np.array([clusters[u][0] for u in recs[S.USER].to_list()])
    # Random: 1/8 of the recommended items in the user's cluster.
    assert (cluster_of == planted).mean() > 0.6


def test_no_users_table_and_no_history_means_no_candidates():
    train, _, _ = planted_log(seed=3, n_users=60)
    channel, data = fit(train, epochs=1)
    assert channel.attributes_.n_fields == 0
    assert channel.users_with_vector_ == data.n_users  # every user here has history


def test_training_targets_and_histories_match_a_loop_oracle():
    """Targets: first engagements with an earlier event in the window; history: latest earlier events."""
    rng = np.random.default_rng(4)
    n = 300
    frame = pl.DataFrame({S.USER: rng.integers(0, 6, n), S.ITEM: rng.integers(0, 12, n),
                          S.BEHAVIOR: rng.choice(["click", "fav", "buy", "impression"], n),
                          S.TS: 1_700_000_000 + rng.integers(0, 20 * 86400, n)})
    events = normalise_events(frame, Path("<random>"))
    triggers = TriggerConfig(window_days=3.0, half_life_days=2.0)
    data = TrainData.build(Dataset(events=events), triggers=triggers)
    p = TwoTowerParams(max_history=4)
    ev = training_events(data, p)
    items, weights = history_at(ev, ev.targets, 4, triggers.window_days, triggers.half_life_days)
    rows = (data.events.filter(pl.col(S.BEHAVIOR).is_in(p.behaviors))
            .sort("user_idx", S.TS, "item_idx").select("user_idx", "item_idx", S.TS, S.BEHAVIOR).rows())
    expected = []
    for t, (u, i, ts, b) in enumerate(rows):
        before = [r for r in rows[:t] if r[0] == u]
        if not before or i in {r[1] for r in before} or ts - before[-1][2] > 3 * 86400:
            continue
        recent = [r for r in reversed(before) if ts - r[2] <= 3 * 86400][:4]
        expected.append((t, [(r[1], triggers.behavior_weights[r[3]] * halving((ts - r[2]) / 86400, 2.0))
                             for r in recent]))
    assert ev.targets.tolist() == [t for t, _ in expected]
    for row, (_, history) in enumerate(expected):
        got = [(int(items[row, j]), float(weights[row, j])) for j in range(4) if weights[row, j] > 0]
        assert [g[0] for g in got] == [h[0] for h in history]
        assert np.allclose([g[1] for g in got], [h[1] for h in history], rtol=1e-5)


def test_log_uniform_probabilities_sum_to_one_and_fall_with_rank():
    popularity = np.array([5, 50, 0, 7, 7])
    q = log_uniform_probabilities(popularity)
    assert q.sum() == pytest.approx(1.0)
    assert q[1] > q[3] > q[4] > q[0] > q[2]  # ties: the smaller index ranks first
    assert q[1] == pytest.approx(np.log(2) / np.log(6))
