"""Crowd hot lists against a brute-force Python oracle, plus fallback, cold users and errors."""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import polars as pl
import pytest

from recall import schema as S
from recall.channels.crowd import Crowd, CrowdParams, logged_out_list
from recall.context import ENGAGED, TrainData
from recall.ctr import fit_beta_prior
from recall.errors import RecallError
from recall.io import Dataset, normalise_events
from tests.conftest import random_log

N = 7


def random_users(seed: int, with_attributes=range(22), cold=(25, 26, 27)) -> pl.DataFrame:
    """Attributes for some event users (0..21) and for users with no events; a few nulls."""
    rng = np.random.default_rng(seed)
    ids = list(with_attributes) + list(cold)
    gender = rng.choice(["F", "M"], len(ids)).tolist()
    age = rng.choice(["18-24", "25-34", "35-44"], len(ids)).tolist()
    city = rng.choice(["c0", "c1"], len(ids)).tolist()
    age[3] = None  # this user's finest crowd is gender only
    gender[5] = None  # and this one's is global
    return pl.DataFrame({"user_id": ids, "gender": gender, "age_band": age, "city": city},
                        schema={"user_id": pl.Int64, "gender": pl.String, "age_band": pl.String,
                                "city": pl.String})


def brute_force_crowd(events: pl.DataFrame, users: pl.DataFrame | None, p: CrowdParams, now: int, n: int):
    """(lists, recs): {crowd: [(item, score)...]} and {user: [(item, score)...]} with plain loops."""
    attrs = [a for a in p.attributes if users is not None and a in users.columns]
    values = {} if users is None else {row[S.USER]: row for row in users.iter_rows(named=True)}
    known = set(events["user_id"].to_list()) | set(values)

    def key(u, level):
        if level == 0:
            return "global"
        row = values.get(u)
        if row is None or any(row[a] is None for a in attrs[:level]):
            return None
        return ",".join(f"{a}={row[a]}" for a in attrs[:level])

    rows = list(events.select("user_id", "item_id", "behavior", "ts").iter_rows())
    days = p.window_days
    engaged_ts = sorted(r[3] for r in rows if r[2] in ENGAGED)
    while days is not None and now - days * 86400 > engaged_ts[0] and \
            sum(t >= now - days * 86400 for t in engaged_ts) < p.min_support:
        days *= 2  # a window too thin for min_support is widened
    start = -np.inf if days is None else now - days * 86400
    in_window = [r for r in rows if r[3] >= start]
    ctr_mode = p.rank_by == "ctr" or (p.rank_by == "auto" and any(r[2] == "impression" for r in in_window))
    if ctr_mode:
        window = [(u, i, b, 0.0) for u, i, b, _ in in_window if b in ("impression", "click")]
    else:
        # One vote per engaged (user, item), decayed by the age of the latest engagement.
        latest = {}
        for u, i, b, t in in_window:
            if b in ENGAGED:
                latest[u, i] = max(latest.get((u, i), t), t)
        half = p.half_life_days
        window = [(u, i, "click", 1.0 if half is None else 0.5 ** ((now - t) / (86400.0 * half)))
                  for (u, i), t in sorted(latest.items())]
    levels = len(attrs)
    scores, support, clicked = {}, {}, defaultdict(set)
    for level in range(levels + 1):
        cells = defaultdict(lambda: [0, 0])
        parent_of = {}
        crowd_clicks, crowd_users = defaultdict(int), defaultdict(set)
        votes = defaultdict(float)
        for u, i, b, vote in window:
            g = key(u, level)
            if g is None:
                continue
            parent_of[g] = key(u, level - 1) if level else None
            cells[g, i][0] += b == "click"
            cells[g, i][1] += b == "impression"
            votes[g, i] += vote
            if b == "click":
                crowd_clicks[g] += 1
                crowd_users[g].add(u)
                clicked[g].add(i)
        for g in crowd_clicks:
            support[g] = (level == 0 or (crowd_clicks[g] >= p.min_support
                                         and len(crowd_users[g]) >= p.min_users), level)
        if not ctr_mode:
            totals = defaultdict(float)
            for (g, i), vote in votes.items():
                totals[g] += vote
            for (g, i), (c, _) in cells.items():
                if c:
                    scores[g, i] = votes[g, i] / totals[g]
        elif level == 0:
            items = sorted(i for _, i in cells)
            c = [min(*cells["global", i]) for i in items]
            shown = [cells["global", i][1] for i in items]
            prior = fit_beta_prior(c, shown, method=p.prior_method, min_items=p.min_prior_items)
            for i, ci, ni in zip(items, c, shown):
                scores["global", i] = (ci + prior.a) / (ni + prior.a + prior.b)
        else:
            k = p.prior_strength
            for (g, i), (c, shown) in cells.items():
                scores[g, i] = (min(c, shown) + k * scores[parent_of[g], i]) / (shown + k)
    lists = {}
    for g, (ok, _) in support.items():
        if ok:
            ranked = sorted(((i, scores[g, i]) for i in clicked[g]), key=lambda x: (-x[1], x[0]))
            lists[g] = ranked[: p.top_k]
    engaged = defaultdict(set)
    for u, i, b, _ in rows:
        if b in ENGAGED:
            engaged[u].add(i)
    recs = {}
    for u in known:
        chain = [key(u, level) for level in range(levels, -1, -1)]
        chain = [g for g in chain if g in lists]
        out, taken = [], set()
        for g in chain:
            for i, s in lists[g]:
                if i in taken or i in engaged[u] or len(out) == n:
                    continue
                taken.add(i)
                out.append((i, min(s, out[-1][1]) if out else s))
        if out:
            recs[u] = out
    return lists, recs


def frame_lists(frame: pl.DataFrame, group: str) -> dict:
    out = defaultdict(list)
    for g, i, s, _ in frame.sort(group, "rank").select(group, "item_id", "score", "rank").iter_rows():
        out[g].append((i, s))
    return dict(out)


def assert_lists_equal(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for g, row in expected.items():
        assert [i for i, _ in got[g]] == [i for i, _ in row], g
        np.testing.assert_allclose([s for _, s in got[g]], [s for _, s in row], rtol=1e-12)


PARAM_CASES = [
    dict(min_support=8, min_users=3),
    dict(window_days=None, min_support=15, min_users=4, top_k=5, prior_strength=5.0),
    dict(window_days=4, min_support=3, min_users=2, top_k=10, prior_method="ml", user_block=7),
    dict(attributes=["gender", "city", "shoe_size"], min_support=5, min_users=2),
    dict(attributes=[], top_k=6),
    dict(rank_by="volume", min_support=8, min_users=3),
    dict(rank_by="volume", half_life_days=None, window_days=3, min_support=5, min_users=2),
    dict(rank_by="volume", half_life_days=0.5, window_days=0.25, min_support=60, min_users=2),  # widened
]


def test_a_thin_window_is_widened_until_it_holds_min_support():
    events = random_log(2, n_events=300, n_users=20, n_items=12, days=10)
    train = TrainData.build(Dataset(events))
    model = Crowd(CrowdParams(window_days=0.25, min_support=60, rank_by="volume")).fit(train)
    ts = train.engaged()["ts"]
    assert model.window_days_ is None or (ts >= train.now - model.window_days_ * 86400).sum() >= 60
    assert (ts >= train.now - model.window_days_ / 2 * 86400).sum() < 60 if model.window_days_ else True


@pytest.mark.parametrize("overrides", PARAM_CASES)
@pytest.mark.parametrize("impressions", [True, False], ids=["ctr", "volume"])
@pytest.mark.parametrize("seed", [1, 2])
def test_crowd_matches_brute_force(overrides, impressions, seed):
    behaviors = ("click", "fav", "cart", "buy", "impression") if impressions else ("click", "fav", "buy")
    events = random_log(seed, n_events=500, n_users=25, behaviors=behaviors)
    users = random_users(seed)
    p = CrowdParams(**overrides)
    train = TrainData.build(Dataset(events=events, users=users))
    model = Crowd(p).fit(train)
    assert model.mode_ == ("ctr" if impressions and p.rank_by != "volume" else "volume")
    lists, recs = brute_force_crowd(events, users, p, train.now, N)
    tables = model.extra_tables(train)
    assert_lists_equal(frame_lists(tables["hot/crowds.parquet"], "crowd"), lists)
    assert_lists_equal(frame_lists(model.recommend(train, N), "user_id"), recs)


def test_fallback_to_the_coarser_crowd_when_support_is_too_small():
    """City c1 has one user: too few for a list, so that user gets gender x age's list."""
    t0 = 1_700_000_000
    rows = []
    for u in range(6):
        for item in range(10):
            rows.append((u, item, "impression", t0 + 10 * item + u))
            if (u + item) % 3 == 0:
                rows.append((u, item, "click", t0 + 10 * item + u + 1))
    events = normalise_events(pl.DataFrame(rows, schema=["user_id", "item_id", "behavior", "ts"],
                                           orient="row"), "<fallback>")
    users = pl.DataFrame({"user_id": range(6), "gender": ["F"] * 6, "age_band": ["25-34"] * 6,
                          "city": ["c0"] * 5 + ["c1"]})
    train = TrainData.build(Dataset(events=events, users=users))
    model = Crowd(CrowdParams(min_support=5, min_users=2)).fit(train)
    supported = dict(model.crowds_.select("crowd", "supported").iter_rows())
    assert supported["gender=F,age_band=25-34,city=c0"]
    assert not supported["gender=F,age_band=25-34,city=c1"]
    assert "gender=F,age_band=25-34,city=c1" not in model.lists_["crowd"].to_list()
    recs = model.recommend(train, N).filter(pl.col("user_id") == 5)
    engaged = set(train.engaged().filter(pl.col("user_id") == 5)["item_id"].to_list())
    parent = [i for i in model.crowd_list("gender=F,age_band=25-34")["item_id"].to_list() if i not in engaged]
    assert recs.sort("rank")["item_id"].to_list() == parent[:N]
    # Serving by attributes walks the same hierarchy.
    by_attributes = model.list_for({"gender": "F", "age_band": "25-34", "city": "c1"})
    assert by_attributes.equals(model.crowd_list("gender=F,age_band=25-34"))
    assert model.list_for({"gender": "F", "age_band": "25-34", "city": "c0"}).equals(
        model.crowd_list("gender=F,age_band=25-34,city=c0"))


def test_backfill_from_the_coarser_list_keeps_n_per_user():
    """A user who engaged with most of their crowd's list is topped up from the parent's."""
    events = random_log(3, n_events=600, n_users=25)
    users = random_users(3)
    train = TrainData.build(Dataset(events=events, users=users))
    model = Crowd(CrowdParams(min_support=5, min_users=2, top_k=4)).fit(train)
    recs = model.recommend(train, N)
    counts = recs.group_by("user_id").len()
    # Crowd lists hold 4 items, so reaching 7 needs the coarser lists.
    assert counts["len"].max() == N
    assert (recs["rank"] > 4).any()


def test_cold_user_with_attributes_gets_their_crowd_list():
    events = random_log(1, n_events=500, n_users=25)
    users = random_users(1)
    train = TrainData.build(Dataset(events=events, users=users))
    model = Crowd(CrowdParams(min_support=8, min_users=3)).fit(train)
    for cold in (25, 26, 27):
        row = users.filter(pl.col("user_id") == cold).row(0, named=True)
        expected = model.list_for(row, N)
        recs = model.recommend(train, N).filter(pl.col("user_id") == cold).sort("rank")
        assert recs.height > 0
        assert recs["item_id"].to_list() == expected["item_id"].to_list()
        np.testing.assert_allclose(recs["score"].to_numpy(), expected["score"].to_numpy())
    # The user with no gender (user 5) and users without a row (22..24) get the global list.
    crowds = dict(model.user_crowds(train).iter_rows())
    assert crowds[5] == crowds[23] == "global"
    assert crowds[3].startswith("gender=") and "age_band" not in crowds[3]  # no age band: gender only
    assert set(crowds) == set(train.user_ids.to_list())


def test_missing_users_table_serves_the_global_list_with_a_warning(caplog):
    train = TrainData.build(Dataset(events=random_log(1)))
    with caplog.at_level("WARNING", logger="recall"):
        model = Crowd().fit(train)
    assert "no users table" in caplog.text and "attributes = []" in caplog.text
    assert set(model.user_crowds(train)["crowd"].to_list()) == {"global"}
    # The same as asking for the global list alone, which needs no users table.
    explicit = Crowd(CrowdParams(attributes=[])).fit(train)
    assert model.recommend(train, N).equals(explicit.recommend(train, N))
    assert explicit.recommend(train, N).height > 0
    assert logged_out_list(explicit, 3).equals(explicit.global_list(3))


def test_ranking_by_ctr_needs_impressions():
    events = random_log(1, behaviors=("click", "buy"))
    train = TrainData.build(Dataset(events=events, users=random_users(1)))
    with pytest.raises(RecallError, match="rank_by"):
        Crowd(CrowdParams(rank_by="ctr")).fit(train)


def test_users_table_without_any_listed_attribute_is_an_error():
    users = pl.DataFrame({"user_id": range(25), "shoe_size": [40] * 25})
    train = TrainData.build(Dataset(events=random_log(1), users=users))
    with pytest.raises(RecallError, match="shoe_size"):
        Crowd().fit(train)


def test_missing_attributes_are_skipped_with_a_note(caplog):
    users = random_users(1).drop("city")
    train = TrainData.build(Dataset(events=random_log(1), users=users))
    with caplog.at_level(logging.INFO, logger="recall"):
        model = Crowd(CrowdParams(min_support=1, min_users=1)).fit(train)
    assert model.attributes_ == ["gender", "age_band"]
    assert any("city" in r.getMessage() for r in caplog.records)


def test_extra_tables_per_crowd_or_only_combined():
    events = random_log(2, n_events=500, n_users=25)
    train = TrainData.build(Dataset(events=events, users=random_users(2)))
    model = Crowd(CrowdParams(min_support=3, min_users=2)).fit(train)
    tables = model.extra_tables(train)
    crowds = model.lists_["crowd"].unique().to_list()
    assert set(tables) == {f"hot/{c}.parquet" for c in crowds} | {"hot/crowds.parquet"}
    assert tables["hot/global.parquet"].columns == ["item_id", "score", "rank"]
    assert tables["hot/crowds.parquet"].columns == ["crowd", "item_id", "score", "rank"]
    assert tables["hot/global.parquet"].equals(model.global_list())
    few = Crowd(CrowdParams(min_support=3, min_users=2, max_crowd_files=2)).fit(train).extra_tables(train)
    assert set(few) == {"hot/global.parquet", "hot/crowds.parquet"}
    assert few["hot/crowds.parquet"].equals(tables["hot/crowds.parquet"])


def test_planted_hot_item_tops_its_crowd_only():
    """Women click item 1 on every impression, men never: item 1 heads the women's list."""
    t0 = 1_700_000_000
    rows = []
    for u in range(20):
        for item in range(8):
            rows.append((u, item, "impression", t0 + 100 * u + item))
            woman = u < 10
            if (item == 1 and woman) or (item != 1 and (u + item) % 4 == 0):
                rows.append((u, item, "click", t0 + 100 * u + item))
    events = normalise_events(pl.DataFrame(rows, schema=["user_id", "item_id", "behavior", "ts"],
                                           orient="row"), "<planted>")
    users = pl.DataFrame({"user_id": range(20), "gender": ["F"] * 10 + ["M"] * 10})
    train = TrainData.build(Dataset(events=events, users=users))
    model = Crowd(CrowdParams(min_support=5, min_users=3, prior_strength=2.0)).fit(train)
    assert model.crowd_list("gender=F")["item_id"][0] == 1
    assert 1 not in model.crowd_list("gender=M")["item_id"].to_list()


# --- beyond the registry contract (tests/test_contract.py) ---------------------------------

def test_every_known_user_gets_a_list(tiny_dataset):
    dataset = Dataset(events=random_log(0, n_events=400, n_users=25, n_items=15), items=tiny_dataset.items,
                      users=random_users(0))
    train = TrainData.build(dataset, seed=3)
    recs = Crowd(CrowdParams(min_support=5, min_users=2)).fit(train).recommend(train, N)
    assert recs[S.USER].n_unique() == train.n_users  # cold users included
