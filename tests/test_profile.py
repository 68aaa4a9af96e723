"""The data profile and the starting config `recall init` writes from it."""

from __future__ import annotations

import tomllib

import polars as pl

from recall import schema as S
from recall.config import Config
from pathlib import Path

from recall.io import Dataset, normalise_events
from recall.profile import profile, starting_config
from tests.conftest import random_log

DAY = 86400


def ratings_log() -> Dataset:
    """Each user rates 8 movies in one burst, once each; bursts spread over 200 days."""
    rows = []
    for u in range(40):
        start = 1_600_000_000 + (u * 5) * DAY
        rows += [(u, (u + j) % 30, "click", start + j * 60, 3.0 + j % 3) for j in range(8)]
    events = pl.DataFrame(rows, schema={S.USER: pl.Int64, S.ITEM: pl.Int64, S.BEHAVIOR: pl.String, S.TS: pl.Int64,
                                        "rating": pl.Float64}, orient="row")
    return Dataset(normalise_events(events, Path("<ratings>")))


def test_profile_measures_the_log_by_brute_force():
    events = random_log(3, n_events=2000, n_users=50, n_items=40, days=30)
    users = pl.DataFrame({S.USER: range(50), "gender": ["F", "M"] * 25, "zip": [str(i) for i in range(50)],
                          "age_band": ["a", "b", "c", "d", "e"] * 10})
    p = profile(Dataset(events, None, users))
    ts = events[S.TS].to_list()
    assert p.events == len(ts) and p.span_days == (max(ts) - min(ts)) / DAY
    split = max(ts) + 1 - p.test_days * DAY
    assert sum(t >= split for t in ts) / len(ts) == p.test_share >= 0.05
    shorter = [d for d in (1, 2, 7, 14, 28, 56, 91) if d < p.test_days]
    for d in shorter:  # the shortest window that holds 5% of the log
        assert sum(t >= max(ts) + 1 - d * DAY for t in ts) / len(ts) < 0.05
    recent = {u for u, t in zip(events[S.USER].to_list(), ts) if t >= split}
    before = {u for u, t in zip(events[S.USER].to_list(), ts) if t < split}
    assert p.cold_user_share == len(recent - before) / len(recent)
    assert p.crowd_attributes == ["gender", "age_band"]  # zip has 50 values: an id, not a crowd
    assert p.kind == "behaviour" and p.has_impressions == ("impression" in events[S.BEHAVIOR].cast(pl.String))


def test_starting_config_is_valid_and_fits_a_ratings_log():
    data = ratings_log()
    p = profile(data)
    assert p.kind == "ratings" and not p.has_impressions
    text = starting_config(p, "data/x")
    cfg = Config.model_validate(tomllib.loads(text))
    assert cfg.channels["itemcf"].pair_window_hours is None  # ratings: no time limit on pairs
    assert not cfg.channels["retarget"].enabled and not cfg.filters.purchase.enabled
    assert cfg.eval.test_days == p.test_days and cfg.tune.validation_days == p.test_days
    assert cfg.channels["crowd"].attributes == []  # no users table
    assert "ratings" in text


def test_starting_config_for_a_behaviour_log_keeps_retargeting_and_filters():
    events = random_log(4, n_events=3000, n_users=60, n_items=50, days=20)
    items = pl.DataFrame({S.ITEM: range(0, 500, 10), "category_id": [i % 5 for i in range(50)],
                          "brand_id": [i % 7 for i in range(50)]})
    cfg = Config.model_validate(tomllib.loads(starting_config(profile(Dataset(events, items)), "d")))
    assert cfg.channels["retarget"].enabled and cfg.channels["retarget"].strict
    assert cfg.filters.diversity.enabled and cfg.filters.diversity.max_per_brand == 20
    assert cfg.filters.purchase.enabled == ("buy" in events["behavior"].cast(str).to_list())
    assert cfg.triggers.window_days == 30.0


def test_an_impressions_only_log_profiles_without_engagement():
    """No engaged event at all (found by the slow fuzz test): a behaviour log with zero per-user figures."""
    events = pl.DataFrame({"user_id": [0, 0, 1], "item_id": [0, 1, 0], "behavior": ["impression"] * 3,
                           "ts": [1_699_136_000, 1_699_136_100, 1_699_200_000]})
    p = profile(Dataset(normalise_events(events, Path("<impressions>"))))
    assert p.kind == "behaviour" and p.has_impressions and p.behaviors == {"impression": 3}
    assert p.events_per_user == {"median": 0.0, "p90": 0.0} and p.active_days_per_user == 0.0
    assert tomllib.loads(starting_config(p, "data/x"))["data"]["dir"] == "data/x"  # `recall init` still writes
