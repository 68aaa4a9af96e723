"""Channels fitted and recommended in parallel threads (``run.workers``) give the tables of one at a time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import polars as pl
import pytest

from recall import schema as S
from recall.config import load_config
from recall.context import TrainData
from recall.io import write_dataset
from recall.pipeline import run
from recall.threads import in_threads
from recall.synth import synthesize
from tests.conftest import REPO

EVERY_CHANNEL = ["swing", "ges", "youtubednn", "mind"]  # the ones default.toml leaves off


def published_tables(folder: Path) -> dict[str, pl.DataFrame]:
    return {str(path.relative_to(folder)): pl.read_parquet(path, hive_partitioning=False)
            for path in sorted(folder.rglob("*.parquet")) if path.is_file()}


def test_every_channel_publishes_the_same_tables_at_any_number_of_workers(tmp_path):
    write_dataset(synthesize(300, 120, 5, 4), tmp_path / "data")
    quick = [f"channels.{n}.epochs=1" for n in ("item2vec", "deepwalk", "node2vec", "eges", "ges",
                                               "youtubednn", "mind")]
    common = [f'data.dir="{tmp_path / "data"}"', *[f"channels.{n}.enabled=true" for n in EVERY_CHANNEL], *quick]
    published = {}
    for workers in (1, 3):
        cfg = load_config(REPO / "configs" / "default.toml",
                          [*common, f'output.root="{tmp_path / f"out{workers}"}"', f"run.workers={workers}"])
        published[workers] = Path(run(cfg)["published"])
    one, three = published_tables(published[1]), published_tables(published[3])
    assert one.keys() == three.keys()
    assert {f"channels/{n}.parquet" for n in EVERY_CHANNEL} <= one.keys()
    for name, table in one.items():
        assert three[name].equals(table), name
    assert one["candidates.parquet"][S.USER].n_unique() > 100


def test_in_threads_keeps_the_key_order_and_raises_the_first_failure():
    def work(key: int) -> int:
        time.sleep(0.01 * (5 - key))  # higher keys finish first: completion order is not key order
        return key * key

    assert list(in_threads(work, [4, 1, 3, 0, 2], 3).items()) == [(4, 16), (1, 1), (3, 9), (0, 0), (2, 4)]

    def fails(key: int) -> int:
        if key == 1:
            raise ValueError("key 1")
        time.sleep(0.05)
        return key

    with pytest.raises(ValueError, match="key 1"):
        in_threads(fails, [0, 1, 2, 3, 4, 5, 6, 7], 2)


def test_shared_values_are_built_once_for_callers_racing_for_them(tiny_dataset):
    train = TrainData.build(tiny_dataset)
    builds, gate = [], threading.Barrier(4)

    def build():
        builds.append(1)
        time.sleep(0.05)  # the other callers arrive while this build runs
        return object()

    def ask(_):
        gate.wait()
        return train.shared("value", build)

    values = in_threads(ask, list(range(4)), 4)
    assert len(builds) == 1 and len({id(v) for v in values.values()}) == 1
    assert train.trigger_matrix is train.trigger_matrix  # the built-in shared values too
