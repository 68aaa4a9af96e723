"""Per-segment quotas: each segment's users merged under its own quotas, tuned only where it pays."""

from __future__ import annotations

import tomllib

import polars as pl
import pytest

from recall.config import Config, TuneConfig
from recall.context import TrainData
from recall.errors import RecallError
from recall.merge import merge_channels
from recall.pipeline import merge_outputs, user_segments
from recall.config import load_config_files
from recall.tuning import tune
from tests.test_tune import config, dataset, random_candidates


def test_user_segments_by_distinct_engaged_items():
    data = dataset(3, n_users=20, n_events=300)
    train = TrainData.build(data)
    users = pl.DataFrame({"user_id": list(range(20)) + [999]})
    table = dict(user_segments(train, users, 10).iter_rows())
    engaged = train.engaged()
    for user in range(20):
        n = engaged.filter(pl.col("user_id") == user)["item_id"].n_unique()
        assert table[user] == ("cold" if n == 0 else "light" if n <= 10 else "heavy")
    assert table[999] == "cold"  # unknown to training


def test_merge_applies_each_segments_quotas_to_its_users_only():
    data = dataset(4, n_users=30, n_events=600)
    train = TrainData.build(data)
    candidates = random_candidates(5, train)
    base = config(budget=6, reserve=0, filters=False)
    heavy = {"itemcf": 6, "usercf": 0, "crowd": 0}
    cfg = base.model_copy(update={"merge": base.merge.model_copy(
        update={"light_max_items": 12, "segment_quotas": {"heavy": heavy}})})
    got = merge_outputs(cfg, candidates, train)[1]
    segments = user_segments(train, pl.DataFrame({"user_id": train.user_ids}), 12)
    for segment, quotas in (("heavy", heavy), ("light", base.quotas()), ("cold", base.quotas())):
        users = segments.filter(pl.col("segment") == segment).select("user_id")
        mine = {n: f.join(users, on="user_id", how="semi") for n, f in candidates.items()}
        expected = merge_channels(mine, quotas, 6).sort("user_id", "rank")
        part = got.join(users, on="user_id", how="semi").sort("user_id", "rank")
        assert part.select("user_id", "item_id", "rank", "source").equals(
            expected.select("user_id", "item_id", "rank", "source")), segment
    assert got.filter(pl.col("user_id").is_in(segments.filter(pl.col("segment") == "heavy")["user_id"].implode())
                      )["source"].unique().to_list() in (["itemcf"], [])


def test_segment_quotas_are_validated():
    with pytest.raises(Exception, match="segment"):
        Config.model_validate({"merge": {"segment_quotas": {"vip": {"itemcf": 3}}}})
    cfg = Config.model_validate({"channels": {"itemcf": {"quota": 5}, "usercf": {"quota": 5}},
                                 "merge": {"segment_quotas": {"heavy": {"itemcf": 10}}}})
    assert cfg.quotas("heavy") == {"itemcf": 10, "usercf": 0} and cfg.quotas("light") == cfg.quotas()


def test_tune_writes_segment_quotas_that_layer(tmp_path):
    cfg = config(budget=8, reserve=2)
    cfg = cfg.model_copy(update={"merge": cfg.merge.model_copy(update={"light_max_items": 25})})
    settings = TuneConfig(validation_windows=1, validation_days=2, step=2, k=5, min_z=0, min_segment_users=1,
                          search_params=False)
    result = tune(cfg, dataset(1), settings=settings)
    assert set(result.segments) <= {"light", "heavy"} and result.segments
    for found in result.segments.values():
        assert sum(found["quotas"].values()) == 8
        assert found["kept_prior"] == (found["gain"]["delta"] <= 0)
    fragment = result.write(tmp_path / "tuned.toml")
    written = tomllib.loads(fragment.read_text())
    used = {s: f["quotas"] for s, f in result.segments.items() if not f["kept_prior"]}
    assert written.get("merge", {}).get("segment_quotas", {}) == used
    base = tmp_path / "base.toml"
    base.write_text("candidates_per_user = 8\n[channels.itemcf]\nshare = 0.5\n[channels.usercf]\nshare = 0.3\n"
                    "[channels.crowd]\nshare = 0.2\n")
    layered = load_config_files([base, fragment])
    for segment, quotas in used.items():
        assert layered.quotas(segment) == quotas


def test_the_spark_engine_refuses_segment_quotas():
    from recall.spark.engine import run_spark

    cfg = Config.model_validate({"channels": {"itemcf": {}}, "merge": {"segment_quotas": {"heavy": {"itemcf": 5}}}})
    with pytest.raises(RecallError, match="segment_quotas"):
        run_spark(cfg)
