"""Atomic publishing: a crash never exposes a partial run; one writer per output root."""

from __future__ import annotations

import os

import polars as pl
import pytest

from recall.errors import RecallError
from recall.publish import LATEST, SUCCESS, output_lock, publish, published_runs, resolve_run


def table(value: int) -> pl.DataFrame:
    return pl.DataFrame({"x": [value] * 3})


def test_publish_then_republish_replaces_atomically(tmp_path):
    with publish(tmp_path, "2024-01-02") as pub:
        pub.write_table("candidates.parquet", table(1))
    first = resolve_run(tmp_path, "2024-01-02").resolve()
    with publish(tmp_path, "2024-01-02") as pub:
        pub.write_table("candidates.parquet", table(2))
    run = resolve_run(tmp_path)
    assert pl.read_parquet(run / "candidates.parquet")["x"][0] == 2
    assert (run / SUCCESS).exists() and (run / "manifest.json").exists()
    assert not first.exists(), "the replaced version is cleaned up"
    assert os.readlink(tmp_path / LATEST) == "2024-01-02"


def test_crash_inside_run_leaves_previous_version_intact(tmp_path):
    with publish(tmp_path, "2024-01-02") as pub:
        pub.write_table("candidates.parquet", table(1))
    with pytest.raises(ZeroDivisionError):
        with publish(tmp_path, "2024-01-02") as pub:
            pub.write_table("candidates.parquet", table(2))
            1 / 0
    run = resolve_run(tmp_path, "2024-01-02")
    assert pl.read_parquet(run / "candidates.parquet")["x"][0] == 1
    assert len(list((tmp_path / ".runs").iterdir())) == 1, "the crashed version was removed"


def test_abandoned_version_from_killed_process_is_invisible_and_cleaned(tmp_path):
    with publish(tmp_path, "2024-01-02") as pub:
        pub.write_table("candidates.parquet", table(1))
    # What a SIGKILL mid-write leaves behind: a version folder without _SUCCESS and no link to it.
    orphan = tmp_path / ".runs" / "2024-01-02.99999999T000000000000"
    orphan.mkdir()
    (orphan / "candidates.parquet").write_bytes(b"half a file")
    assert published_runs(tmp_path) == ["2024-01-02"]
    with publish(tmp_path, "2024-01-03") as pub:
        pub.write_table("candidates.parquet", table(3))
    assert not orphan.exists()
    assert published_runs(tmp_path) == ["2024-01-02", "2024-01-03"]
    assert os.readlink(tmp_path / LATEST) == "2024-01-03"


def test_incremental_keeps_other_tables_and_manifest(tmp_path):
    with publish(tmp_path, "2024-01-02") as pub:
        pub.write_table("channels/a.parquet", table(1))
        pub.manifest["note"] = "first"
    with publish(tmp_path, "2024-01-02", incremental=True) as pub:
        pub.write_table("channels/b.parquet", table(2))
    run = resolve_run(tmp_path, "2024-01-02")
    assert pl.read_parquet(run / "channels" / "a.parquet")["x"][0] == 1
    assert pl.read_parquet(run / "channels" / "b.parquet")["x"][0] == 2
    import json

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["note"] == "first" and set(manifest["tables"]) == {"channels/a.parquet", "channels/b.parquet"}


def test_keep_runs_prunes_oldest_dates(tmp_path):
    for day in range(1, 6):
        with publish(tmp_path, f"2024-01-0{day}", keep_runs=3) as pub:
            pub.write_table("candidates.parquet", table(day))
    assert published_runs(tmp_path) == ["2024-01-03", "2024-01-04", "2024-01-05"]
    assert len(list((tmp_path / ".runs").iterdir())) == 3


def test_second_writer_is_refused_while_locked(tmp_path):
    with output_lock(tmp_path):
        with pytest.raises(RecallError, match="another recall run"):
            with publish(tmp_path, "2024-01-02"):
                pass


def test_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(RecallError, match="recall run"):
        resolve_run(tmp_path)


def test_unwritable_output_root_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RecallError, match="output"):
        with publish(blocker / "out", "2024-01-02"):
            pass
