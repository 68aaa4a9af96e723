"""MIND: planted interest clusters (one and two per user), routing pieces against their definitions."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from recall import schema as S
from recall.channels.mind import MIND, MINDParams, squash
from recall.channels.youtubednn import adaptive_interests
from recall.context import TrainData
from recall.io import Dataset
from tests.planted import planted_log, recall_at

K = 20
SIZE = 25


def fit(train: pl.DataFrame, **params):
    data = TrainData.build(Dataset(events=train), seed=5)
    return MIND(MINDParams(progress=False, **params)).fit(data), data


@pytest.fixture(scope="module")
def two_interest():
    """Half the users click in two clusters; MIND fitted once for the tests below."""
    train, test, clusters = planted_log(seed=6, n_users=400, clicks=20, two_share=0.5)
    channel, data = fit(train, epochs=10)
    return channel, data, test, clusters


def test_interests_recall_held_out_items_far_above_random(two_interest):
    channel, data, test, _ = two_interest
    random_rate = K / (data.n_items - 16)
    assert recall_at(channel.recommend(data, K), test) > 4 * random_rate


def test_two_interest_users_get_interests_for_both_clusters(two_interest):
    """The top items of a two-cluster user's separate interest vectors cover both of the user's clusters."""
    channel, data, _, clusters = two_interest
    user_index = data.user_index(pl.Series([u for u in range(len(clusters))]))
    covered, two = 0, 0
    for user, chosen in enumerate(clusters):
        if len(chosen) != 2:
            continue
        row = user_index[user]
        k = channel.k_[row]
        assert k >= 2  # 16 history items: floor(log2 16) = 4 interests, max 4
        tops = channel.interests_[row, :k] @ channel.item_vectors_.T  # k x items
        best = np.argsort(-tops, axis=1)[:, :10]
        majority = {int(np.bincount(data.item_ids.to_numpy()[b] // SIZE).argmax()) for b in best}
        two += 1
        covered += set(chosen) <= majority
    assert two > 150
    # By chance (one cluster's items dominating every interest): near zero.
    assert covered / two > 0.6, covered / two


def test_each_interest_is_focused_on_one_cluster(two_interest):
    """An interest is not a blend: its top 10 come mostly from one of the user's two clusters."""
    channel, data, _, clusters = two_interest
    user_index = data.user_index(pl.Series(list(range(len(clusters)))))
    spread = []
    for user, chosen in enumerate(clusters):
        if len(chosen) != 2:
            continue
        row = user_index[user]
        vectors = channel.interests_[row, :channel.k_[row]]
        per_interest = [np.bincount(data.item_ids.to_numpy()[np.argsort(-(v @ channel.item_vectors_.T))[:10]]
                                    // SIZE, minlength=8)[list(chosen)].max() for v in vectors]
        spread.append(max(per_interest))
    # Some interest is dominated by one cluster (>= 8 of its top 10 from one of the two).
    assert np.mean(np.array(spread) >= 8) > 0.6, np.mean(np.array(spread) >= 8)


def test_adaptive_number_of_interests():
    lengths = np.array([0, 1, 2, 3, 4, 7, 8, 100])
    assert adaptive_interests(lengths, 4).tolist() == [1, 1, 1, 1, 2, 2, 3, 4]
    assert adaptive_interests(torch.from_numpy(lengths), 3).tolist() == [1, 1, 1, 1, 2, 2, 3, 3]


def test_squash_keeps_direction_and_bounds_length():
    z = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.03, 0.04]])
    out = squash(z)
    assert torch.allclose(out[0], z[0] / 5 * 25 / 26)
    assert torch.equal(out[1], torch.zeros(2))
    assert torch.linalg.norm(out[2]) == pytest.approx(0.0025 / 1.0025, rel=1e-4)


def test_interests_are_merged_with_an_equal_share():
    """With K_u interests, the merged list interleaves them: ranks within interests go 1,1,..,2,2,.."""
    train, _, _ = planted_log(seed=7, n_users=80, clicks=20, two_share=1.0)
    channel, data = fit(train, epochs=2)
    recs = channel.recommend(data, 12)
    k_of = dict(zip(data.user_ids.to_list(), channel.k_.tolist()))
    per_user = recs.group_by(S.USER).agg(pl.col(S.SCORE).sort_by(S.RANK))
    assert per_user.height == data.n_users
    for user, scores in per_user.iter_rows():
        within = np.rint(1 / np.array(scores)).astype(int)  # the rank inside the interest that found it
        assert within[0] == 1 and (np.diff(within) >= 0).all()
        # Interleaved: each level r holds at most one item per interest, and levels fill in order.
        counts = np.bincount(within)[1:]
        assert counts.max() <= k_of[user]
        assert k_of[user] >= 2 and counts[0] >= 2  # two clusters: several interests contribute
