"""Atomic publishing: a crash never exposes a partial run; one writer per output root."""

from __future__ import annotations

import errno
import os
import re
import threading
import time

import polars as pl
import pytest

from recall.errors import RecallError
from recall.publish import (
    FAULT_ENV,
    LATEST,
    SUCCESS,
    SUPERSEDED,
    fault_point,
    lock_holder,
    output_lock,
    publish,
    published_runs,
    resolve_run,
    write_parquet_atomic,
)


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


def test_incremental_rewrite_leaves_the_previous_version_untouched(tmp_path):
    """Incremental versions start as hard links: rewriting a table must not write through the link."""
    with publish(tmp_path, "2024-01-02") as pub:
        pub.write_table("channels/a.parquet", table(1))
        pub.write_table("candidates.parquet", table(5))
    before = resolve_run(tmp_path, "2024-01-02")
    with publish(tmp_path, "2024-01-02", incremental=True, grace_seconds=60) as pub:
        pub.write_table("channels/a.parquet", table(2))
        pub.write_shard("candidates.parquet", 0, table(6))  # a file becomes a shard folder
        pub.write_shard("candidates.parquet", 1, table(7))
    after = resolve_run(tmp_path, "2024-01-02")
    assert after != before
    assert pl.read_parquet(before / "channels" / "a.parquet")["x"][0] == 1, "the old version was changed in place"
    assert pl.read_parquet(before / "candidates.parquet")["x"][0] == 5
    assert pl.read_parquet(after / "channels" / "a.parquet")["x"][0] == 2
    assert sorted(pl.read_parquet(after / "candidates.parquet", hive_partitioning=False)["x"]) == [6] * 3 + [7] * 3
    import json

    assert json.loads((after / "manifest.json").read_text())["tables"]["candidates.parquet"] == 6


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


# ---------------------------------------------------------------- readers, locks, write failures (issue 7)

def test_superseded_version_stays_readable_for_the_grace_period(tmp_path):
    """A ranker that resolved the date before a re-run keeps reading a complete, unchanged version."""
    with publish(tmp_path, "2024-01-02") as pub:
        pub.write_table("candidates.parquet", table(1))
        pub.write_table("channels/a.parquet", table(1))
    reader = resolve_run(tmp_path, "2024-01-02")
    assert reader == (tmp_path / "2024-01-02").resolve() and reader.parent.name == ".runs"
    with publish(tmp_path, "2024-01-02", grace_seconds=600) as pub:
        pub.write_table("candidates.parquet", table(2))
    assert pl.read_parquet(reader / "candidates.parquet")["x"][0] == 1
    assert pl.read_parquet(reader / "channels" / "a.parquet")["x"][0] == 1
    assert (reader / SUPERSEDED).exists()
    with publish(tmp_path, "2024-01-03", grace_seconds=600) as pub:
        pub.write_table("candidates.parquet", table(3))
    assert reader.exists(), "kept while younger than the grace period"
    with publish(tmp_path, "2024-01-04", grace_seconds=0) as pub:
        pub.write_table("candidates.parquet", table(4))
    assert not reader.exists(), "removed once the grace period is over"
    assert published_runs(tmp_path) == ["2024-01-02", "2024-01-03", "2024-01-04"]


def test_wait_mode_times_out_naming_the_holder(tmp_path):
    with output_lock(tmp_path):
        started = time.monotonic()
        with pytest.raises(RecallError, match=r"gave up after waiting 0.2 s") as info:
            with output_lock(tmp_path, "wait", timeout_seconds=0.2, poll_seconds=0.02):
                pass
        assert time.monotonic() - started >= 0.2
    assert f"pid {os.getpid()}" in str(info.value) and str(tmp_path) in str(info.value)
    assert lock_holder(tmp_path).startswith(f"pid {os.getpid()} on ")


def test_wait_mode_gets_the_lock_when_the_holder_releases_it(tmp_path):
    held, order = threading.Event(), []

    def holder():
        with output_lock(tmp_path):
            held.set()
            time.sleep(0.3)
            order.append("holder done")

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait()
    with output_lock(tmp_path, "wait", timeout_seconds=30, poll_seconds=0.02):
        order.append("waiter in")
    thread.join()
    assert order == ["holder done", "waiter in"]


def test_fail_mode_message_names_the_holder(tmp_path):
    with output_lock(tmp_path):
        with pytest.raises(RecallError, match=f"pid {os.getpid()} on .* is writing to '{tmp_path}'"):
            with output_lock(tmp_path, "fail"):
                pass


def test_stale_temporary_link_from_a_killed_writer_is_removed(tmp_path):
    with publish(tmp_path, "2024-01-02") as pub:
        pub.write_table("candidates.parquet", table(1))
    os.symlink("2024-01-02", tmp_path / ".latest.99999.link")  # died between symlink() and rename()
    with publish(tmp_path, "2024-01-03") as pub:
        pub.write_table("candidates.parquet", table(3))
    assert not (tmp_path / ".latest.99999.link").is_symlink()


@pytest.mark.parametrize("name", ["2024-01-02", "latest"])
def test_real_folder_where_a_link_belongs_is_refused_before_any_work(tmp_path, name):
    (tmp_path / name).mkdir()
    with pytest.raises(RecallError, match="not a published-run link"):
        with publish(tmp_path, "2024-01-02"):
            pytest.fail("the block must not run")
    assert not (tmp_path / ".runs").exists() or not any((tmp_path / ".runs").iterdir())


@pytest.mark.parametrize("code,message", [(errno.ENOSPC, "no space left under"),
                                          (errno.EACCES, "is not writable"),
                                          (errno.EIO, "failed (Input/output error)")])
def test_write_failures_become_clear_errors_and_leave_the_previous_run(tmp_path, code, message):
    with publish(tmp_path, "2024-01-02") as pub:
        pub.write_table("candidates.parquet", table(1))
    with pytest.raises(RecallError, match=re.escape(message)):
        with publish(tmp_path, "2024-01-02") as pub:
            pub.write_table("channels/a.parquet", table(2))
            raise OSError(code, os.strerror(code))
    assert pl.read_parquet(resolve_run(tmp_path) / "candidates.parquet")["x"][0] == 1
    assert len(list((tmp_path / ".runs").iterdir())) == 1


def test_polars_io_errors_are_raised_as_os_errors(tmp_path, monkeypatch):
    """polars wraps ENOSPC in a ComputeError; publishing needs the OSError to explain it."""
    def full(self, path, *args, **kwargs):
        raise pl.exceptions.ComputeError("parquet: underlying IO error: No space left on device (os error 28)")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full)
    with pytest.raises(OSError) as info:
        write_parquet_atomic(table(1), tmp_path / "t.parquet")
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == [], "no temporary file left"

    def broken(self, path, *args, **kwargs):
        raise pl.exceptions.ComputeError("a real bug")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", broken)
    with pytest.raises(pl.exceptions.ComputeError, match="a real bug"):
        write_parquet_atomic(table(1), tmp_path / "t.parquet")


def test_fault_point_hook(monkeypatch):
    fault_point("merge")  # unset: nothing happens
    monkeypatch.setenv(FAULT_ENV, "channel:itemcf:raise, publish:write:enospc,merge:sleep=0.01")
    with pytest.raises(RuntimeError, match="fault injected at channel:itemcf"):
        fault_point("channel:itemcf")
    with pytest.raises(OSError) as info:
        fault_point("publish:write")
    assert info.value.errno == errno.ENOSPC
    started = time.monotonic()
    fault_point("merge")
    assert time.monotonic() - started >= 0.01
    fault_point("channel:retarget")  # not named: nothing happens
