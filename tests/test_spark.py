"""Spark engine parity: every table of ``run_spark`` equals the local engine's ``run``.

The oracle is the local engine itself (each of its channels has its own brute-force
oracle test): on the synthetic sample and on a random log built for ties (coarse
timestamps, no IUF / decay / normalisation, small top-K cuts), both engines publish
a run and every Parquet table is compared -- same rows, same ranks, same sources
and channel lists, scores within 1e-9 relative -- plus the filters' removal counts.
One SparkSession (``local[2]``) serves the module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recall.channels import CHANNELS
from recall.config import load_config
from recall.errors import RecallError
from recall.io import Dataset, write_dataset
from recall.pipeline import run
from recall.synth import synthesize
from tests.conftest import REPO, random_log

pytestmark = pytest.mark.spark

SPARK_CHANNELS = ("itemcf", "swing", "usercf", "ranki2i", "association", "retarget", "crowd")
# Tiny data, many small jobs: the JVM's quick JIT tier only, no adaptive re-planning and no
# whole-stage code generation (compiling each plan costs more than running it on this data).
QUICK_JVM = "-XX:TieredStopAtLevel=1"
QUICK_CONF = {"spark.sql.adaptive.enabled": "false", "spark.sql.codegen.wholeStage": "false"}


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'recall[spark]')")
    from recall.spark.session import java_available, spark_session

    if not java_available():
        pytest.skip("no Java runtime (17 or 21) to start Spark; install one or set JAVA_HOME")
    session = spark_session(master="local[2]", driver_memory="1g", shuffle_partitions=2, java_options=QUICK_JVM,
                            conf=QUICK_CONF)
    yield session
    session.stop()


def config(data_dir: Path, out: Path, extra: list[str] = (), keep: tuple[str, ...] = ()):
    """configs/default.toml on ``data_dir``, with only the Spark channels (plus ``keep``) enabled."""
    off = [f"channels.{name}.enabled=false" for name in CHANNELS if name not in SPARK_CHANNELS + keep]
    return load_config(REPO / "configs" / "default.toml",
                       [f'data.dir="{data_dir}"', f'output.root="{out}"', *off, *extra])


def assert_same_table(local: pl.DataFrame, spark: pl.DataFrame, name: str) -> None:
    assert local.schema == spark.schema, name
    keys = [c for c in local.columns if c not in ("score", "source", "channels")]
    local, spark = local.sort(keys), spark.sort(keys)
    assert local.height == spark.height, name
    assert local.drop("score").equals(spark.drop("score")), f"{name}: rows, ranks or sources differ"
    np.testing.assert_allclose(spark["score"].to_numpy(), local["score"].to_numpy(), rtol=1e-9, atol=1e-12,
                               err_msg=name)


def assert_same_runs(local_dir: Path, spark_dir: Path) -> list[str]:
    """Every Parquet table of the two published runs is the same; returns the compared names."""
    names = sorted(str(p.relative_to(local_dir)) for p in local_dir.rglob("*.parquet"))
    assert names == sorted(str(p.relative_to(spark_dir)) for p in spark_dir.rglob("*.parquet"))
    for name in names:
        assert (spark_dir / name).is_file(), f"{name} should be one Parquet file, as the local engine writes"
        assert_same_table(pl.read_parquet(local_dir / name), pl.read_parquet(spark_dir / name), name)
    local_manifest = json.loads((local_dir / "manifest.json").read_text())
    spark_manifest = json.loads((spark_dir / "manifest.json").read_text())
    assert spark_manifest["filters_removed"] == local_manifest["filters_removed"]
    assert spark_manifest["tables"] == local_manifest["tables"]
    assert (spark_dir / "_SUCCESS").exists()
    return names


def both_engines(spark, data: Dataset, tmp_path: Path, extra: list[str] = (), keep: tuple[str, ...] = ()):
    from recall.spark.engine import run_spark

    write_dataset(data, tmp_path / "data")
    local = run(config(tmp_path / "data", tmp_path / "local", extra, keep))
    distributed = run_spark(config(tmp_path / "data", tmp_path / "spark", extra, keep), spark=spark)
    return local, distributed


def test_sample_parity(spark, tmp_path):
    # Swing is off in configs/default.toml; on here so every Spark channel is compared. With 200 items
    # a budget of 200 would hold every list whole: a smaller budget and cap make the filters bite.
    local, distributed = both_engines(spark, synthesize(300, 200, 7, 0), tmp_path,
                                      ["channels.swing.enabled=true", "candidates_per_user=60",
                                       "filters.diversity.max_per_category=5"])
    names = assert_same_runs(Path(local["published"]), Path(distributed["published"]))
    for channel in SPARK_CHANNELS:
        assert f"channels/{channel}.parquet" in names
    assert {"i2i/itemcf.parquet", "i2i/ranki2i.parquet", "i2i/association.parquet", "u2u/usercf.parquet",
            "hot/crowds.parquet", "candidates.parquet"} <= set(names)
    assert distributed["channels"].keys() == local["channels"].keys()
    for channel, row in local["channels"].items():
        assert {k: v for k, v in distributed["channels"][channel].items() if k != "seconds"} == \
               {k: v for k, v in row.items() if k != "seconds"}
    assert distributed["candidates"] == local["candidates"]
    # The filters really ran (the parity of their counts is not vacuous).
    removed = json.loads((Path(local["published"]) / "manifest.json").read_text())["filters_removed"]
    assert removed["purchase"] > 0 and removed["diversity"] > 0


def tie_dataset(seed: int) -> Dataset:
    """A random log on an hourly grid, so that many scores, weights and gaps tie exactly."""
    events = random_log(seed, n_events=2500, n_users=50, n_items=30, days=6)
    events = events.with_columns((pl.col("ts") // 3600 * 3600).alias("ts")).unique(maintain_order=True)
    rng = np.random.default_rng(seed)
    items = pl.DataFrame({"item_id": np.arange(32) * 10,
                          "category_id": pl.Series([None if c == 3 else int(c) for c in rng.integers(0, 4, 32)],
                                                   dtype=pl.Int64),
                          "brand_id": rng.integers(0, 6, 32)})
    users = pl.DataFrame({"user_id": np.arange(55),  # users 50..54 have no events: crowd lists only
                          "gender": pl.Series(rng.choice(["F", "M", None], 55).tolist(), dtype=pl.String),
                          "age_band": rng.choice(["18-24", "25-34"], 55)})
    return Dataset(events=events, items=items, users=users)


TIES = [
    "candidates_per_user=8", "filters.reserve=10", "triggers.max_triggers=4", "triggers.half_life_days=inf",
    # itemCF as plain co-occurrence counts: exact ties everywhere, cut by top_k.
    "channels.itemcf.iuf=false", "channels.itemcf.pair_window_hours=inf", "channels.itemcf.alpha=0.5",
    "channels.itemcf.decay_half_life_hours=inf", "channels.itemcf.normalize=false", "channels.itemcf.top_k=4",
    "channels.ranki2i.same_category=true", "channels.ranki2i.attribution='last'", "channels.ranki2i.top_k=5",
    "channels.ranki2i.bucket_hours=6.0", "channels.ranki2i.pair_window_hours=48.0", "channels.ranki2i.ctr_power=0.5",
    "channels.association.popularity_normalize=true", "channels.association.session_gap_hours=24.0",
    "channels.association.window=3", "channels.association.length_normalize=false", "channels.association.top_k=4",
    "channels.swing.enabled=true", "channels.swing.top_k=4",
    "channels.swing.min_user_items=3", "channels.swing.user_beta=0.5",
    "channels.usercf.iif=false", "channels.usercf.min_common_items=2", "channels.usercf.top_k_users=3",
    "channels.retarget.aggregate='max'", "channels.retarget.max_per_user=4", "channels.retarget.quota=3",
    "channels.crowd.min_support=15", "channels.crowd.min_users=3", "channels.crowd.window_days=inf",
    "filters.purchase.estimate=true", "filters.purchase.min_intervals=1", "filters.purchase.unblock_clicks=2",
    "filters.diversity.max_per_category=4", "filters.diversity.max_per_brand=3",
    # One embedding channel trains locally on the driver and goes through the Spark merge.
    "channels.item2vec.dim=8", "channels.item2vec.epochs=1", "channels.item2vec.top_k=5",
]


def test_a_null_category_is_unknown_not_a_category():
    """The documented rule of :func:`recall.channels.itemcf.category_codes`: -1 where the category is
    unknown, so items of unknown category never pair under ``same_category`` (as the Spark engine does)."""
    from recall.channels.itemcf import category_codes
    from recall.context import TrainData

    events = pl.DataFrame({"user_id": [1, 1, 1], "item_id": [1, 2, 3], "behavior": ["click"] * 3,
                           "ts": [1_700_000_000, 1_700_000_001, 1_700_000_002]})
    items = pl.DataFrame({"item_id": [1, 2, 3], "category_id": pl.Series([None, 5, None], dtype=pl.Int64)})
    codes = category_codes(TrainData.build(Dataset(events=events, items=items)))
    assert codes[0] == -1 and codes[2] == -1 and codes[1] >= 0


def test_random_log_with_ties_parity(spark, tmp_path):
    if "item2vec" not in CHANNELS:
        pytest.skip("the item2vec channel is not registered")
    local, distributed = both_engines(spark, tie_dataset(3), tmp_path, TIES, keep=("item2vec",))
    names = assert_same_runs(Path(local["published"]), Path(distributed["published"]))
    assert "channels/item2vec.parquet" in names
    manifest = json.loads((Path(distributed["published"]) / "manifest.json").read_text())
    assert manifest["engine"]["local_channels"] == ["item2vec"]
    # The log was built for ties: check they are there, so the ordering rule was exercised.
    i2i = pl.read_parquet(Path(local["published"]) / "i2i" / "itemcf.parquet")
    assert i2i.group_by("item_id", "score").len()["len"].max() > 1
    # ... and that every filter and the budget cut removed rows (their counts are compared above).
    assert min(manifest["filters_removed"][k] for k in ("purchase", "diversity", "budget")) > 0
    candidates = pl.read_parquet(Path(local["published"]) / "candidates.parquet")
    assert candidates.group_by("user_id").len()["len"].max() == 8


def test_short_lists_are_refilled_alike(spark, tmp_path):
    """Without a reserve, a user whose merged list loses rows to the purchase filter is short unless
    merged again to full depth (recall.filters.filter_with_refill): both engines do it, alike."""
    if "item2vec" not in CHANNELS:
        pytest.skip("the item2vec channel is not registered")
    local, distributed = both_engines(spark, tie_dataset(4), tmp_path, [*TIES, "filters.reserve=0"],
                                      keep=("item2vec",))
    assert_same_runs(Path(local["published"]), Path(distributed["published"]))
    removed = json.loads((Path(local["published"]) / "manifest.json").read_text())["filters_removed"]
    # With no reserve nothing lies beyond the budget unless short lists were merged again deeper.
    assert removed["purchase"] > 0 and removed["budget"] > 0


SWING_CASES = [  # (params, log seed): plain, unnormalised with an overlap-free alpha, a tight user range
    ({}, 1),
    ({"normalize": False, "alpha": 0.0, "user_beta": 0.0, "top_k": 3}, 2),
    ({"min_user_items": 4, "max_user_items": 9, "window_days": 5.0, "behaviors": ["click", "buy"]}, 3),
]


@pytest.mark.parametrize("params, seed", SWING_CASES)
def test_swing_table_matches_the_local_swing(spark, params, seed):
    """Spark's Swing (recall/spark/swing.py) publishes the local Swing's i2i table on a tiny log."""
    from recall.channels.swing import Swing, SwingParams
    from recall.context import TrainData
    from recall.spark.data import SparkData
    from recall.spark.swing import swing_table

    data = Dataset(events=random_log(seed, n_events=500, n_users=25, n_items=12, days=8))
    p = SwingParams(**params)
    local = Swing(p)
    train = TrainData.build(data, seed=7)
    local.fit(train)
    expected = local.similar_items(train)
    got = pl.from_arrow(swing_table(SparkData.from_dataset(spark, data, seed=7), p).toArrow())
    assert expected.height > 10
    assert_same_table(expected, got.cast(dict(expected.schema)), "i2i/swing")


def test_swing_sample_keeps_the_cap_per_item(spark):
    """Above ``max_users_per_item`` the Spark sample keeps exactly the cap, seeded (same draw twice)."""
    from recall.channels.swing import SwingParams
    from recall.spark.data import SparkData
    from recall.spark.swing import engagement, sample_users

    data = SparkData.from_dataset(spark, Dataset(events=random_log(4, n_events=800, n_users=40, n_items=6)), seed=3)
    rows = engagement(data, SwingParams())
    sampled = pl.from_arrow(sample_users(rows, 5, 3).toArrow()).sort("item_id", "user_id")
    assert sampled.group_by("item_id").len()["len"].max() == 5
    assert sampled.equals(pl.from_arrow(sample_users(rows, 5, 3).toArrow()).sort("item_id", "user_id"))
    assert not sampled.equals(pl.from_arrow(sample_users(rows, 5, 4).toArrow()).sort("item_id", "user_id"))


@pytest.mark.parametrize("strict, backfill", [((), True), (("b",), True), ((), False)])
def test_merge_matches_local_on_slot_ties(spark, strict, backfill):
    """Quotas 60, 20, 30 make equal slot positions across channels (9/60 = 3/20 = 4.5/30 ...):
    both engines must break those ties by channel order, then item id."""
    from recall.merge import merge_channels as local_merge
    from recall.spark.merge import merge_channels as spark_merge

    rng = np.random.default_rng(5)
    candidates = {}
    for name, length in (("a", 90), ("b", 30), ("c", 45)):
        users = np.repeat(np.arange(6), length)
        items = np.concatenate([rng.choice(120, length, replace=False) for _ in range(6)])
        candidates[name] = pl.DataFrame({"user_id": users, "item_id": items, "score": 1.0,
                                         "rank": np.tile(np.arange(1, length + 1), 6).astype(np.int32)})
    quotas = {"a": 60, "b": 20, "c": 30}
    local = local_merge(candidates, quotas, 70, strict=set(strict), backfill=backfill)
    frames = {name: spark.createDataFrame(frame.to_arrow()) for name, frame in candidates.items()}
    distributed = pl.from_arrow(spark_merge(frames, quotas, 70, strict=set(strict), backfill=backfill).toArrow())
    assert_same_table(local, distributed.cast(local.schema), "merge")
    assert local.group_by("user_id").len()["len"].max() == 70


def test_failed_run_leaves_published_run_intact_and_optional_channels_may_fail(spark, tmp_path, monkeypatch):
    from recall.spark import engine

    data = synthesize(60, 40, 3, 1)
    write_dataset(data, tmp_path / "data")
    off = [f"channels.{name}.enabled=false" for name in ("usercf", "ranki2i", "association", "crowd")]
    cfg = config(tmp_path / "data", tmp_path / "out", off)
    first = engine.run_spark(cfg, spark=spark)
    published = Path(first["published"]).resolve()
    before = pl.read_parquet(published / "candidates.parquet")

    def broken(*_):
        raise RuntimeError("executor lost")

    monkeypatch.setitem(engine.SPARK_CHANNELS, "retarget", broken)
    with pytest.raises(RuntimeError, match="executor lost"):
        engine.run_spark(cfg, spark=spark)
    assert Path(first["published"]).resolve() == published
    assert pl.read_parquet(published / "candidates.parquet").equals(before)
    assert [p.name for p in (tmp_path / "out" / ".runs").iterdir()] == [published.name]
    assert not list(published.rglob(".*.spark"))  # no temporary Spark folders left behind

    # An optional channel that fails half-way (its i2i table written) is left out entirely.
    monkeypatch.undo()
    itemcf = engine.SPARK_CHANNELS["itemcf"]

    def half_written(data, params, n, writer, name):
        writer.write_local("i2i/itemcf.parquet", pl.DataFrame({"item_id": [1], "neighbor_id": [2]}))
        raise RuntimeError("executor lost")

    monkeypatch.setitem(engine.SPARK_CHANNELS, "itemcf", half_written)
    degraded = engine.run_spark(config(tmp_path / "data", tmp_path / "out", [*off, 'run.optional_channels=["itemcf"]']),
                                spark=spark)
    assert [f["part"] for f in degraded["failures"]] == ["channel:itemcf"]
    assert list(degraded["channels"]) == ["retarget"]
    run_dir = Path(degraded["published"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "degraded" and manifest["failures"][0]["error_type"] == "RuntimeError"
    assert sorted(manifest["tables"]) == ["candidates.parquet", "channels/retarget.parquet"]
    assert sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*.parquet")) == sorted(manifest["tables"])
    assert pl.read_parquet(run_dir / "candidates.parquet")["source"].unique().to_list() == ["retarget"]
    assert itemcf is not half_written


def test_dataset_folder_layout_reads_as_one_table(spark, tmp_path):
    from recall.publish import publish
    from recall.spark.engine import TableWriter

    frame = spark.range(0, 1000, numPartitions=4).selectExpr(
        "id % 37 as user_id", "id as item_id", "1.0 / (id + 1) as score", "cast(id as int) as rank")
    with publish(tmp_path, "2024-01-02") as pub:
        writer = TableWriter(pub, spark, single_file=False)
        writer.write("channels/x.parquet", frame)
    path = tmp_path / "latest" / "channels" / "x.parquet"
    assert path.is_dir()
    assert not [p for p in path.iterdir() if not p.name.endswith(".parquet")]  # no _SUCCESS / .crc files
    table = pl.read_parquet(path)
    assert table.height == 1000 and table.schema["rank"] == pl.Int32
    assert table["item_id"].sort().to_list() == list(range(1000))
    assert json.loads((tmp_path / "latest" / "manifest.json").read_text())["tables"]["channels/x.parquet"] == 1000


def test_input_problems_are_recall_errors(spark, tmp_path):
    from recall.spark.data import SparkData

    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "events.csv").write_text("user_id,item_id,behavior,ts\n1,2,click,3\n")
    with pytest.raises(RecallError, match="recall data import"):
        SparkData.load(spark, tmp_path / "csv")
    good = {"user_id": [1, 2], "item_id": [5, 6], "ts": [1_700_000_000, 1_700_000_100]}
    cases = {"pv": ({**good, "behavior": ["click", "pv"]}, "unknown behavior"),
             "ms": ({**good, "behavior": ["click", "buy"], "ts": [1_700_000_000_000] * 2}, "milliseconds")}
    for name, (columns, message) in cases.items():
        os.makedirs(tmp_path / name)
        pl.DataFrame(columns).write_parquet(tmp_path / name / "events.parquet")
        with pytest.raises(RecallError, match=message):
            SparkData.load(spark, tmp_path / name)


def test_unsupported_channels_without_fallback_are_refused(tmp_path):
    pytest.importorskip("pyspark", reason="pyspark is not installed")
    from recall.spark.engine import run_spark

    names = [n for n in CHANNELS if n not in SPARK_CHANNELS]
    if not names:
        pytest.skip("every registered channel has a Spark implementation")
    # Enabled explicitly: the first such channel may be off in configs/default.toml (swing is).
    cfg = config(tmp_path, tmp_path / "out", [f"channels.{names[0]}.enabled=true"], keep=(names[0],))
    with pytest.raises(RecallError, match=names[0]):
        run_spark(cfg, local_fallback=False)


def recall_command(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed ``recall`` entry point as a real subprocess."""
    script = Path(sys.executable).with_name("recall")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from recall.cli import main; main()"]
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


def test_cli_run_engine_spark_publishes_the_local_candidates(spark, tmp_path):
    write_dataset(synthesize(60, 40, 4, 2), tmp_path / "data")
    only = ["itemcf", "retarget"]
    overrides = [f"channels.{name}.enabled=false" for name in CHANNELS if name not in only]
    local = run(load_config(REPO / "configs" / "default.toml",
                            [f'data.dir="{tmp_path / "data"}"', f'output.root="{tmp_path / "local"}"', *overrides]))
    sets = [arg for o in overrides for arg in ("--set", o)]
    done = recall_command(
        "--quiet", "run", "-c", "configs/default.toml", *sets, "--data", str(tmp_path / "data"),
        "--out", str(tmp_path / "spark"), "--engine", "spark", "--master", "local[2]",
        "--spark-conf", "spark.sql.shuffle.partitions=2", "--spark-conf", f"spark.driver.extraJavaOptions={QUICK_JVM}",
        *[arg for key, value in QUICK_CONF.items() for arg in ("--spark-conf", f"{key}={value}")])
    assert done.returncode == 0, done.stderr
    assert "Setting default log level" not in done.stderr  # --quiet: no JVM chatter for cron
    published = tmp_path / "spark" / local["run_date"]
    assert_same_table(pl.read_parquet(Path(local["published"]) / "candidates.parquet"),
                      pl.read_parquet(published / "candidates.parquet"), "candidates.parquet")
    manifest = json.loads((published / "manifest.json").read_text())
    assert manifest["engine"]["name"] == "spark" and manifest["engine"]["master"] == "local[2]"
    assert manifest["status"] == "complete"


def test_cli_spark_problems_exit_1_with_the_fix(tmp_path):
    write_dataset(synthesize(20, 10, 2, 0), tmp_path / "data")
    common = ["run", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    done = recall_command(*common, "--master", "local[2]")
    assert done.returncode == 1 and "--engine spark" in done.stderr
    done = recall_command(*common, "--engine", "spark", "--spark-conf", "spark.driver.memory")
    assert done.returncode == 1 and "key=value" in done.stderr
    # No Java on the PATH and no JAVA_HOME: a user error naming the fix, before any JVM is tried.
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"} | {"PATH": str(Path(sys.executable).parent)}
    done = recall_command(*common, "--engine", "spark", env=env)
    assert done.returncode == 1 and "Java 17" in done.stderr, done.stderr
    assert not (tmp_path / "out" / "latest").exists()


def test_missing_pyspark_is_a_recall_error(monkeypatch):
    from recall.spark.session import require_pyspark

    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark now raises ImportError
    with pytest.raises(RecallError, match=r"pip install '\.\[spark\]'"):
        require_pyspark()


def test_spark_conf_parsing():
    from recall.spark.engine import parse_spark_conf, settings_of

    conf = parse_spark_conf(["spark.driver.memory=8g", " spark.a = b=c "])
    assert conf == {"spark.driver.memory": "8g", "spark.a": "b=c"}
    for bad in ("spark.driver.memory", "=8g", "spark.x="):
        with pytest.raises(RecallError, match="key=value"):
            parse_spark_conf([bad])
    settings = settings_of(load_config(REPO / "configs" / "default.toml"), "spark://h:7077", conf)
    assert settings.master == "spark://h:7077" and settings.conf == conf


def test_crowd_volume_mode_parity_with_a_widened_window(spark, tmp_path):
    """Votes of distinct engaged users, decayed, in a window widened to min_support: both engines alike."""
    off = [f"channels.{name}.enabled=false" for name in SPARK_CHANNELS if name != "crowd"]
    extra = [*off, "channels.crowd.rank_by='volume'", "channels.crowd.window_days=0.25",
             "channels.crowd.min_support=400", "channels.crowd.min_users=3", "channels.crowd.half_life_days=1.5",
             "filters.purchase.enabled=false", "filters.diversity.enabled=false", "candidates_per_user=12"]
    local, distributed = both_engines(spark, tie_dataset(5), tmp_path, extra)
    names = assert_same_runs(Path(local["published"]), Path(distributed["published"]))
    assert "hot/crowds.parquet" in names and "channels/crowd.parquet" in names
