"""User shards: the stable hash, and a sharded run publishing exactly the unsharded run's rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.dataset as pads
import pytest

from recall import schema as S
from recall.config import load_config
from recall.io import write_dataset
from recall.pipeline import merge_published, run
from recall.query import user_candidates
from recall.shards import fnv1a64, shard_of, splitmix64, user_shards
from recall.synth import synthesize
from tests.conftest import REPO

MASK = (1 << 64) - 1


def splitmix64_oracle(x: int) -> int:
    """The published splitmix64 finaliser, in Python integers."""
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def fnv1a64_oracle(text: str) -> int:
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001B3) & MASK
    return h


def test_hashes_equal_the_published_definitions():
    ints = [0, 1, 2, 12345, -1, -(2**63), 2**63 - 1, 987654321012]
    got = splitmix64(np.array(ints, dtype=np.int64))
    assert [int(v) for v in got] == [splitmix64_oracle(x & MASK) for x in ints]
    texts = ["", "a", "user-42", "ünïcödé", "x" * 300, "9"]
    assert [int(v) for v in fnv1a64(pl.Series(texts))] == [fnv1a64_oracle(t) for t in texts]
    assert fnv1a64_oracle("a") == 0xAF63DC4C8601EC8C  # the FNV-1a 64 test vector


def test_shards_are_stable_balanced_and_a_partition():
    ids = pl.Series(np.arange(100_000, dtype=np.int64) * 7)
    shard = shard_of(ids, 8)
    # Pinned values: a user must stay in its shard across versions and machines.
    assert shard[:8].tolist() == [splitmix64_oracle(7 * i) % 8 for i in range(8)]
    counts = np.bincount(shard, minlength=8)
    assert counts.min() > 0.95 * 12_500 and counts.max() < 1.05 * 12_500
    parts = user_shards(ids, 8)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(ids.len()))
    assert all(np.all(np.diff(p) > 0) for p in parts) and all((shard[p] == k).all() for k, p in enumerate(parts))
    strings = pl.Series([f"u{i}" for i in range(20_000)])
    counts = np.bincount(shard_of(strings, 4), minlength=4)
    assert counts.min() > 0.93 * 5000 and counts.max() < 1.07 * 5000
    assert user_shards(ids, 1) == [None]


def read_table(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path, hive_partitioning=False)


def sorted_rows(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(S.USER, S.RANK, S.ITEM)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One synthetic log run unsharded and in 3 shards (every default channel that runs in seconds)."""
    tmp = tmp_path_factory.mktemp("shards")
    write_dataset(synthesize(400, 150, 5, 4), tmp / "data")
    slow = ["deepwalk", "node2vec", "eges", "ges"]
    common = [f'data.dir="{tmp / "data"}"', *[f"channels.{n}.enabled=false" for n in slow],
              "channels.item2vec.epochs=1"]
    results = {}
    for shards in (1, 3):
        cfg = load_config(REPO / "configs" / "default.toml",
                          [*common, f'output.root="{tmp / f"out{shards}"}"', f"run.shards={shards}"])
        results[shards] = (cfg, run(cfg))
    return results


def test_sharded_run_publishes_the_same_rows(runs):
    (_, whole), (_, sharded) = runs[1], runs[3]
    whole_dir, sharded_dir = Path(whole["published"]), Path(sharded["published"])
    names = sorted(str(p.relative_to(whole_dir / "channels")) for p in (whole_dir / "channels").glob("*.parquet"))
    assert len(names) >= 5
    for name in names:
        assert (sharded_dir / "channels" / name).is_dir()
        assert sorted_rows(read_table(sharded_dir / "channels" / name)).equals(
            sorted_rows(read_table(whole_dir / "channels" / name))), name
    candidates = sorted_rows(read_table(sharded_dir / "candidates.parquet"))
    assert candidates.equals(sorted_rows(read_table(whole_dir / "candidates.parquet")))
    for i2i in (whole_dir / "i2i").glob("*.parquet"):  # user-independent tables stay single files
        assert read_table(sharded_dir / "i2i" / i2i.name).equals(read_table(i2i))
    whole_manifest = json.loads((whole_dir / "manifest.json").read_text())
    manifest = json.loads((sharded_dir / "manifest.json").read_text())
    assert manifest["filters_removed"] == whole_manifest["filters_removed"]
    assert manifest["filters_removed"]["purchase"] > 0  # the shared purchase blocks really applied
    assert manifest["tables"] == whole_manifest["tables"]
    assert manifest["shards"] == 3 and whole_manifest["shards"] == 1
    assert {k: v for k, v in sharded["candidates"].items()} == whole["candidates"]
    assert {n: {k: v for k, v in r.items() if k != "seconds"} for n, r in sharded["channels"].items()} == \
           {n: {k: v for k, v in r.items() if k != "seconds"} for n, r in whole["channels"].items()}
    # Every stage was measured, and each shard recommended once per channel.
    assert manifest["stages"]["recommend itemcf"]["times"] == 3
    assert manifest["stages"]["load data"]["peak_rss_mib"] > 50 and manifest["peak_rss_mib"] > 50


def test_shard_folders_hold_their_users_and_read_as_one_dataset(runs):
    cfg, sharded = runs[3]
    folder = Path(sharded["published"]) / "candidates.parquet"
    assert sorted(p.name for p in folder.iterdir()) == ["shard=0", "shard=1", "shard=2"]
    for k in range(3):
        part = read_table(folder / f"shard={k}" / "part-0.parquet")
        assert (shard_of(part[S.USER], 3) == k).all()
    by_polars = pl.read_parquet(folder)  # hive partitioning adds the shard column
    by_arrow = pl.from_arrow(pads.dataset(folder, partitioning="hive").to_table())
    assert by_polars.height == by_arrow.height == sharded["candidates"]["rows"]
    assert set(by_polars["shard"].unique()) == {0, 1, 2}
    user = str(by_polars[S.USER][0])
    assert user_candidates(Path(cfg.output.root), None, user, 5).height > 0


def test_merge_of_a_sharded_run_is_the_run_merge(runs):
    cfg, sharded = runs[3]
    before = sorted_rows(read_table(Path(sharded["published"]) / "candidates.parquet"))
    again = merge_published(cfg)
    after = sorted_rows(read_table(Path(again["published"]) / "candidates.parquet"))
    assert after.equals(before)
    assert again["candidates"]["rows"] == before.height


def test_build_of_one_channel_writes_the_same_shards(runs):
    from recall.pipeline import build

    cfg, sharded = runs[3]
    before = sorted_rows(read_table(Path(sharded["published"]) / "channels" / "itemcf.parquet"))
    result = build(cfg, "itemcf")
    folder = Path(result["published"]) / "channels" / "itemcf.parquet"
    assert sorted(p.name for p in folder.iterdir()) == ["shard=0", "shard=1", "shard=2"]
    assert sorted_rows(read_table(folder)).equals(before)
    assert result["channels"]["itemcf"]["rows"] == before.height
