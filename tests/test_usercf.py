"""userCF against a brute-force Python oracle of the documented formula, a planted split, the contract."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import polars as pl
import pytest

from recall import schema as S
from recall.channels.usercf import NEIGHBORS_TABLE, UserCF, UserCFParams, cost_blocks
from recall.config import TriggerConfig
from recall.context import ENGAGED, TrainData
from recall.io import Dataset, normalise_events
from tests.conftest import random_log


def brute_force_usercf(events: pl.DataFrame, p: UserCFParams, triggers: TriggerConfig, now: int,
                       n: int) -> tuple[dict, dict]:
    """The module docstring's formulas with plain loops over all user pairs.

    Returns ``(neighbours, candidates)``, each ``{user: [(id, score), ...best first]}``.
    """
    half_life = triggers.half_life_days if p.recency_half_life_days is None else p.recency_half_life_days
    strength: dict[tuple, float] = {}
    seen: dict = defaultdict(set)
    for u, i, b, ts in events.select("user_id", "item_id", "behavior", "ts").iter_rows():
        if b in ENGAGED:
            seen[u].add(i)
        if b not in p.behaviors or (p.window_days and ts < now - p.window_days * 86400):
            continue
        decay = 1.0 if math.isinf(half_life) else 0.5 ** ((now - ts) / 86400.0 / half_life)
        r = triggers.behavior_weights[b] * decay
        strength[(u, i)] = max(strength.get((u, i), r), r)
    items_of: dict = defaultdict(dict)
    for (u, i), r in strength.items():
        items_of[u][i] = r
    items_of = {u: its for u, its in items_of.items() if len(its) <= p.max_user_items}
    n_i = defaultdict(int)
    for its in items_of.values():
        for i in its:
            n_i[i] += 1

    neighbours = {}
    for u in sorted(items_of):
        row = []
        for v in sorted(items_of):
            common = sorted(set(items_of[u]) & set(items_of[v]))
            if u == v or not common or len(common) < p.min_common_items:
                continue
            overlap = 0.0
            for i in common:
                overlap += 1 / math.log1p(n_i[i]) if p.iif else 1.0
            row.append((v, overlap / math.sqrt(len(items_of[u]) * len(items_of[v]))))
        row.sort(key=lambda x: (-x[1], x[0]))
        if row:
            neighbours[u] = row[: p.top_k_users]

    candidates = {}
    for u, row in neighbours.items():
        score: dict = {}
        for v, sim in sorted(row):  # summed in neighbour order, as the sparse product does
            for i, r in sorted(items_of[v].items()):
                if r > 0:
                    score[i] = score.get(i, 0.0) + sim * r
        ranked = sorted(((i, s) for i, s in score.items() if i not in seen[u] and s > 0),
                        key=lambda x: (-x[1], x[0]))
        if ranked:
            candidates[u] = ranked[:n]
    return neighbours, candidates


def as_dict(frame: pl.DataFrame, key: str, other: str) -> dict:
    out = defaultdict(list)
    for a, b, s in frame.sort(key, S.RANK).select(key, other, S.SCORE).iter_rows():
        out[a].append((b, s))
    return dict(out)


def assert_same_table(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key, row in expected.items():
        assert [j for j, _ in got[key]] == [j for j, _ in row], key
        np.testing.assert_allclose([s for _, s in got[key]], [s for _, s in row], rtol=1e-9)


PARAM_CASES = [
    dict(),
    dict(iif=False),
    dict(top_k_users=3, min_common_items=2),
    dict(window_days=4, max_user_items=8, user_block=3),
    dict(max_block_pairs=1, top_k_users=2),
    dict(behaviors=["click", "buy"], recency_half_life_days=float("inf")),
    dict(behaviors=["impression", "click", "cart"], recency_half_life_days=0.5, min_common_items=2),
]
TRIGGERS = [TriggerConfig(), TriggerConfig(half_life_days=2.0,
                                           behavior_weights={"click": 1.0, "fav": 0.0, "buy": 5.0})]
LOGS = [dict(), dict(n_events=150, n_users=25, n_items=30)]


@pytest.mark.parametrize("overrides", PARAM_CASES)
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("shape", range(len(LOGS)))
def test_usercf_matches_brute_force(overrides, seed, shape):
    events = random_log(seed, **LOGS[shape])
    triggers = TRIGGERS[seed % 2]
    params = UserCFParams(**overrides)
    train = TrainData.build(Dataset(events), triggers=triggers)
    n = 4 if seed == 2 else 50
    channel = UserCF(params).fit(train)
    got_neighbours = as_dict(channel.similar_users(train), S.USER, S.NEIGHBOR)
    got_candidates = as_dict(channel.recommend(train, n), S.USER, S.ITEM)
    neighbours, candidates = brute_force_usercf(events, params, triggers, train.now, n)
    assert neighbours and candidates, "the case must exercise something"
    assert_same_table(got_neighbours, neighbours)
    assert_same_table(got_candidates, candidates)


def planted_log(seed: int = 0) -> pl.DataFrame:
    """Two groups of 30 users; group A clicks items 0..19, group B items 100..119."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(60):
        catalogue = np.arange(20) if u < 30 else np.arange(100, 120)
        for k, item in enumerate(rng.choice(catalogue, 6, replace=False)):
            rows.append((u, int(item), str(rng.choice(["click", "click", "cart", "buy"])),
                         1_700_000_000 + 3600 * k + u))
    return normalise_events(pl.DataFrame(rows, schema=["user_id", "item_id", "behavior", "ts"], orient="row"),
                            "<planted>")


def test_planted_groups_recommend_within_their_group():
    train = TrainData.build(Dataset(planted_log()))
    channel = UserCF(UserCFParams(top_k_users=10)).fit(train)
    recs = channel.recommend(train, 10)
    group = pl.col(S.USER) < 30
    assert recs[S.USER].n_unique() == 60  # everyone gets candidates...
    assert recs.filter(group)[S.ITEM].max() < 20  # ...from its own group's items only
    assert recs.filter(~group)[S.ITEM].min() >= 100
    neighbours = channel.similar_users(train)
    assert ((neighbours[S.USER] < 30) == (neighbours[S.NEIGHBOR] < 30)).all()


def test_blocks_respect_the_pair_budget(monkeypatch):
    """Every block handed to the top-K step holds at most max_block_pairs entries (or one user)."""
    import recall.channels.usercf as module

    seen_blocks = []
    original = module.top_k_per_row

    def recording(block, k):
        seen_blocks.append((block.shape[0], block.nnz))
        return original(block, k)

    monkeypatch.setattr(module, "top_k_per_row", recording)
    events = random_log(5, n_events=2000, n_users=200, n_items=80)
    train = TrainData.build(Dataset(events))
    budget = 300
    small = UserCF(UserCFParams(max_block_pairs=budget)).fit(train)
    assert len(seen_blocks) > 10
    assert all(nnz <= budget or rows == 1 for rows, nnz in seen_blocks)
    small_recs = small.recommend(train, 20)
    big = UserCF(UserCFParams()).fit(train)
    assert (small.similarity_ != big.similarity_).nnz == 0
    assert small_recs.equals(big.recommend(train, 20))


def test_cost_blocks_cover_every_row_within_bounds():
    costs = np.array([5, 1, 1, 50, 0, 0, 2, 3, 3, 1], dtype=np.float64)
    spans = list(cost_blocks(costs, max_rows=3, max_cost=6))
    assert spans[0][0] == 0 and spans[-1][1] == costs.size
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    for start, stop in spans:
        assert 1 <= stop - start <= 3
        assert costs[start:stop].sum() <= 6 or stop - start == 1
    assert list(cost_blocks(np.zeros(0), 3, 6)) == []


def test_crawlers_are_left_out():
    events = random_log(4, n_events=200, n_users=10, n_items=40)
    crawler = pl.DataFrame({"user_id": [999] * 40, "item_id": np.arange(40) * 10, "behavior": ["click"] * 40,
                            "ts": 1_700_000_000 + np.arange(40)})
    train = TrainData.build(Dataset(normalise_events(pl.concat([events, crawler], how="vertical_relaxed"),
                                                     "<crawler>")))
    channel = UserCF(UserCFParams(max_user_items=30)).fit(train)
    table = channel.similar_users(train)
    assert table.height > 0
    assert 999 not in table[S.USER].to_list() and 999 not in table[S.NEIGHBOR].to_list()
    assert 999 not in channel.recommend(train, 10)[S.USER].to_list()


def test_extra_tables_publish_the_neighbour_table():
    train = TrainData.build(Dataset(random_log(1)))
    channel = UserCF().fit(train)
    tables = channel.extra_tables(train)
    assert list(tables) == [NEIGHBORS_TABLE]
    assert tables[NEIGHBORS_TABLE].columns == [S.USER, S.NEIGHBOR, S.SCORE, S.RANK]
    assert UserCF(UserCFParams(publish_neighbors=False)).fit(train).extra_tables(train) == {}


def test_params_are_validated():
    with pytest.raises(ValueError, match="behaviors must be"):
        UserCFParams(behaviors=["like"])
    with pytest.raises(ValueError):
        UserCFParams(top_k_users=0)
    assert UserCFParams(window_days=float("inf")).window_days is None


def test_nothing_engaged_gives_an_empty_table():
    events = random_log(1, behaviors=("impression",))
    train = TrainData.build(Dataset(events))
    recs = UserCF().fit(train).recommend(train, 5)
    assert recs.height == 0 and recs.columns == [S.USER, S.ITEM, S.SCORE, S.RANK]


