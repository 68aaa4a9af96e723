"""The synthetic log: schema, determinism, the funnel, and the planted structure.

Each structural test compares the log against a baseline that lacks the
structure (shuffled labels, reversed order, random pairs), so it checks the
generator does what its docstring says rather than pinning exact numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recall import schema as S
from recall.io import load_dataset, normalise_events, write_dataset
from recall.synth import AGE_BANDS, planted_clusters, planted_pairs, synthesize

N_USERS, N_ITEMS, DAYS, SEED = 2000, 1000, 7, 0
START = 1_700_006_400


@pytest.fixture(scope="module")
def data():
    return synthesize(N_USERS, N_ITEMS, DAYS, SEED)


@pytest.fixture(scope="module")
def clicks(data):
    return (data.events.filter(pl.col(S.BEHAVIOR) == "click")
            .join(data.items.select(S.ITEM, S.CATEGORY), on=S.ITEM))


def _of(events: pl.DataFrame, behavior: str) -> pl.DataFrame:
    return events.filter(pl.col(S.BEHAVIOR) == behavior)


# --- determinism and schema -------------------------------------------------

def test_same_seed_same_frames_other_seed_differs():
    a, b = synthesize(300, 200, 3, 5), synthesize(300, 200, 3, 5)
    c = synthesize(300, 200, 3, 6)
    for name in ("events", "items", "users"):
        assert getattr(a, name).equals(getattr(b, name)), name
    assert not a.events.equals(c.events)
    assert not a.items.equals(c.items)
    assert planted_pairs(200, 5).equals(planted_pairs(200, 5))
    assert not planted_pairs(200, 5).equals(planted_pairs(200, 6))


def test_dtypes_match_the_loader(data, tmp_path):
    ev = data.events
    assert ev.columns == list(S.EVENT_COLUMNS)
    renormalised = normalise_events(ev.with_columns(pl.col(S.BEHAVIOR).cast(pl.String)), Path("x"))
    assert renormalised.schema == ev.schema
    assert renormalised.equals(ev)  # already normalised: no duplicates, nothing changes
    assert ev.schema[S.USER] == ev.schema[S.ITEM] == ev.schema[S.TS] == pl.Int64
    assert data.items.columns == [S.ITEM, S.CATEGORY, S.BRAND, "price_bucket"]
    assert all(dtype == pl.Int64 for dtype in data.items.schema.values())
    assert data.users.columns == [S.USER, "gender", "age_band", "city"]
    write_dataset(data, tmp_path)
    loaded = load_dataset(tmp_path)
    assert loaded.events.equals(ev)
    assert loaded.items.equals(data.items)
    assert loaded.users.equals(data.users)


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError):
        synthesize(0, 10, 1, 0)
    with pytest.raises(ValueError):
        synthesize(10, 10, 0, 0)


def test_tiny_sizes_work():
    tiny = synthesize(3, 5, 1, 0)
    assert tiny.items.height == 5 and tiny.users.height == 3 and tiny.events.height > 0


# --- tables, coverage, time window ------------------------------------------

def test_every_user_and_item_is_listed_and_cold_items_exist(data):
    ev = data.events
    assert sorted(data.users[S.USER].to_list()) == list(range(N_USERS))
    assert sorted(data.items[S.ITEM].to_list()) == list(range(N_ITEMS))
    event_items = set(ev[S.ITEM].unique().to_list())
    assert event_items <= set(data.items[S.ITEM].to_list())
    assert set(ev[S.USER].unique().to_list()) <= set(range(N_USERS))
    cold = N_ITEMS - len(event_items)
    assert 0.01 * N_ITEMS <= cold <= 0.05 * N_ITEMS


def test_timestamps_within_window_and_sorted(data):
    ts = data.events[S.TS]
    assert ts.min() >= START and ts.max() < START + DAYS * 86400
    assert ts.is_sorted()
    # Activity is spread over the window, not bunched at its start.
    day = ((ts - START) // 86400).value_counts()
    assert day.height == DAYS and day["count"].min() > 0.5 * day["count"].max()


def test_about_100_events_per_user(data):
    assert 70 <= data.events.height / N_USERS <= 130


def test_catalogue_and_user_attributes(data):
    items, users = data.items, data.users
    assert items[S.CATEGORY].n_unique() == max(5, N_ITEMS // 50)
    nested = items.group_by(S.BRAND).agg(pl.col(S.CATEGORY).n_unique())
    assert nested[S.CATEGORY].max() == 1  # every brand lives in one category
    assert items[S.BRAND].n_unique() > items[S.CATEGORY].n_unique()
    assert items["price_bucket"].min() >= 0 and items["price_bucket"].max() <= 9
    assert set(users["gender"].unique().to_list()) == {"F", "M"}
    assert set(users["age_band"].unique().to_list()) == set(AGE_BANDS)
    city = users["city"].value_counts().sort("count", descending=True)
    assert city.height == 10 and city["city"][0] == "c0"
    assert city["count"][0] > 3 * city["count"][-1]  # power-law sized cities


# --- sessions ---------------------------------------------------------------

def test_sessions_are_seconds_apart_inside_and_hours_apart_between(data):
    imp = _of(data.events, "impression").sort(S.USER, S.TS)
    gap = imp.select(pl.col(S.TS).diff().over(S.USER).alias("gap")).drop_nulls()["gap"]
    within = gap.filter(gap < 600)
    assert 1 <= within.median() <= 60
    # Between 10 minutes and an hour sit only companion follow-up impressions.
    assert ((gap >= 600) & (gap < 3600)).mean() < 0.02
    assert (gap >= 3600).sum() > N_USERS // 2  # many users come back in later sessions


# --- funnel -----------------------------------------------------------------

def test_funnel_counts_narrow(data):
    n = dict(data.events.group_by(S.BEHAVIOR).len().iter_rows())
    assert n["buy"] < n["cart"] + n["fav"] < n["click"] < n["impression"]
    assert 0.03 <= n["click"] / n["impression"] <= 0.10


def test_deeper_behaviours_follow_an_earlier_click(data):
    ev = data.events
    first_click = (_of(ev, "click").group_by(S.USER, S.ITEM).agg(pl.col(S.TS).min().alias("t_click")))
    first_imp = (_of(ev, "impression").group_by(S.USER, S.ITEM).agg(pl.col(S.TS).min().alias("t_imp")))
    for behavior in ("fav", "cart", "buy"):
        rows = _of(ev, behavior).join(first_click, on=[S.USER, S.ITEM], how="left")
        assert rows["t_click"].null_count() == 0, behavior
        assert (rows["t_click"] < rows[S.TS]).all(), behavior
    clicked = first_click.join(first_imp, on=[S.USER, S.ITEM], how="left")
    assert clicked["t_imp"].null_count() == 0
    assert (clicked["t_imp"] < clicked["t_click"]).all()


def test_click_through_rate_depends_on_the_item(data):
    ev = data.events
    imp = _of(ev, "impression").group_by(S.ITEM).len("n_imp")
    ctr = (imp.join(_of(ev, "click").group_by(S.ITEM).len("n_click"), on=S.ITEM, how="left")
           .fill_null(0).filter(pl.col("n_imp") >= 300)
           .with_columns(ctr=pl.col("n_click") / pl.col("n_imp")))
    assert ctr.height >= 50
    assert ctr["ctr"].quantile(0.9) > 2 * ctr["ctr"].quantile(0.1)


# --- popularity and activity --------------------------------------------------

def test_item_popularity_and_user_activity_are_heavy_tailed(data, clicks):
    per_item = clicks.group_by(S.ITEM).len()["len"].sort(descending=True).to_numpy()
    assert per_item[: N_ITEMS // 10].sum() > 0.4 * per_item.sum()
    per_user = data.events.group_by(S.USER).len()["len"].sort(descending=True).to_numpy()
    assert per_user[: N_USERS // 10].sum() > 0.35 * per_user.sum()
    assert per_user[0] > 20 * np.median(per_user)


# --- planted structure --------------------------------------------------------

def _top3_share(clicks: pl.DataFrame) -> float:
    per = clicks.group_by(S.USER, S.CATEGORY).len()
    agg = (per.group_by(S.USER)
           .agg(pl.col("len").sum().alias("total"), pl.col("len").top_k(3).sum().alias("top3"))
           .filter(pl.col("total") >= 10))
    return float((agg["top3"] / agg["total"]).mean())


def test_users_click_mostly_in_a_few_categories(clicks):
    rng = np.random.default_rng(1)
    shuffled = clicks.with_columns(
        pl.Series(S.CATEGORY, rng.permutation(clicks[S.CATEGORY].to_numpy())))
    observed, baseline = _top3_share(clicks), _top3_share(shuffled)
    assert observed > 0.75
    assert observed > baseline + 0.25


def test_anchor_then_companion_is_much_more_common_than_the_reverse(data):
    pairs = planted_pairs(N_ITEMS, SEED)
    assert N_ITEMS // 20 <= pairs.height <= 3 * (N_ITEMS // 20)
    assert not set(pairs["anchor_id"].to_list()) & set(pairs["companion_id"].to_list())
    first = _of(data.events, "click").group_by(S.USER, S.ITEM).agg(pl.col(S.TS).min())
    both = (pairs.join(first.rename({S.ITEM: "anchor_id", S.TS: "t_anchor"}), on="anchor_id")
            .join(first.rename({S.ITEM: "companion_id", S.TS: "t_comp"}),
                  on=["companion_id", S.USER]))
    forward = int((both["t_anchor"] < both["t_comp"]).sum())
    reverse = int((both["t_comp"] < both["t_anchor"]).sum())
    assert forward > 200
    assert forward > 5 * reverse
    # The same count over random item pairs of the same popularity: no direction.
    rng = np.random.default_rng(2)
    fake = pairs.with_columns(pl.Series("companion_id", rng.permutation(pairs["companion_id"].to_numpy())))
    fake = fake.join(pairs, on=["anchor_id", "companion_id"], how="anti")
    f = (fake.join(first.rename({S.ITEM: "anchor_id", S.TS: "t_anchor"}), on="anchor_id")
         .join(first.rename({S.ITEM: "companion_id", S.TS: "t_comp"}), on=["companion_id", S.USER]))
    assert forward > 5 * max(1, int((f["t_anchor"] < f["t_comp"]).sum()))


def test_consecutive_clicks_stay_in_category_and_similar_items(data, clicks):
    clusters = planted_clusters(N_ITEMS, SEED)
    c = (clicks.join(clusters.select(S.ITEM, "cluster_id"), on=S.ITEM).sort(S.USER, S.TS)
         .with_columns([pl.col(col).shift(1).over(S.USER).alias(f"prev_{col}")
                        for col in (S.TS, S.CATEGORY, "cluster_id", S.ITEM)])
         .filter((pl.col(S.TS) - pl.col(f"prev_{S.TS}")) < 1800)  # same session
         .filter(pl.col(S.ITEM) != pl.col(f"prev_{S.ITEM}")))
    same_cat = (c[S.CATEGORY] == c[f"prev_{S.CATEGORY}"]).mean()
    # Random pairs of clicks: the chance two clicks share a category.
    share = clicks[S.CATEGORY].value_counts()["count"].to_numpy() / clicks.height
    assert same_cat > 0.5 and same_cat > 3 * (share ** 2).sum()
    in_cat = c.filter(pl.col(S.CATEGORY) == pl.col(f"prev_{S.CATEGORY}"))
    same_cluster = (in_cat["cluster_id"] == in_cat["prev_cluster_id"]).mean()
    # Inside a category, two clicked items picked independently by popularity
    # share a cluster far less often than consecutive session clicks do.
    per_item = clicks.group_by(S.ITEM).len().join(clusters, on=S.ITEM)
    per_item = per_item.with_columns(p=pl.col("len") / pl.col("len").sum().over(S.CATEGORY))
    cluster_mass = per_item.group_by(S.CATEGORY, "cluster_id").agg(pl.col("p").sum())
    by_cat = cluster_mass.group_by(S.CATEGORY).agg((pl.col("p") ** 2).sum().alias("same"))
    weights = in_cat[S.CATEGORY].value_counts().join(by_cat, on=S.CATEGORY)
    baseline = float((weights["count"] * weights["same"]).sum() / weights["count"].sum())
    assert same_cluster > 2 * baseline


def test_demographic_groups_prefer_different_categories(clicks, data):
    def mean_distance(labelled: pl.DataFrame) -> float:
        dist = (labelled.group_by("group", S.CATEGORY).len()
                .with_columns(p=pl.col("len") / pl.col("len").sum().over("group"))
                .pivot(on="group", index=S.CATEGORY, values="p").fill_null(0)
                .drop(S.CATEGORY).to_numpy())
        g = dist.shape[1]
        return float(np.mean([0.5 * np.abs(dist[:, a] - dist[:, b]).sum()
                              for a in range(g) for b in range(a + 1, g)]))

    groups = data.users.select(S.USER, group=pl.col("gender") + pl.col("age_band"))
    observed = mean_distance(clicks.join(groups, on=S.USER))
    rng = np.random.default_rng(3)
    shuffled = groups.with_columns(pl.Series("group", rng.permutation(groups["group"].to_numpy())))
    baseline = mean_distance(clicks.join(shuffled, on=S.USER))
    assert observed > 2 * baseline
