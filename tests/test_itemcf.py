"""itemCF against a brute-force Python oracle of the documented formula, and against implicit."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recall.channels.itemcf import ItemCF, ItemCFParams
from recall.context import TrainData
from recall.io import Dataset
from tests.conftest import random_log


def brute_force_itemcf(events: pl.DataFrame, p: ItemCFParams, now: int, categories=None) -> dict:
    """The module docstring's formula with plain loops: {item: [(neighbor, score), ...best first]}."""
    latest: dict[tuple, int] = {}
    for u, i, b, ts in events.select("user_id", "item_id", "behavior", "ts").iter_rows():
        if b not in p.behaviors or (p.window_days and ts < now - p.window_days * 86400):
            continue
        latest[(u, i)] = max(latest.get((u, i), ts), ts)
    by_user = defaultdict(dict)
    for (u, i), ts in latest.items():
        by_user[u][i] = ts
    by_user = {u: its for u, its in by_user.items() if len(its) <= p.max_user_items}
    t0 = min(ts for its in by_user.values() for ts in its.values())
    counts = defaultdict(int)
    for its in by_user.values():
        for i in its:
            counts[i] += 1
    co = defaultdict(float)
    for its in by_user.values():
        w = 1 / math.log(1 + len(its)) if p.iuf else 1.0
        for i, ti in its.items():
            for j, tj in its.items():
                if i == j:
                    continue
                if categories is not None and categories[i] != categories[j]:
                    continue
                if p.pair_window_hours is None:
                    gap = 0
                else:
                    bucket = p.bucket_hours * 3600
                    gap = abs((ti - t0) // bucket - (tj - t0) // bucket)
                    if gap > p.pair_window_hours / p.bucket_hours + 1e-9:
                        continue
                f = 1.0 if p.decay_half_life_hours is None else 0.5 ** (gap * p.bucket_hours / p.decay_half_life_hours)
                co[i, j] += w * f
    table = defaultdict(list)
    for (i, j), c in co.items():
        table[i].append((j, c / (counts[i] ** p.alpha * counts[j] ** (1 - p.alpha))))
    out = {}
    for i, row in table.items():
        row.sort(key=lambda x: (-x[1], x[0]))
        row = row[: p.top_k]
        if p.normalize:
            top = row[0][1]
            row = [(j, s / top) for j, s in row]
        out[i] = row
    return out


def as_dict(frame: pl.DataFrame) -> dict:
    out = defaultdict(list)
    for i, j, s, r in frame.sort("item_id", "rank").iter_rows():
        out[i].append((j, s))
    return dict(out)


PARAM_CASES = [
    dict(),
    dict(alpha=0.5),
    dict(iuf=False, pair_window_hours=None, decay_half_life_hours=None, normalize=False),
    dict(alpha=0.8, top_k=3, bucket_hours=6, pair_window_hours=48, decay_half_life_hours=12),
    dict(window_days=4, max_user_items=12, top_k=5, item_block=4),
    dict(window_days=4, max_user_items=12, top_k=5, item_block=3, threads=3),
    dict(same_category=True, top_k=4),
]


@pytest.mark.parametrize("overrides", PARAM_CASES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_itemcf_matches_brute_force(overrides, seed, tiny_dataset):
    events = random_log(seed)
    data = Dataset(events=events, items=tiny_dataset.items)
    params = ItemCFParams(**overrides)
    train = TrainData.build(data)
    got = as_dict(ItemCF(params).fit(train).similar_items(train))
    categories = dict(tiny_dataset.items.iter_rows()) if params.same_category else None
    expected = brute_force_itemcf(events, params, train.now, categories)
    assert got.keys() == expected.keys()
    for item, row in expected.items():
        got_row = got[item]
        assert [j for j, _ in got_row] == [j for j, _ in row], item
        np.testing.assert_allclose([s for _, s in got_row], [s for _, s in row], rtol=1e-9)


def test_itemcf_cosine_equals_implicit_cosine():
    """With no IUF, no time structure and alpha 0.5, itemCF is implicit's CosineRecommender."""
    from implicit.nearest_neighbours import CosineRecommender

    events = random_log(11, n_events=3000, n_users=200, n_items=60, behaviors=("click",))
    train = TrainData.build(Dataset(events))
    k = 10
    params = ItemCFParams(iuf=False, pair_window_hours=None, decay_half_life_hours=None,
                          alpha=0.5, normalize=False, top_k=k)
    ours = ItemCF(params).fit(train).similarity_
    peer = CosineRecommender(K=k + 1)  # implicit keeps the item itself among its K neighbours
    peer.fit(train.interactions.astype(np.float64), show_progress=False)
    theirs = sp.csr_matrix(peer.similarity)
    theirs.setdiag(0)
    theirs.eliminate_zeros()
    for item in range(train.n_items):
        a = ours[item].toarray().ravel()
        b = theirs[item].toarray().ravel()
        # Compare the neighbour scores (top-k sets can differ only on exact ties at the cut).
        top_a = np.sort(a[a > 0])[::-1][:k]
        top_b = np.sort(b[b > 0])[::-1][:k]
        np.testing.assert_allclose(top_a, top_b, rtol=1e-5, atol=1e-6)


def test_planted_pair_is_top_neighbour():
    """Users who click A also click B: B must be A's best neighbour."""
    rng = np.random.default_rng(0)
    users = np.arange(100)
    rows = []
    for u in users:
        noise = rng.choice(np.arange(2, 50), 3, replace=False)
        rows += [(u, 0, "click", 1_700_000_000 + u), (u, 1, "click", 1_700_000_100 + u)]
        rows += [(u, int(n), "click", 1_700_000_200 + u) for n in noise]
    events = pl.DataFrame(rows, schema=["user_id", "item_id", "behavior", "ts"], orient="row")
    from recall.io import normalise_events

    train = TrainData.build(Dataset(normalise_events(events, "<planted>")))
    table = ItemCF(ItemCFParams()).fit(train).similar_items(train)
    assert table.filter(pl.col("item_id") == 0, pl.col("rank") == 1)["neighbor_id"].item() == 1
