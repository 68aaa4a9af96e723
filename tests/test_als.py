"""ALS: planted block structure recalled well above chance, seeded reproducibility, confidences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recall import schema as S
from recall.channels.als import ALS, ALSParams, confidence
from recall.config import TriggerConfig
from recall.context import TrainData
from recall.io import Dataset, normalise_events
from tests.conftest import random_log

BLOCKS, USERS_PER_BLOCK, ITEMS_PER_BLOCK = 4, 30, 25


def planted(seed: int = 0) -> tuple[pl.DataFrame, dict]:
    """Users of block b click a random 40% of block b's items; a held-out item per user is the target."""
    rng = np.random.default_rng(seed)
    rows, held_out = [], {}
    for b in range(BLOCKS):
        items = np.arange(b * ITEMS_PER_BLOCK, (b + 1) * ITEMS_PER_BLOCK)
        for k in range(USERS_PER_BLOCK):
            user = b * USERS_PER_BLOCK + k
            chosen = rng.choice(items, size=11, replace=False)
            held_out[user] = int(chosen[0])
            rows += [(user, int(i), "click", 1_700_000_000 + 60 * j) for j, i in enumerate(chosen[1:])]
    events = pl.DataFrame(rows, schema=[S.USER, S.ITEM, S.BEHAVIOR, S.TS], orient="row")
    return normalise_events(events, Path("<planted>")), held_out


def test_planted_blocks_are_recalled_well_above_chance():
    events, held_out = planted()
    train = TrainData.build(Dataset(events=events))
    recs = ALS(ALSParams(factors=8, iterations=15, regularization=0.1)).fit(train).recommend(train, 10)
    top = recs.group_by(S.USER).agg(pl.col(S.ITEM))
    in_block = hits = 0
    for user, items in top.iter_rows():
        block = user // USERS_PER_BLOCK
        in_block += sum(i // ITEMS_PER_BLOCK == block for i in items)
        hits += held_out[user] in items
    n_users = BLOCKS * USERS_PER_BLOCK
    # Chance: a quarter of the candidates in the user's block; 10 of the 90 unseen items hold the target.
    assert in_block / recs.height > 0.9
    assert hits / n_users > 3 * 10 / 90


def test_seeded_fit_is_reproducible_and_the_seed_matters():
    events = random_log(3, n_events=600, n_users=30, n_items=20)
    dataset = Dataset(events=events)
    fits = [ALS(ALSParams(factors=6)).fit(TrainData.build(dataset, seed=s)) for s in (1, 1, 2)]
    assert np.array_equal(fits[0].user_factors_, fits[1].user_factors_)
    assert np.array_equal(fits[0].item_factors_, fits[1].item_factors_)
    assert not np.array_equal(fits[0].item_factors_, fits[2].item_factors_)
    train = TrainData.build(dataset, seed=1)
    assert fits[0].recommend(train, 5).equals(fits[1].recommend(train, 5))


def test_users_without_history_get_nothing():
    events = random_log(4, n_events=300, n_users=12, n_items=15)
    # Users 100 and 101 only have impressions: no positive feedback at all.
    extra = normalise_events(pl.DataFrame({S.USER: [100, 101], S.ITEM: [0, 10], S.BEHAVIOR: ["impression"] * 2,
                                           S.TS: [1_700_000_000] * 2}), Path("<extra>"))
    train = TrainData.build(Dataset(events=pl.concat([events, extra])))
    channel = ALS(ALSParams(factors=4)).fit(train)
    recs = channel.recommend(train, 5)
    assert not recs[S.USER].is_in([100, 101]).any()
    assert recs.height > 0
    cold = train.user_index(pl.Series([100, 101]))
    assert not channel.user_factors_[cold].any()


def test_confidence_is_one_plus_alpha_times_weighted_events():
    rows = [(1, 10, "click", 0), (1, 10, "click", 5), (1, 10, "buy", 9), (1, 20, "fav", 3),
            (2, 10, "impression", 1), (2, 20, "cart", 2)]
    events = normalise_events(pl.DataFrame(rows, schema=[S.USER, S.ITEM, S.BEHAVIOR, S.TS], orient="row"),
                              Path("<rows>"))
    train = TrainData.build(Dataset(events=events), triggers=TriggerConfig())
    weights = TriggerConfig().behavior_weights  # click 1, fav 2, cart 3, buy 3

    def table(**params):
        m = confidence(train, ALSParams(**params)).toarray()
        return {(train.user_ids[int(u)], train.item_ids[int(i)]): float(m[u, i]) for u, i in zip(*np.nonzero(m))}

    assert table(alpha=2.0) == {(1, 10): 1 + 2 * (1 + 1 + weights["buy"]), (1, 20): 1 + 2 * weights["fav"],
                                (2, 20): 1 + 2 * weights["cart"]}
    assert table(alpha=1.0, aggregate="max")[(1, 10)] == 1 + weights["buy"]
    assert table(alpha=1.0, behavior_weights={"click": 1.0}) == {(1, 10): 3.0}


def test_unknown_behaviour_weight_is_refused():
    with pytest.raises(ValueError, match="unknown behaviour"):
        ALSParams(behavior_weights={"like": 1.0})
