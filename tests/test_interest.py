"""Interest recall against a brute-force restatement of its formula, and a planted category structure."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import polars as pl
import pytest

from recall import schema as S
from recall.channels.interest import Interest, InterestParams
from recall.config import TriggerConfig
from recall.context import TrainData
from recall.errors import RecallError
from recall.io import Dataset
from tests.conftest import random_log

DAY = 86400


def brute_force(dataset: Dataset, train: TrainData, p: InterestParams, n: int) -> dict[int, list[tuple[int, float]]]:
    """Every (user, item) score by the module docstring's formula, with Python dicts and loops."""
    category = dict(zip(dataset.items[S.ITEM].to_list(), dataset.items[S.CATEGORY].to_list()))
    engaged = train.engaged()
    # Popularity: each distinct user's last engagement with the item, halved every half-life.
    last = defaultdict(int)
    for u, i, ts in engaged.select(S.USER, S.ITEM, S.TS).iter_rows():
        last[u, i] = max(last[u, i], ts)
    votes = defaultdict(float)
    for (u, i), ts in last.items():
        h = p.popularity_half_life_days
        votes[i] += 1.0 if h is None else 0.5 ** ((train.now - ts) / (h * DAY))
    size = defaultdict(float)
    for i, v in votes.items():
        if category.get(i) is not None:
            size[category[i]] += v
    weight = {i: v / size[category[i]] ** p.size_exponent for i, v in votes.items() if category.get(i) is not None}
    by_category = defaultdict(list)
    for i, w in weight.items():
        by_category[category[i]].append((w, i))
    top_items = {c: {i for _, i in sorted(pairs, key=lambda t: (-t[0], t[1]))[:p.items_per_category]}
                 for c, pairs in by_category.items()}
    # Affinity: the shared trigger weights, summed per category; the strongest categories kept.
    triggers = train.trigger_matrix.tocoo()
    affinity = defaultdict(float)
    for r, c, w in zip(triggers.row, triggers.col, triggers.data):
        item = train.item_ids[int(c)]
        if category.get(item) is not None:
            affinity[int(train.user_ids[int(r)]), category[item]] += float(w)
    seen = set(engaged.select(S.USER, S.ITEM).iter_rows())
    out = {}
    for user in train.user_ids.to_list():
        mine = sorted(((a, c) for (u, c), a in affinity.items() if u == user), key=lambda t: -t[0])
        strongest = mine[:p.max_categories]
        scores = {i: a * weight[i] for a, c in strongest for i in top_items.get(c, ())
                  if (user, i) not in seen}
        out[user] = sorted(scores.items(), key=lambda t: (-t[1], t[0]))[:n]
    return out


@pytest.mark.parametrize("params", [
    dict(), dict(size_exponent=0.0, popularity_half_life_days=None), dict(size_exponent=1.0, max_categories=1),
    dict(items_per_category=2, popularity_half_life_days=2.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_interest_matches_brute_force(params, seed):
    events = random_log(seed, n_events=500, n_users=20, n_items=40)
    # Four categories of uneven size; two items have none and are never recalled.
    items = pl.DataFrame({S.ITEM: [10 * i for i in range(40)],  # random_log's ids are index x 10
                          S.CATEGORY: [None, None] + [i % 4 if i < 30 else 0 for i in range(2, 40)]})
    dataset = Dataset(events=events, items=items)
    train = TrainData.build(dataset, triggers=TriggerConfig(half_life_days=3.0, window_days=20.0, max_triggers=8))
    p = InterestParams(**params)
    recs = Interest(p).fit(train).recommend(train, 6)
    assert recs.height > 40
    expected = brute_force(dataset, train, p, 6)
    for user, pairs in expected.items():
        got = recs.filter(pl.col(S.USER) == user).sort(S.RANK)
        assert got[S.ITEM].to_list() == [i for i, _ in pairs], user
        assert np.allclose(got[S.SCORE].to_numpy(), [s for _, s in pairs])
        assert not set(got[S.ITEM].to_list()) & {0, 10}


def test_interest_recalls_the_planted_category():
    """Users who browse one category get that category's hot items, not the global hot list."""
    rng = np.random.default_rng(5)
    n_users, per_category = 60, 25
    categories = np.repeat(np.arange(4), per_category)
    rows = []
    for user in range(n_users):
        own = user % 4
        # Popular items inside the category are the low-numbered ones (Zipf-like picks).
        picks = np.minimum(rng.zipf(1.6, size=8) - 1, per_category - 1)
        rows += [(user, int(own * per_category + k), 1_000 + j * 60) for j, k in enumerate(picks)]
    events = pl.DataFrame(rows, schema=[S.USER, S.ITEM, S.TS], orient="row").with_columns(
        pl.lit("click").alias(S.BEHAVIOR))
    items = pl.DataFrame({S.ITEM: np.arange(4 * per_category), S.CATEGORY: categories})
    train = TrainData.build(Dataset(events=events.select(S.USER, S.ITEM, S.BEHAVIOR, S.TS), items=items))
    recs = Interest().fit(train).recommend(train, 10)
    in_own = recs.with_columns(own=(pl.col(S.ITEM) // per_category) == (pl.col(S.USER) % 4))
    assert in_own["own"].all()
    assert recs[S.USER].n_unique() == n_users


def test_interest_needs_categories():
    events = random_log(0, n_events=50, n_users=5, n_items=8)
    train = TrainData.build(Dataset(events=events))
    with pytest.raises(RecallError, match="category_id"):
        Interest().fit(train)

