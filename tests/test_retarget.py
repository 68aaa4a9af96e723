"""Retargeting against a brute-force Python oracle, the buy-after / buy-before rule, the cap and the contract."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from recall import schema as S
from recall.channels.retarget import Retarget, RetargetParams
from recall.context import TrainData
from recall.io import Dataset, normalise_events
from tests.conftest import random_log

DAY = 86400
T0 = 1_700_000_000


def brute_force_retarget(events: pl.DataFrame, p: RetargetParams, now: int, n: int) -> dict:
    """The module docstring's formula with plain loops: {user: [(item, score), ...best first]}."""
    values = defaultdict(list)
    last_look: dict[tuple, int] = {}
    last_buy: dict[tuple, int] = {}
    for u, i, b, ts in events.select("user_id", "item_id", "behavior", "ts").iter_rows():
        if ts > now:
            continue
        if b == "buy":
            last_buy[u, i] = max(last_buy.get((u, i), ts), ts)
            continue
        w = p.behavior_weights.get(b, 0.0)
        if w <= 0 or (p.window_days is not None and ts < now - p.window_days * DAY):
            continue
        decay = 1.0 if p.half_life_days is None else 0.5 ** ((now - ts) / (p.half_life_days * DAY))
        values[u, i].append(w * decay)
        last_look[u, i] = max(last_look.get((u, i), ts), ts)
    per_user = defaultdict(list)
    for (u, i), vals in values.items():
        if (u, i) in last_buy and last_buy[u, i] >= last_look[u, i]:
            continue
        per_user[u].append((i, sum(vals) if p.aggregate == "sum" else max(vals)))
    # Item ids are 10 x item index in random_log, so ordering by id is ordering by index.
    return {u: sorted(row, key=lambda x: (-x[1], x[0]))[: min(n, p.max_per_user)]
            for u, row in per_user.items()}


def as_dict(frame: pl.DataFrame) -> dict:
    out = defaultdict(list)
    for u, i, s, _ in frame.sort("user_id", "rank").iter_rows():
        out[u].append((i, s))
    return dict(out)


def log(rows) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "behavior", "ts"], orient="row")
    return normalise_events(frame, "<planted>")


PARAM_CASES = [
    dict(),
    dict(aggregate="max"),
    dict(max_per_user=3, window_days=4.0),
    dict(behavior_weights={"click": 0.5, "cart": 4.0}, half_life_days=float("inf"), window_days=float("inf")),
    dict(behavior_weights={"fav": 1.0}, half_life_days=1.0, aggregate="max", max_per_user=2),
]


@pytest.mark.parametrize("overrides", PARAM_CASES)
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("n", [4, 50])
def test_retarget_matches_brute_force(overrides, seed, n):
    events = random_log(seed, n_events=400)
    p = RetargetParams(**overrides)
    train = TrainData.build(Dataset(events), now=T0 + 9 * DAY)  # some events lie after now
    got = as_dict(Retarget(p).fit(train).recommend(train, n))
    expected = brute_force_retarget(events, p, train.now, n)
    expected = {u: row for u, row in expected.items() if row}
    assert got.keys() == expected.keys()
    for user, row in expected.items():
        assert [i for i, _ in got[user]] == [i for i, _ in row], user
        np.testing.assert_allclose([s for _, s in got[user]], [s for _, s in row], rtol=1e-12)


def test_buy_after_the_last_look_removes_buy_before_keeps():
    events = log([
        (1, 10, "cart", T0), (1, 10, "buy", T0 + 100),                          # converted: dropped
        (1, 20, "buy", T0), (1, 20, "click", T0 + 100),                         # came back after buying: kept
        (1, 30, "click", T0), (1, 30, "buy", T0 + 50), (1, 30, "fav", T0 + 100),  # looked again: kept
        (1, 40, "click", T0), (1, 40, "fav", T0 + 50), (1, 40, "buy", T0 + 100),  # bought after both: dropped
        (1, 50, "click", T0 + 100), (1, 50, "buy", T0 + 100),                   # same second: converted
        (1, 60, "buy", T0 + 200),                                               # bought, never looked: absent
        (2, 10, "click", T0),                                                   # another user's buy is not his
    ])
    train = TrainData.build(Dataset(events))
    recs = Retarget().fit(train).recommend(train, 10)
    assert set(recs.select("user_id", "item_id").iter_rows()) == {(1, 20), (1, 30), (2, 10)}


def test_stronger_and_fresher_behaviours_rank_first():
    events = log([
        (1, 1, "click", T0 + 9 * DAY), (1, 2, "cart", T0 + 9 * DAY), (1, 3, "fav", T0 + 9 * DAY),
        (1, 4, "cart", T0), (1, 5, "impression", T0 + 9 * DAY),
    ])
    train = TrainData.build(Dataset(events), now=T0 + 10 * DAY)
    recs = Retarget(RetargetParams(half_life_days=2.0)).fit(train).recommend(train, 10)
    assert recs.sort("rank")["item_id"].to_list() == [2, 3, 1, 4]  # impressions never retarget


def test_cap_is_strict_whatever_n():
    events = random_log(5, n_events=2000, n_users=8, n_items=40, behaviors=("click", "cart"))
    train = TrainData.build(Dataset(events))
    channel = Retarget(RetargetParams(max_per_user=3)).fit(train)
    for n in (1, 3, 10, 1000):
        counts = channel.recommend(train, n).group_by("user_id").len()["len"]
        assert counts.max() == min(n, 3)


def test_params_defaults_and_validation():
    p = RetargetParams()
    assert p.quota == p.max_per_user and p.share is None and p.strict  # volume controlled by default
    assert RetargetParams(max_per_user=4).quota == 4
    assert RetargetParams(share=0.05).quota is None
    for bad in (dict(behavior_weights={"buy": 1.0}), dict(behavior_weights={"click": 0.0}),
                dict(aggregate="mean"), dict(max_per_user=0), dict(typo=1)):
        with pytest.raises(ValidationError):
            RetargetParams(**bad)


def test_no_retargeting_behaviour_gives_the_empty_table():
    events = log([(1, 1, "buy", T0), (2, 2, "impression", T0)])
    train = TrainData.build(Dataset(events))
    recs = Retarget().fit(train).recommend(train, 5)
    assert recs.height == 0 and recs.columns == [S.USER, S.ITEM, S.SCORE, S.RANK]
