"""RankI2I against a brute-force Python oracle of the documented formula, plus planted structure."""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import polars as pl
import pytest

from recall.channels.itemcf import ItemCF, ItemCFParams
from recall.channels.ranki2i import RankI2I, RankI2IParams
from recall.context import TrainData
from recall.ctr import fit_beta_prior
from recall.errors import RecallError
from recall.io import Dataset, normalise_events
from tests.conftest import random_log
from tests.test_itemcf import brute_force_itemcf

N = 7


def itemcf_part(p: RankI2IParams) -> ItemCFParams:
    """The itemCF parameters of a RankI2I model, untruncated and unnormalised."""
    fields = {k: v for k, v in p.model_dump().items() if k in ItemCFParams.model_fields}
    return ItemCFParams(**{**fields, "top_k": 10**6, "normalize": False})


def brute_force_ctr(events: pl.DataFrame, p: RankI2IParams, now: int):
    """(item_ctr, pair_ctr, pair_counts, source) with plain loops over events."""
    rows = list(events.select("user_id", "item_id", "behavior", "ts").iter_rows())
    items = sorted({i for _, i, _, _ in rows})
    start = -np.inf if p.ctr_window_days is None else now - p.ctr_window_days * 86400
    window = [r for r in rows if r[3] >= start]
    if any(b == "impression" for _, _, b, _ in window):
        source = "pair" if p.pair_ctr else "item"
        clicks, shown = defaultdict(int), defaultdict(int)
        for _, i, b, _ in window:
            clicks[i] += b == "click"
            shown[i] += b == "impression"
        clicks = {i: min(clicks[i], shown[i]) for i in items}
    else:
        source = "proxy"
        deep, engaged = defaultdict(set), defaultdict(set)
        for u, i, b, _ in window:
            if b in p.proxy_behaviors:
                deep[i].add(u)
            if b in p.proxy_behaviors or b == "click":
                engaged[i].add(u)
        clicks = {i: len(deep[i]) for i in items}
        shown = {i: len(engaged[i]) for i in items}
        if sum(clicks.values()) == 0:
            return {i: 1.0 for i in items}, {}, {}, "none"
    prior = fit_beta_prior([clicks[i] for i in items], [shown[i] for i in items],
                           method=p.prior_method, min_items=p.min_prior_items)
    item_ctr = {i: (clicks[i] + prior.a) / (shown[i] + prior.a + prior.b) for i in items}
    if source != "pair":
        return item_ctr, {}, {}, source

    horizon = p.attribution_hours * 3600
    engagements = [(u, i, t) for u, i, b, t in rows if b in p.behaviors]
    pair_clicks, pair_shown = defaultdict(int), defaultdict(int)
    for u, j, b, t in window:
        if b not in ("impression", "click"):
            continue
        credited = {}  # trigger -> latest engagement time
        for v, i, te in engagements:
            if v == u and i != j and t - horizon <= te < t:
                credited[i] = max(credited.get(i, te), te)
        if p.attribution == "last" and credited:
            latest = max(credited.values())
            credited = {min(i for i, te in credited.items() if te == latest): latest}
        for i in credited:
            pair_clicks[i, j] += b == "click"
            pair_shown[i, j] += b == "impression"
    k = p.pair_prior_strength
    counts = {key: (min(pair_clicks[key], pair_shown[key]), pair_shown[key])
              for key in set(pair_clicks) | set(pair_shown)}
    pair_ctr = {(i, j): (c + k * item_ctr[j]) / (n + k) for (i, j), (c, n) in counts.items()}
    return item_ctr, pair_ctr, counts, source


def brute_force_ranki2i(events: pl.DataFrame, p: RankI2IParams, now: int) -> dict:
    """sim(i, j) * ctr(i, j), then top_k and the row maximum: {item: [(neighbor, score), ...]}."""
    sims = brute_force_itemcf(events, itemcf_part(p), now)
    item_ctr, pair_ctr, _, _ = brute_force_ctr(events, p, now)
    out = {}
    for i, row in sims.items():
        scored = [(j, s * pair_ctr.get((i, j), item_ctr[j]) ** p.ctr_power) for j, s in row]
        scored.sort(key=lambda x: (-x[1], x[0]))
        scored = scored[: p.top_k]
        if p.normalize:
            scored = [(j, s / scored[0][1]) for j, s in scored]
        out[i] = scored
    return out


def as_dict(frame: pl.DataFrame) -> dict:
    out = defaultdict(list)
    for i, j, s, _ in frame.sort("item_id", "rank").iter_rows():
        out[i].append((j, s))
    return dict(out)


def assert_tables_equal(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for item, row in expected.items():
        assert [j for j, _ in got[item]] == [j for j, _ in row], item
        np.testing.assert_allclose([s for _, s in got[item]], [s for _, s in row], rtol=1e-9)


PARAM_CASES = [
    dict(),
    dict(attribution="last", attribution_hours=48, pair_prior_strength=3.0, ctr_power=0.5),
    dict(attribution_hours=6, ctr_window_days=4, top_k=4, attribution_block=7),
    dict(pair_ctr=False, prior_method="ml", alpha=0.5, normalize=False),
    dict(attribution_hours=72, min_prior_items=100, iuf=False, pair_window_hours=None,
         decay_half_life_hours=None, top_k=3),
]


@pytest.mark.parametrize("overrides", PARAM_CASES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ranki2i_matches_brute_force(overrides, seed):
    events = random_log(seed)
    p = RankI2IParams(**overrides)
    train = TrainData.build(Dataset(events=events))
    model = RankI2I(p).fit(train)
    item_ctr, _, counts, source = brute_force_ctr(events, p, train.now)
    assert model.ctr_source_ == source
    # The item CTRs and the attributed pair table.
    got_item = dict(zip(train.item_ids.to_list(), model.item_ctr_.tolist()))
    np.testing.assert_allclose([got_item[i] for i in item_ctr], list(item_ctr.values()), rtol=1e-12)
    pairs = model.ctr_table(train)
    got_counts = {(i, j): (c, n) for i, j, c, n, _ in pairs.iter_rows()}
    assert got_counts == counts
    # The final table.
    assert_tables_equal(as_dict(model.similar_items(train)), brute_force_ranki2i(events, p, train.now))


@pytest.mark.parametrize("attribution", ["all", "last"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ranki2i_matches_brute_force_on_hourly_timestamps(attribution, seed):
    """Whole-hour timestamps: ties at the window edges and between triggers are common."""
    events = random_log(seed, n_events=400, days=4).with_columns(pl.col("ts") // 3600 * 3600)
    p = RankI2IParams(attribution=attribution, attribution_hours=3)
    train = TrainData.build(Dataset(events=events))
    model = RankI2I(p).fit(train)
    _, _, counts, _ = brute_force_ctr(events, p, train.now)
    assert {(i, j): (c, n) for i, j, c, n, _ in model.ctr_table(train).iter_rows()} == counts
    assert_tables_equal(as_dict(model.similar_items(train)), brute_force_ranki2i(events, p, train.now))


def test_attribution_on_a_hand_made_log():
    """u clicks A, then sees B twice (clicking once) within the window, and C after it closed."""
    t0 = 1_700_000_000
    rows = [(1, 10, "click", t0), (1, 20, "impression", t0 + 60), (1, 20, "click", t0 + 70),
            (1, 20, "impression", t0 + 3600), (1, 30, "impression", t0 + 3 * 3600),
            (2, 20, "impression", t0)]  # user 2 never engaged with A: B's impression is not A's
    events = normalise_events(pl.DataFrame(rows, schema=["user_id", "item_id", "behavior", "ts"],
                                           orient="row"), "<hand>")
    train = TrainData.build(Dataset(events=events))
    model = RankI2I(RankI2IParams(attribution_hours=2)).fit(train)
    table = model.ctr_table(train).sort("item_id", "neighbor_id")
    # A's click credits B's two impressions and its click; B's own click credits nothing
    # (the later impression of B is B itself, C's impression is 3 h after every engagement).
    assert table.select("item_id", "neighbor_id", "clicks", "impressions").rows() == [(10, 20, 1.0, 2.0)]
    item_ctr = dict(zip(train.item_ids.to_list(), model.item_ctr_.tolist()))
    k = model.params.pair_prior_strength
    assert table["ctr"].item() == pytest.approx((1 + k * item_ctr[20]) / (2 + k))


def test_proxy_path_without_impressions_warns_and_works(caplog):
    events = random_log(4, behaviors=("click", "fav", "cart", "buy"))
    train = TrainData.build(Dataset(events=events))
    p = RankI2IParams()
    with caplog.at_level(logging.WARNING, logger="recall"):
        model = RankI2I(p).fit(train)
    assert model.ctr_source_ == "proxy"
    assert any("deep-action rate" in r.getMessage() for r in caplog.records)
    assert_tables_equal(as_dict(model.similar_items(train)), brute_force_ranki2i(events, p, train.now))
    recs = model.recommend(train, N)
    assert recs.height > 0


def test_click_only_log_falls_back_to_plain_itemcf(caplog):
    events = random_log(5, behaviors=("click",))
    train = TrainData.build(Dataset(events=events))
    with caplog.at_level(logging.WARNING, logger="recall"):
        model = RankI2I().fit(train)
    assert model.ctr_source_ == "none"
    assert any("plain itemCF" in r.getMessage() for r in caplog.records)
    assert model.similar_items(train).equals(ItemCF().fit(train).similar_items(train))


def planted_log(n_users: int = 30) -> pl.DataFrame:
    """Users click A, then B and C with identical timing (equal co-occurrence).

    Each click on C follows one impression, each click on B follows five: C's CTR is higher.
    Noise items give the prior something to fit.
    """
    t0 = 1_700_000_000
    rows = []
    for u in range(n_users):
        t = t0 + u * 600
        rows += [(u, 1, "impression", t - 10), (u, 1, "click", t)]
        rows += [(u, 2, "impression", t + 10 + s) for s in range(5)] + [(u, 2, "click", t + 100)]
        rows += [(u, 3, "impression", t + 90), (u, 3, "click", t + 100)]
        for noise in range(4, 16):
            rows.append((u, noise, "impression", t + 200 + noise))
            if (u + noise) % 3 == 0:
                rows.append((u, noise, "click", t + 201 + noise))
    return normalise_events(pl.DataFrame(rows, schema=["user_id", "item_id", "behavior", "ts"],
                                         orient="row"), "<planted>")


@pytest.mark.parametrize("pair_ctr", [True, False])
def test_higher_ctr_neighbour_ranks_first_at_equal_cooccurrence(pair_ctr):
    train = TrainData.build(Dataset(events=planted_log()))
    plain = ItemCF().fit(train).similar_items(train).filter(pl.col("item_id") == 1)
    scores = dict(zip(plain["neighbor_id"], plain["score"]))
    assert scores[2] == pytest.approx(scores[3])  # a tie in itemCF: B (smaller id) ranks first there
    assert plain.filter(pl.col("rank") == 1)["neighbor_id"].item() == 2
    table = RankI2I(RankI2IParams(pair_ctr=pair_ctr)).fit(train).similar_items(train)
    assert table.filter(pl.col("item_id") == 1, pl.col("rank") == 1)["neighbor_id"].item() == 3


def test_same_category_needs_an_items_table():
    train = TrainData.build(Dataset(events=random_log(1)))
    with pytest.raises(RecallError, match="category_id"):
        RankI2I(RankI2IParams(same_category=True)).fit(train)


def test_params_validate():
    assert RankI2IParams(ctr_window_days=float("inf")).ctr_window_days is None
    with pytest.raises(ValueError):
        RankI2IParams(proxy_behaviors=["impression"])
    with pytest.raises(ValueError):
        RankI2IParams(attribution="first")


