"""Mechanism filters against brute-force Python oracles, planted logs and Hypothesis properties."""

from __future__ import annotations

import logging
import statistics
import tomllib
from collections import defaultdict

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from recall.context import TrainData
from recall.errors import RecallError
from recall.config import BlacklistConfig, DiversityConfig, FiltersConfig, PurchaseFilterConfig
from recall.filters import apply_filters, estimated_periods
from recall.io import Dataset, normalise_events

DAY = 86400
T0 = 1_700_000_000
BEHAVIORS = ("impression", "click", "fav", "cart", "buy")


# --------------------------------------------------------------------------- builders

def events_frame(rows) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema={"user_id": pl.Int64, "item_id": pl.Int64, "behavior": pl.String,
                                       "ts": pl.Int64}, orient="row")
    return normalise_events(frame, "<test>")


def items_frame(categories: list, brands: list | None = None) -> pl.DataFrame:
    columns = {"item_id": pl.Series(range(len(categories)), dtype=pl.Int64),
               "category_id": pl.Series(categories, dtype=pl.Int64)}
    if brands is not None:
        columns["brand_id"] = pl.Series(brands, dtype=pl.String)
    return pl.DataFrame(columns)


def candidates_frame(lists: dict[int, list[int]]) -> pl.DataFrame:
    """Merge-shaped candidates: user -> item ids best first."""
    rows = [(u, i, 1.0 / r, r, "itemcf", ["itemcf"]) for u, items in lists.items()
            for r, i in enumerate(items, start=1)]
    return pl.DataFrame(rows, schema={"user_id": pl.Int64, "item_id": pl.Int64, "score": pl.Float64,
                                      "rank": pl.Int32, "source": pl.String, "channels": pl.List(pl.String)},
                        orient="row")


def random_case(seed: int, n_users: int = 6, n_items: int = 24, n_events: int = 250, with_nulls: bool = True):
    """Events over 60 days, items with categories (some unknown) and brands, candidates with a reserve."""
    rng = np.random.default_rng(seed)
    behaviors = rng.choice(["click", "click", "buy", "buy", "fav", "impression"], n_events)
    rows = [(int(u), int(i), str(b), int(T0 + t)) for u, i, b, t in
            zip(rng.integers(0, n_users, n_events), rng.integers(0, n_items, n_events), behaviors,
                rng.integers(0, 60 * DAY, n_events))]
    categories = [int(c) for c in rng.integers(0, 4, n_items)]
    if with_nulls:
        categories = [None if rng.random() < 0.15 else c for c in categories]
    brands = [None if rng.random() < 0.1 else f"b{int(b)}" for b in rng.integers(0, 5, n_items)]
    lists = {u: [int(i) for i in rng.permutation(n_items)[: rng.integers(0, n_items)]] for u in range(n_users + 1)}
    return events_frame(rows), items_frame(categories, brands), candidates_frame(lists)


def train_data(events, items, now=None) -> TrainData:
    return TrainData.build(Dataset(events=events, items=items), now=now)


# --------------------------------------------------------------------------- oracles

def oracle_periods(events: pl.DataFrame, categories: dict, cfg: PurchaseFilterConfig, now: int) -> dict:
    """{category (text): period days} from the documented estimate, with explicit overrides."""
    buys = defaultdict(list)
    for u, i, b, ts in events.select("user_id", "item_id", "behavior", "ts").iter_rows():
        if b == "buy" and ts <= now and categories.get(i) is not None:
            buys[u, str(categories[i])].append(ts)
    gaps = defaultdict(list)
    bought = set()
    for (u, c), times in buys.items():
        bought.add(c)
        times.sort()
        gaps[c] += [b - a for a, b in zip(times, times[1:]) if b - a >= cfg.same_occasion_hours * 3600]
    periods = {}
    if cfg.estimate:
        for c in bought:
            if len(gaps[c]) >= cfg.min_intervals:
                periods[c] = min(max(statistics.median(gaps[c]) / DAY, cfg.min_period_days), cfg.max_period_days)
            else:
                periods[c] = cfg.default_period_days
    periods.update(cfg.periods_days)
    return periods


def oracle_blocked(events: pl.DataFrame, categories: dict | None, cfg: PurchaseFilterConfig, now: int):
    """A predicate blocked(user, item) following the module docstring with plain loops."""
    periods = oracle_periods(events, categories or {}, cfg, now)

    def key(item):
        if categories is not None and categories.get(item) is not None:
            return ("c", str(categories[item]))
        return ("i", item)

    rows = [r for r in events.select("user_id", "item_id", "behavior", "ts").iter_rows() if r[3] <= now]

    def blocked(user, item):
        k = key(item)
        buys = [ts for u, i, b, ts in rows if u == user and b == "buy" and key(i) == k]
        if not buys:
            return False
        last = max(buys)
        period = periods.get(k[1], cfg.default_period_days) if k[0] == "c" else cfg.default_period_days
        if now >= last + period * DAY:
            return False
        clicks = sum(1 for u, i, b, ts in rows
                     if u == user and b in cfg.unblock_behaviors and key(i) == k and ts > last)
        return cfg.unblock_clicks == 0 or clicks < cfg.unblock_clicks

    return blocked


def oracle_diversity(lists: dict, categories: dict, brands: dict, cfg: DiversityConfig) -> dict:
    """The greedy walk: the candidates whose category and brand are still under their caps."""
    out = {}
    for user, items in lists.items():
        per_cat, per_brand, kept = defaultdict(int), defaultdict(int), []
        for i in items:
            c, b = categories.get(i), brands.get(i)
            if cfg.max_per_category and c is not None and per_cat[c] >= cfg.max_per_category:
                continue
            if cfg.max_per_brand and b is not None and per_brand[b] >= cfg.max_per_brand:
                continue
            per_cat[c] += 1
            per_brand[b] += 1
            kept.append(i)
        out[user] = kept
    return out


def as_lists(frame: pl.DataFrame) -> dict:
    out = defaultdict(list)
    for u, i in frame.sort("user_id", "rank").select("user_id", "item_id").iter_rows():
        out[u].append(i)
    return dict(out)


def oracle_apply(candidates, events, items, cfg: FiltersConfig, budget: int, now: int, blacklist=None):
    """All filters in order with plain loops: ({user: items}, removed counts)."""
    categories = dict(items.select("item_id", "category_id").iter_rows()) if "category_id" in items.columns else None
    brands = dict(items.select("item_id", "brand_id").iter_rows()) if "brand_id" in items.columns else {}
    lists = as_lists(candidates)
    removed = {"purchase": 0, "blacklist": 0, "diversity": 0, "budget": 0}
    if cfg.purchase.enabled:
        blocked = oracle_blocked(events, categories, cfg.purchase, now)
        new = {u: [i for i in its if not blocked(u, i)] for u, its in lists.items()}
        removed["purchase"] = sum(map(len, lists.values())) - sum(map(len, new.values()))
        lists = new
    if cfg.blacklist.enabled:
        bad_items, bad_cats = blacklist
        new = {u: [i for i in its if i not in bad_items and (categories or {}).get(i) not in bad_cats]
               for u, its in lists.items()}
        removed["blacklist"] = sum(map(len, lists.values())) - sum(map(len, new.values()))
        lists = new
    if cfg.diversity.enabled:
        within = oracle_diversity(lists, categories or {}, brands, cfg.diversity)
        # Over-cap candidates follow every candidate within the caps, in their own order.
        over = {u: [i for i in its if i not in set(within[u])] for u, its in lists.items()}
        removed["diversity"] = sum(len(over[u][max(0, budget - len(within[u])):]) for u in lists)
        lists = {u: within[u] + over[u] for u in lists}
    removed["budget"] = sum(max(0, len(its) - budget) for its in lists.values()) - removed["diversity"]
    return {u: its[:budget] for u, its in lists.items() if its}, removed


# --------------------------------------------------------------------------- oracle tests

PURCHASE_CASES = [
    dict(),
    dict(unblock_clicks=1, default_period_days=10.0),
    dict(unblock_clicks=0, default_period_days=45.0),
    dict(periods_days={"0": 5.0, "2": 50.0}, unblock_behaviors=["click", "fav"]),
    dict(estimate=True, min_intervals=2, same_occasion_hours=48.0, min_period_days=3.0, max_period_days=20.0),
    dict(estimate=True, min_intervals=1, periods_days={"1": 0.0}, unblock_clicks=2),
]


@pytest.mark.parametrize("overrides", PURCHASE_CASES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_purchase_filter_matches_brute_force(overrides, seed):
    events, items, candidates = random_case(seed)
    cfg = FiltersConfig(purchase=PurchaseFilterConfig(**overrides), diversity=DiversityConfig(enabled=False))
    data = train_data(events, items, now=T0 + 50 * DAY)  # later events exist and must be ignored
    got, removed = apply_filters(candidates, data, cfg, budget=1000)
    expected, expected_removed = oracle_apply(candidates, events, items, cfg, 1000, data.now)
    assert as_lists(got) == expected
    assert removed == expected_removed
    assert removed["purchase"] > 0 or overrides.get("default_period_days") == 10.0


@pytest.mark.parametrize("seed", [1, 2])
def test_purchase_filter_without_categories_blocks_the_item_only(seed, caplog):
    events, items, candidates = random_case(seed)
    items = items.drop("category_id")
    cfg = FiltersConfig(diversity=DiversityConfig(enabled=False))
    data = train_data(events, items)
    with caplog.at_level(logging.WARNING, logger="recall"):
        got, removed = apply_filters(candidates, data, cfg, budget=1000)
    assert "no 'category_id' column" in caplog.text
    expected, expected_removed = oracle_apply(candidates, events, items, cfg, 1000, data.now)
    assert as_lists(got) == expected and removed == expected_removed


def test_estimated_periods_match_brute_force():
    for seed in (1, 2, 3):
        events, items, _ = random_case(seed, n_events=600)
        cfg = PurchaseFilterConfig(estimate=True, min_intervals=2, same_occasion_hours=12.0, min_period_days=2.0,
                                   max_period_days=25.0)
        data = train_data(events, items)
        got = dict(estimated_periods(data, cfg).select("category_id", "period_days").iter_rows())
        categories = dict(items.select("item_id", "category_id").iter_rows())
        expected = oracle_periods(events, categories, cfg, data.now)
        assert got.keys() == expected.keys()
        for c, days in expected.items():
            assert got[c] == pytest.approx(days, rel=1e-12)


@pytest.mark.parametrize("caps", [(2, 0), (0, 1), (1, 2), (3, 2)])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_diversity_matches_greedy_walk(caps, seed):
    events, items, candidates = random_case(seed)
    cfg = FiltersConfig(purchase=PurchaseFilterConfig(enabled=False),
                        diversity=DiversityConfig(max_per_category=caps[0], max_per_brand=caps[1]))
    data = train_data(events, items)
    for budget in (3, 8, 1000):
        got, removed = apply_filters(candidates, data, cfg, budget=budget)
        expected, expected_removed = oracle_apply(candidates, events, items, cfg, budget, data.now)
        assert as_lists(got) == expected
        assert removed == expected_removed


def test_two_caps_walk_keeps_what_a_per_cap_count_would_drop():
    """Brand-rejected rows must not use up category places (the walk, not two independent counts)."""
    items = items_frame([0, 0, 0, 1], ["a", "a", "b", "c"])
    events = events_frame([(9, 3, "click", T0)])
    candidates = candidates_frame({1: [0, 1, 2, 3]})
    cfg = FiltersConfig(purchase=PurchaseFilterConfig(enabled=False),
                        diversity=DiversityConfig(max_per_category=2, max_per_brand=1))
    got, removed = apply_filters(candidates, train_data(events, items), cfg, budget=3)
    assert as_lists(got) == {1: [0, 2, 3]}
    assert removed["diversity"] == 1
    got, removed = apply_filters(candidates, train_data(events, items), cfg, budget=10)
    assert as_lists(got) == {1: [0, 2, 3, 1]}  # room left: the over-cap candidate comes last
    assert removed["diversity"] == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_all_filters_together_match_brute_force(seed, suffix, tmp_path):
    events, items, candidates = random_case(seed)
    path = tmp_path / f"blacklist{suffix}"
    table = pl.DataFrame({"item_id": [3, None, 7, 100], "category_id": [None, 2, None, None]},
                         schema={"item_id": pl.Int64, "category_id": pl.Int64})
    table.write_csv(path) if suffix == ".csv" else table.write_parquet(path)
    cfg = FiltersConfig(purchase=PurchaseFilterConfig(estimate=True, min_intervals=2, unblock_clicks=2),
                        blacklist=BlacklistConfig(enabled=True, path=path),
                        diversity=DiversityConfig(max_per_category=2, max_per_brand=2))
    data = train_data(events, items)
    for budget in (2, 5, 1000):
        got, removed = apply_filters(candidates, data, cfg, budget=budget)
        expected, expected_removed = oracle_apply(candidates, events, items, cfg, budget, data.now,
                                                  blacklist=({3, 7, 100}, {2}))
        assert as_lists(got) == expected
        assert removed == expected_removed
        assert sum(removed.values()) == candidates.height - got.height
        assert removed["blacklist"] > 0


# --------------------------------------------------------------------------- planted structure

def test_unblock_rule():
    """Bought category 0 two days ago (period 30 days): blocked until the third click after the purchase."""
    items = items_frame([0, 0, 0, 1, 1])
    now = T0 + 10 * DAY
    buy = now - 2 * DAY
    base = [(1, 0, "click", buy - DAY), (1, 0, "click", buy - 60), (1, 0, "buy", buy),
            (1, 3, "click", buy + 10), (1, 3, "click", buy + 20), (1, 3, "click", buy + 30),  # other category
            (1, 1, "fav", buy + 40), (1, 2, "click", buy)]  # a fav is not a click; same second is not after
    candidates = candidates_frame({1: [1, 2, 3, 4]})
    cfg = FiltersConfig(purchase=PurchaseFilterConfig(unblock_clicks=3), diversity=DiversityConfig(enabled=False))

    def kept(rows, config=cfg, at=now):
        got, _ = apply_filters(candidates, train_data(events_frame(rows), items, now=at), config, budget=10)
        return as_lists(got).get(1, [])

    assert kept(base) == [3, 4]                                       # blocked: no click after the buy
    two = base + [(1, 1, "click", buy + 100), (1, 2, "click", buy + 200)]
    assert kept(two) == [3, 4]                                        # two clicks: still blocked
    assert kept(two + [(1, 0, "click", buy + 300)]) == [1, 2, 3, 4]   # a third click lifts it
    assert kept(two + [(1, 0, "click", now + 60)]) == [3, 4]          # clicks after now do not count
    assert kept(base, at=buy + 30 * DAY) == [1, 2, 3, 4]              # the period is over
    assert kept(base, at=buy + 30 * DAY - 1) == [3, 4]
    fav_counts = FiltersConfig(purchase=PurchaseFilterConfig(unblock_clicks=1, unblock_behaviors=["click", "fav"]),
                               diversity=DiversityConfig(enabled=False))
    assert kept(base, fav_counts) == [1, 2, 3, 4]
    never = FiltersConfig(purchase=PurchaseFilterConfig(unblock_clicks=0), diversity=DiversityConfig(enabled=False))
    assert kept(two + [(1, 0, "click", buy + 300)], never) == [3, 4]
    # A later purchase restarts the block and the click count.
    assert kept(two + [(1, 0, "click", buy + 300), (1, 1, "buy", buy + 400)]) == [3, 4]


def test_estimated_periods_on_a_planted_log():
    """Users rebuy category 1 every ~10 days and category 2 every ~30 days; baskets are not repurchases."""
    rng = np.random.default_rng(0)
    items = items_frame([1] * 10 + [2] * 10 + [3] * 10)
    rows = []
    for user in range(60):
        t = T0 + int(rng.integers(0, 10 * DAY))
        while t < T0 + 360 * DAY:
            rows.append((user, int(rng.integers(0, 10)), "buy", t))
            if rng.random() < 0.3:  # a second item of the category in the same basket
                rows.append((user, int(rng.integers(0, 10)), "buy", t + 600))
            t += int(rng.normal(10, 1.5) * DAY)
        t = T0 + int(rng.integers(0, 30 * DAY))
        while t < T0 + 360 * DAY:
            rows.append((user, int(rng.integers(10, 20)), "buy", t))
            t += int(rng.normal(30, 4) * DAY)
    rows.append((0, 25, "buy", T0))  # category 3: a single purchase, too little data
    data = train_data(events_frame(rows), items)
    cfg = PurchaseFilterConfig(estimate=True, default_period_days=45.0, min_intervals=20)
    periods = {c: (n, d) for c, n, d in estimated_periods(data, cfg).select(
        "category_id", "intervals", "period_days").iter_rows()}
    assert periods["1"][1] == pytest.approx(10, abs=0.5)
    assert periods["2"][1] == pytest.approx(30, abs=1.5)
    assert periods["3"] == (0, 45.0)
    # Explicit periods win over estimates; estimates are clipped.
    over = PurchaseFilterConfig(estimate=True, min_intervals=20, periods_days={"1": 3.0}, max_period_days=20.0)
    blocks = dict(estimated_periods(data, over).select("category_id", "period_days").iter_rows())
    assert blocks["2"] == 20.0
    from recall.filters import purchase_blocks

    until = purchase_blocks(data, over).filter(pl.col("_block_key") == "c1")
    assert ((until["until"] - until["last_buy"]) == 3 * DAY).all()


def test_diversity_backfills_from_the_reserve():
    """The first ten candidates share one category; with a cap of 2 the reserve fills the budget,
    and where the reserve runs out of other categories the best over-cap candidates fill it."""
    items = items_frame([i // 5 for i in range(40)], [f"b{i % 7}" for i in range(40)])
    events = events_frame([(9, 0, "click", T0)])
    candidates = candidates_frame({1: list(range(40)), 2: list(range(12))})
    cfg = FiltersConfig(purchase=PurchaseFilterConfig(enabled=False),
                        diversity=DiversityConfig(max_per_category=2))
    got, removed = apply_filters(candidates, train_data(events, items), cfg, budget=10)
    per_user = as_lists(got)
    assert per_user[1] == [0, 1, 5, 6, 10, 11, 15, 16, 20, 21]
    assert got.filter(pl.col("user_id") == 1)["rank"].to_list() == list(range(1, 11))
    assert per_user[2] == [0, 1, 5, 6, 10, 11, 2, 3, 4, 7]  # six within the caps, then the best over them
    assert removed == {"purchase": 0, "blacklist": 0, "diversity": 24 + 2, "budget": 6}


def test_output_keeps_columns_types_and_order():
    events, items, candidates = random_case(4)
    got, _ = apply_filters(candidates, train_data(events, items),
                           FiltersConfig(diversity=DiversityConfig(max_per_category=2)), budget=4)
    assert got.schema == candidates.schema
    assert got.select("user_id", "rank").equals(got.sort("user_id", "rank").select("user_id", "rank"))
    assert apply_filters(candidates.head(0), train_data(events, items), FiltersConfig(), 4)[0].height == 0


# --------------------------------------------------------------------------- errors and config

def test_blacklist_errors_name_the_file(tmp_path):
    events, items, candidates = random_case(1)
    data = train_data(events, items)

    def run(path):
        cfg = FiltersConfig(blacklist=BlacklistConfig(enabled=True, path=path))
        return apply_filters(candidates, data, cfg, budget=5)

    missing = tmp_path / "nope.csv"
    with pytest.raises(RecallError, match="nope.csv"):
        run(missing)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("sku,reason\n1,x\n")
    with pytest.raises(RecallError, match="wrong.csv.*neither"):
        run(wrong)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(RecallError, match="garbage.parquet"):
        run(garbage)
    bad_ids = tmp_path / "bad_ids.csv"
    bad_ids.write_text("item_id\nabc\n")
    with pytest.raises(RecallError, match="bad_ids.csv"):
        run(bad_ids)
    cats = tmp_path / "cats.csv"
    cats.write_text("category_id\n2\n")
    no_categories = train_data(events, items.drop("category_id"))
    with pytest.raises(RecallError, match="cats.csv.*category_id"):
        apply_filters(candidates, no_categories, FiltersConfig(blacklist=BlacklistConfig(enabled=True, path=cats)), 5)


def test_config_section_parses_and_rejects_typos():
    text = """
    reserve = 50
    [purchase]
    enabled = true
    default_period_days = 30.0
    periods_days = { "12" = 7.0 }
    estimate = true
    unblock_clicks = 3
    [blacklist]
    enabled = false
    [diversity]
    max_per_category = 20
    max_per_brand = 10
    """
    cfg = FiltersConfig.model_validate(tomllib.loads(text))
    assert cfg.purchase.periods_days == {"12": 7.0} and cfg.diversity.max_per_brand == 10 and cfg.reserve == 50
    for bad in ({"purchase": {"unblock_click": 3}}, {"blacklist": {"enabled": True}},
                {"purchase": {"min_period_days": 9, "max_period_days": 3}},
                {"purchase": {"unblock_behaviors": ["view"]}}, {"diversity": {"max_per_brand": -1}}):
        with pytest.raises(ValidationError):
            FiltersConfig.model_validate(bad)
    with pytest.raises(RecallError, match="budget"):
        apply_filters(candidates_frame({1: [0]}), train_data(events_frame([(1, 0, "click", T0)]), None),
                      FiltersConfig(), budget=0)


def test_diversity_without_side_columns_warns_and_skips(caplog):
    events, items, candidates = random_case(2)
    data = train_data(events, items.drop("brand_id"))
    cfg = FiltersConfig(purchase=PurchaseFilterConfig(enabled=False), diversity=DiversityConfig(max_per_brand=1))
    with caplog.at_level(logging.WARNING, logger="recall"):
        got, removed = apply_filters(candidates, data, cfg, budget=1000)
    assert "brand_id" in caplog.text and removed["diversity"] == 0 and got.height == candidates.height


# --------------------------------------------------------------------------- properties

@st.composite
def cases(draw):
    n_items = draw(st.integers(1, 12))
    categories = draw(st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=n_items, max_size=n_items))
    brands = draw(st.lists(st.one_of(st.none(), st.sampled_from("abc")), min_size=n_items, max_size=n_items))
    events = draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, n_items - 1), st.sampled_from(BEHAVIORS),
                                     st.integers(0, 40 * DAY)), min_size=1, max_size=40))
    lists = draw(st.dictionaries(st.integers(0, 4), st.permutations(range(n_items)).flatmap(
        lambda p: st.integers(0, len(p)).map(lambda k: p[:k])), max_size=5))
    purchase = PurchaseFilterConfig(
        enabled=draw(st.booleans()), default_period_days=draw(st.sampled_from([1.0, 10.0, 60.0])),
        estimate=draw(st.booleans()), min_intervals=draw(st.integers(1, 3)),
        unblock_clicks=draw(st.integers(0, 3)), periods_days=draw(st.dictionaries(
            st.sampled_from(["0", "1", "2", "3"]), st.sampled_from([0.0, 5.0, 100.0]), max_size=2)))
    diversity = DiversityConfig(enabled=draw(st.booleans()), max_per_category=draw(st.integers(0, 3)),
                                max_per_brand=draw(st.integers(0, 3)))
    blacklist = (set(draw(st.lists(st.integers(0, n_items), max_size=3))),
                 set(draw(st.lists(st.integers(0, 3), max_size=2))))
    return (events_frame([(u, i, b, T0 + t) for u, i, b, t in events]), items_frame(categories, brands),
            candidates_frame(lists), purchase, diversity, blacklist, draw(st.integers(1, 8)),
            T0 + draw(st.integers(0, 45 * DAY)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_filter_properties(case, tmp_path):
    events, items, candidates, purchase, diversity, (bad_items, bad_cats), budget, now = case
    path = tmp_path / "blacklist.csv"
    pl.DataFrame({"item_id": sorted(bad_items) + [None] * len(bad_cats),
                  "category_id": [None] * len(bad_items) + sorted(bad_cats)},
                 schema={"item_id": pl.Int64, "category_id": pl.Int64}).write_csv(path)
    cfg = FiltersConfig(purchase=purchase, diversity=diversity,
                        blacklist=BlacklistConfig(enabled=bool(bad_items or bad_cats), path=path))
    data = train_data(events, items, now=now)
    got, removed = apply_filters(candidates, data, cfg, budget)

    # A subset of the input (all but the rank), at most the budget per user, ranks 1..n.
    incoming = candidates.rename({"rank": "old_rank"})
    joined = got.join(incoming, on=["user_id", "item_id"], how="left")
    assert joined["old_rank"].null_count() == 0 and joined.height == got.height
    assert joined.select((pl.col("score") == pl.col("score_right")).all()).item()
    assert sum(removed.values()) == candidates.height - got.height
    assert all(v >= 0 for v in removed.values())

    categories = dict(items.select("item_id", "category_id").iter_rows())
    brands = dict(items.select("item_id", "brand_id").iter_rows())
    pairs = list(got.select("user_id", "item_id").iter_rows())
    if purchase.enabled:
        blocked = oracle_blocked(events, categories, purchase, now)
        assert not any(blocked(u, i) for u, i in pairs)
    if cfg.blacklist.enabled:
        assert not any(i in bad_items or categories.get(i) in bad_cats for _, i in pairs)
    for user, ranks, old, listed in joined.sort("user_id", "rank").group_by("user_id", maintain_order=True).agg(
            "rank", "old_rank", "item_id").iter_rows():
        assert len(ranks) <= budget and ranks == list(range(1, len(ranks) + 1))
        # Each list is the rows within the caps, then the over-cap rows, each part in input order.
        over = [False] * len(listed)
        if diversity.enabled:
            counts = defaultdict(int)
            for position, item in enumerate(listed):
                keys = [(name, column[item]) for name, column, cap in (("c", categories, diversity.max_per_category),
                                                                       ("b", brands, diversity.max_per_brand))
                        if cap and column.get(item) is not None]
                caps = {"c": diversity.max_per_category, "b": diversity.max_per_brand}
                over[position] = any(counts[key] >= caps[key[0]] for key in keys)
                if not over[position]:
                    for key in keys:
                        counts[key] += 1
        assert over == sorted(over)
        within, beyond = [o for o, f in zip(old, over) if not f], [o for o, f in zip(old, over) if f]
        assert within == sorted(within) and beyond == sorted(beyond)
    # And the whole table is the oracle's.
    expected, expected_removed = oracle_apply(candidates, events, items, cfg, budget, now,
                                              blacklist=(bad_items, bad_cats))
    assert as_lists(got) == expected and removed == expected_removed
    # Rows in any order take the general sort instead of the merge-order shortcut: the same table.
    shuffled, shuffled_removed = apply_filters(candidates.sample(fraction=1.0, shuffle=True, seed=1), data, cfg,
                                               budget)
    assert shuffled.equals(got) and shuffled.schema == got.schema and shuffled_removed == removed


def test_short_lists_are_merged_again_to_full_depth():
    """User 1 just bought in category 0, where the first 10 of their 30 candidates are: the first
    merge (budget 8 + reserve 4) leaves them 2 rows, so they are merged again to all 30 and get 8.
    User 2 (no purchase) keeps the first merge; user 3 has only 11 candidates: short, nothing deeper."""
    from recall.filters import filter_with_refill

    items = items_frame([i // 10 for i in range(30)])
    events = events_frame([(1, 0, "buy", T0), (2, 20, "click", T0), (3, 1, "buy", T0)])
    lists = {1: list(range(30)), 2: list(range(30)), 3: list(range(11))}
    asked = []

    def merge(depth, users):
        asked.append((depth, None if users is None else sorted(users.to_list())))
        chosen = {u: its[:depth] for u, its in lists.items() if users is None or u in users.to_list()}
        return candidates_frame(chosen)

    cfg = FiltersConfig(purchase=PurchaseFilterConfig(estimate=False), reserve=4,
                        diversity=DiversityConfig(enabled=False))
    got, merged, removed = filter_with_refill(merge, train_data(events, items, now=T0 + DAY), cfg, budget=8)
    assert as_lists(got) == {1: list(range(10, 18)), 2: list(range(8)), 3: [10]}
    assert asked == [(12, None), (None, [1])]
    assert merged.height == 12 + 12 + 11  # the first merge, as the ranker's unfiltered view
    # Counted on each user's final input: user 1's 30 rows (10 bought, 12 beyond the budget), user 2's 12
    # (4 beyond), user 3's 11 (10 bought: it also bought in category 0).
    assert removed == {"purchase": 20, "blacklist": 0, "diversity": 0, "budget": 16}
    assert sum(removed.values()) == 30 + 12 + 11 - got.height
