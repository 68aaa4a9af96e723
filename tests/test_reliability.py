"""Reliability for cron: real ``recall run`` processes killed, starved of disk, locked out, and exit codes.

Faults are injected at named points with the test hook ``RECALL_FAULT_POINT``
(:func:`recall.publish.fault_point`); a run killed there dies of a real SIGKILL,
so nothing in the process (no ``finally``, no ``atexit``) gets to clean up. After
each fault we check what a ranker would see: every published link points at a
complete version whose tables read back, ``latest`` too, the previous version is
byte-for-byte unchanged, the lock is free, and the next run succeeds and removes
what the dead one left behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from recall.cli import app
from recall.io import write_dataset
from recall.publish import FAULT_ENV, LATEST, MANIFEST, RUNS, SUCCESS, SUPERSEDED
from recall.synth import synthesize

RECALL = Path(sys.executable).parent / "recall"
OLD, NEW = "2024-01-01", "2024-01-02"
CONFIG = """
seed = 1
candidates_per_user = 50
[channels.itemcf]
share = 0.8
top_k = 50
[channels.retarget]
quota = 10
strict = true
[filters]
reserve = 20
"""
runner = CliRunner()


@dataclass
class World:
    data: Path
    config: Path
    baseline: Path  # an output root with OLD published
    candidates: pl.DataFrame


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    base = tmp_path_factory.mktemp("world")
    write_dataset(synthesize(300, 200, 5, 11), base / "data")
    config = base / "config.toml"
    config.write_text(CONFIG)
    world = World(base / "data", config, base / "baseline", pl.DataFrame())
    result = invoke(world, world.baseline, OLD)
    assert result.exit_code == 0, result.output
    world.candidates = pl.read_parquet(world.baseline / OLD / "candidates.parquet")
    return world


def args(world: World, root: Path, date: str, *extra: str) -> list[str]:
    return ["run", "-c", str(world.config), "--data", str(world.data), "--out", str(root),
            "--run-date", date, *extra]


def invoke(world: World, root: Path, date: str, *extra: str, global_opts=()):
    """``recall run`` in this process (fast), returning typer's Result."""
    return runner.invoke(app, [*global_opts, *args(world, root, date, *extra)])


def spawn(argv: list[str], fault: str | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """A real ``recall`` process (a console script, as cron starts it)."""
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.Popen([str(RECALL), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=cwd)


def fresh_root(world: World, tmp_path: Path, name: str = "out") -> Path:
    root = tmp_path / name
    shutil.copytree(world.baseline, root, symlinks=True)
    return root


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def check_published(root: Path) -> dict[str, Path]:
    """What readers see is complete: every link's version has _SUCCESS and tables matching its manifest.

    Returns run date -> version folder.
    """
    published = {}
    for entry in root.iterdir():
        if entry.name in (".lock", RUNS):
            continue
        assert entry.is_symlink(), f"{entry} is visible under the root but is not a published link"
        assert not entry.name.startswith("."), f"leftover temporary link {entry}"
        if entry.name == LATEST:
            continue
        version = entry.resolve()
        assert (version / SUCCESS).exists(), f"{entry} points at an incomplete version"
        manifest = json.loads((version / MANIFEST).read_text())
        for table, rows in manifest["tables"].items():
            assert pl.read_parquet(version / table).height == rows, table
        published[entry.name] = version
    latest = root / LATEST
    assert latest.is_symlink() and os.readlink(latest) in published, "latest must point at a published date"
    return published


def unlinked_versions(root: Path, published: dict[str, Path]) -> set[Path]:
    return {v for v in (root / RUNS).iterdir() if v not in set(published.values())}


def lock_is_free(root: Path) -> bool:
    with open(root / ".lock") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
    return True


# ---------------------------------------------------------------- SIGKILL at each point

BEFORE_LINK = ("lock:acquired", "channel:itemcf", "channel:retarget", "merge", "publish:write",
               "publish:before-link")
FAST = [("channel:itemcf", OLD), ("merge", NEW), ("publish:write", OLD), ("publish:before-link", OLD),
        ("publish:after-link", OLD), ("publish:after-link", NEW)]
SLOW = [("lock:acquired", OLD), ("channel:retarget", NEW), ("merge", OLD), ("publish:write", NEW),
        ("publish:before-link", NEW), ("publish:before-cleanup", OLD), ("publish:before-cleanup", NEW)]


@dataclass
class Killed:
    root: Path
    returncode: int
    stderr: str
    old_version: Path
    old_snapshot: dict[str, str]


def kill_runs(world: World, base: Path, scenarios) -> dict[tuple[str, str], Killed]:
    """Start one killed run per scenario, all at once (they are independent roots), and wait."""
    started = {}
    for point, date in scenarios:
        root = fresh_root(world, base, f"{point.replace(':', '-')}-{date}")
        old = (root / OLD).resolve()
        started[(point, date)] = (root, old, snapshot(old), spawn(args(world, root, date), fault=point))
    killed = {}
    for key, (root, old, snap, proc) in started.items():
        _, stderr = proc.communicate(timeout=120)
        killed[key] = Killed(root, proc.returncode, stderr, old, snap)
    return killed


@pytest.fixture(scope="module")
def killed(world, tmp_path_factory):
    return kill_runs(world, tmp_path_factory.mktemp("killed"), FAST)


def check_after_kill(world: World, point: str, date: str, k: Killed) -> None:
    assert k.returncode == -signal.SIGKILL, f"the run was not killed at {point}: {k.stderr}"
    published = check_published(k.root)
    assert snapshot(k.old_version) == k.old_snapshot, "the previous version changed"
    if point in BEFORE_LINK:
        assert published == {OLD: k.old_version} and os.readlink(k.root / LATEST) == OLD
    else:  # the new version was published before the kill: complete, and latest still consistent
        assert published[date] != k.old_version
        assert pl.read_parquet(published[date] / "candidates.parquet").equals(world.candidates)
    leftovers = unlinked_versions(k.root, published)
    if point == "publish:write":
        assert any(not (v / SUCCESS).exists() for v in leftovers), "the kill was meant to hit a partial version"
    if point == "publish:before-link":
        assert any((v / SUCCESS).exists() for v in leftovers), "a complete but unpublished version is invisible"
    assert lock_is_free(k.root), "the kernel released the dead process's lock"

    result = invoke(world, k.root, date)  # on_lock = "fail": a stale lock would make this exit 1
    assert result.exit_code == 0, result.output
    published = check_published(k.root)
    assert pl.read_parquet(published[date] / "candidates.parquet").equals(world.candidates)
    for version in leftovers:
        assert not version.exists(), f"{version} left by the killed run was not cleaned"
    for version in unlinked_versions(k.root, published):
        assert (version / SUPERSEDED).exists(), f"{version} is neither published nor a superseded version"


@pytest.mark.parametrize("point,date", FAST, ids=[f"{p}-{'same' if d == OLD else 'new'}-date" for p, d in FAST])
def test_sigkill_leaves_published_runs_intact_and_next_run_recovers(world, killed, point, date):
    check_after_kill(world, point, date, killed[(point, date)])


@pytest.mark.slow
@pytest.mark.parametrize("point,date", SLOW, ids=[f"{p}-{'same' if d == OLD else 'new'}-date" for p, d in SLOW])
def test_sigkill_more_points(world, tmp_path, point, date):
    check_after_kill(world, point, date, kill_runs(world, tmp_path, [(point, date)])[(point, date)])


# ---------------------------------------------------------------- concurrency
# The first run is held at a fault point until the test creates a release file,
# so the tests do not depend on how fast a loaded machine starts processes.

def wait_for_holder(root: Path, pid: int, timeout: float = 60.0) -> None:
    """Until the process ``pid`` has written itself into the lock file (it then holds the lock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads((root / ".lock").read_text())["pid"] == pid:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    raise AssertionError("the first run never took the lock")


def json_events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def read_until_event(proc: subprocess.Popen, name: str, timeout: float = 60.0) -> list[str]:
    """Lines of ``proc``'s stderr up to the JSON event ``name``."""
    lines: queue.Queue = queue.Queue()
    seen = []

    def pump():
        for line in proc.stderr:
            lines.put(line)
            if json.loads(line)["event"] == name:
                return
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    while True:
        line = lines.get(timeout=timeout)
        assert line is not None, f"the process ended without '{name}': {seen}"
        seen.append(line)
        if json.loads(line)["event"] == name:
            return seen


def test_second_run_fails_fast_or_gives_up_and_a_killed_holder_does_not_block(world, tmp_path):
    """fail mode: exit 1 at once, naming the holder; wait mode: exit 1 after the timeout; then the
    holder is SIGKILLed from outside (the OOM killer's view) and its lock must not block the next run."""
    root = fresh_root(world, tmp_path)
    holder = spawn(args(world, root, NEW), fault=f"lock:acquired:until={tmp_path / 'never'}")
    wait_for_holder(root, holder.pid)
    second = spawn(args(world, root, NEW))
    _, stderr = second.communicate(timeout=60)
    assert holder.poll() is None, "the second run must fail while the first still holds the lock"
    assert second.returncode == 1
    assert "another recall run" in stderr and f"pid {holder.pid}" in stderr and str(root) in stderr
    assert "Traceback" not in stderr

    started = time.monotonic()
    result = invoke(world, root, NEW, "--set", "output.on_lock=wait", "--set", "output.lock_timeout_seconds=0.5")
    assert result.exit_code == 1 and time.monotonic() - started >= 0.5
    assert "gave up after waiting 0.5 s" in result.output and f"pid {holder.pid}" in result.output

    assert not lock_is_free(root)
    holder.kill()
    holder.wait(timeout=10)
    assert lock_is_free(root)
    assert invoke(world, root, NEW).exit_code == 0
    assert set(check_published(root)) == {OLD, NEW}


def test_second_run_waits_and_runs_never_interleave(world, tmp_path):
    """The holder stops after writing its first table; the waiter must not touch the root until it has published."""
    root, go = fresh_root(world, tmp_path), tmp_path / "go"
    holder = spawn(["--log-format", "json", *args(world, root, OLD)], fault=f"publish:write:until={go}")
    wait_for_holder(root, holder.pid)
    waiter = spawn(["--log-format", "json", *args(world, root, OLD, "--set", "output.on_lock=wait",
                                                    "--set", "output.lock_timeout_seconds=60")])
    early = read_until_event(waiter, "lock.waiting")
    assert str(holder.pid) in json.loads(early[-1])["message"]
    partial = [v for v in (root / RUNS).iterdir() if not (v / SUCCESS).exists()]
    assert len(partial) == 1, "the holder is mid-publish: one partial version"
    go.touch()
    _, holder_err = holder.communicate(timeout=60)
    _, waiter_err = waiter.communicate(timeout=60)
    assert holder.returncode == 0 and waiter.returncode == 0, (holder_err, waiter_err)
    holder_events, waiter_events = json_events(holder_err), json_events("".join(early) + waiter_err)
    holder_done = next(e["ts"] for e in holder_events if e["event"] == "step.done" and e["fields"]["step"] == "publish")
    acquired = next(e["ts"] for e in waiter_events if e["event"] == "lock.acquired")
    assert acquired >= holder_done, "the waiter got the lock while the holder was still publishing"
    assert [e["event"] for e in waiter_events[:2]] == ["lock.waiting", "lock.acquired"]
    published = check_published(root)
    holder_version = next(e["fields"]["version"] for e in holder_events if e["event"] == "run.published")
    waiter_version = next(e["fields"]["version"] for e in waiter_events if e["event"] == "run.published")
    assert published[OLD].name == waiter_version, "the later run is the published one"
    holder_version = root / RUNS / holder_version
    assert (holder_version / SUCCESS).exists() and (holder_version / SUPERSEDED).exists()
    for version in (published[OLD], holder_version):  # each complete, none mixed
        manifest = json.loads((version / MANIFEST).read_text())
        assert {str(p.relative_to(version)) for p in version.rglob("*.parquet")} == set(manifest["tables"])
        assert pl.read_parquet(version / "candidates.parquet").equals(world.candidates)


# ---------------------------------------------------------------- full disk, unwritable output

@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs mounted for the test (needs root or CAP_SYS_ADMIN; skipped otherwise)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); "
                    "the ENOSPC path is still covered by the monkeypatched and fault-hook tests")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path, leave_bytes: int) -> Path:
    """Fill the filesystem of ``folder`` until about ``leave_bytes`` are free."""
    stat = os.statvfs(folder)
    filler = folder / "filler"
    filler.write_bytes(b"\0" * max(stat.f_bavail * stat.f_frsize - leave_bytes, 0))
    return filler


def test_full_disk_is_a_clear_error_and_the_previous_run_survives(world, tmpfs):
    root = tmpfs / "out"
    assert invoke(world, root, OLD).exit_code == 0
    old = (root / OLD).resolve()
    before = snapshot(old)
    filler = fill(tmpfs, 40_000)
    result = invoke(world, root, NEW)
    assert result.exit_code == 1, result.output
    assert "error: no space left under" in result.output and "Traceback" not in result.output
    assert snapshot(old) == before and check_published(root) == {OLD: old}
    assert list((root / RUNS).iterdir()) == [old], "the partial version was removed"
    filler.unlink()
    assert invoke(world, root, NEW).exit_code == 0
    assert set(check_published(root)) == {OLD, NEW}


def test_read_only_output_is_a_clear_error_and_the_previous_run_survives(world, tmpfs):
    root = tmpfs / "out"
    assert invoke(world, root, OLD).exit_code == 0
    before = snapshot((root / OLD).resolve())
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    result = invoke(world, root, NEW)
    assert result.exit_code == 1
    assert "cannot write to output folder" in result.output and "Read-only file system" in result.output
    assert snapshot((root / OLD).resolve()) == before and set(check_published(root)) == {OLD}


def test_output_root_under_a_regular_file_is_a_clear_error(world, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = invoke(world, tmp_path / "file" / "out", OLD)
    assert result.exit_code == 1 and "cannot write to output folder" in result.output


def test_no_space_from_the_parquet_writer_is_a_clear_error(world, tmp_path, monkeypatch):
    """polars reports ENOSPC as a ComputeError mentioning 'os error 28'; it must not become exit 2."""
    root = fresh_root(world, tmp_path)
    before = snapshot((root / OLD).resolve())
    writes = []

    def full(self, path, *a, **kw):
        writes.append(path)
        if len(writes) == 2:  # after one table is in place: a partial version exists
            raise pl.exceptions.ComputeError("parquet: underlying IO error: No space left on device (os error 28)")
        return original(self, path, *a, **kw)

    original = pl.DataFrame.write_parquet
    monkeypatch.setattr(pl.DataFrame, "write_parquet", full)
    result = invoke(world, root, OLD)
    assert result.exit_code == 1 and "no space left" in result.output, result.output
    assert snapshot((root / OLD).resolve()) == before
    assert len(list((root / RUNS).iterdir())) == 1


# ---------------------------------------------------------------- exit codes, quiet, JSON logs

def test_internal_error_exits_2_with_one_line_and_a_traceback_file(world, tmp_path, monkeypatch):
    root = fresh_root(world, tmp_path)
    monkeypatch.setenv(FAULT_ENV, "merge:raise")
    result = invoke(world, root, NEW)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("internal error: RuntimeError: fault injected at merge (traceback written to ")
    assert "Traceback" not in result.output
    path = Path(lines[-1].split("traceback written to ")[1].split(";")[0])
    text = path.read_text()
    assert "Traceback" in text and "fault_point" in text
    path.unlink()
    assert set(check_published(root)) == {OLD}

    debug = invoke(world, root, NEW, global_opts=["--debug"])
    assert debug.exit_code == 2 and "Traceback" in debug.stderr
    Path(debug.stderr.split("traceback written to ")[1].split(";")[0]).unlink()


def test_exit_codes_of_the_installed_command(world, tmp_path):
    """0 success, 1 user error (a full disk, a command-line typo), 2 internal error: through main(), as cron sees them."""
    root, full = fresh_root(world, tmp_path), fresh_root(world, tmp_path, "full")
    procs = {
        "ok": spawn(["-q", *args(world, root, NEW)]),
        "full": spawn(["-q", *args(world, full, NEW)], fault="publish:write:enospc"),
        "typo": spawn(["run", "--no-such-option"]),
        "bug": spawn(["-q", *args(world, tmp_path / "other", NEW)], fault="channel:itemcf:raise"),
    }
    outs = {name: proc.communicate(timeout=60) for name, proc in procs.items()}
    assert {name: proc.returncode for name, proc in procs.items()} == {"ok": 0, "full": 1, "typo": 1, "bug": 2}, outs
    assert outs["ok"] == ("", ""), "--quiet prints nothing on success"
    assert outs["full"][1].startswith("error: no space left under") and "Traceback" not in outs["full"][1]
    assert set(check_published(full)) == {OLD} and len(list((full / RUNS).iterdir())) == 1
    assert "No such option" in outs["typo"][1]
    outs = {2: outs["bug"]}
    assert outs[2][0] == "" and outs[2][1].startswith("internal error: RuntimeError") and "Traceback" not in outs[2][1]
    Path(outs[2][1].split("traceback written to ")[1].split(";")[0]).unlink()


def test_quiet_shows_only_errors(world, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(world.data, data)
    events = pl.read_parquet(data / "events.parquet")
    pl.concat([events, events.head(3)]).write_parquet(data / "events.parquet")  # 3 exact duplicates
    loud = runner.invoke(app, ["run", "-c", str(world.config), "--data", str(data), "--out", str(tmp_path / "a")])
    assert loud.exit_code == 0
    assert "dropped 3 exact duplicate event row(s)" in loud.stderr and "published under" in loud.stdout
    quiet = runner.invoke(app, ["--quiet", "run", "-c", str(world.config), "--data", str(data),
                                "--out", str(tmp_path / "b")])
    assert quiet.exit_code == 0 and quiet.output == ""
    failed = runner.invoke(app, ["--quiet", "run", "-c", str(world.config), "--data", str(tmp_path / "none")])
    assert failed.exit_code == 1 and failed.stderr.startswith("error: data folder") and failed.stdout == ""


def test_json_logs_are_one_object_per_line(world, tmp_path, monkeypatch):
    root = fresh_root(world, tmp_path)
    ok = invoke(world, root, NEW, global_opts=["--log-format", "json"])
    assert ok.exit_code == 0
    events = json_events(ok.stderr)
    assert all(set(e) == {"ts", "level", "event", "message", "fields"} for e in events)
    steps = [e["fields"]["step"] for e in events if e["event"] == "step.done"]
    # Channels are fitted in parallel threads (run.workers): they finish in either order.
    assert steps[0] == "load data" and set(steps[1:3]) == {"fit itemcf", "fit retarget"}
    assert steps[3:] == ["purchase blocks", "recommend, merge and filter", "publish"]
    published = [e for e in events if e["event"] == "run.published"]
    assert len(published) == 1 and published[0]["fields"]["run_date"] == NEW
    assert published[0]["fields"]["rows"] == world.candidates.height

    user = runner.invoke(app, ["--log-format", "json", "run", "--data", str(tmp_path / "none")])
    (line,) = json_events(user.stderr)
    assert user.exit_code == 1 and line["level"] == "error" and line["event"] == "error"
    assert line["fields"] == {"exit_code": 1} and "does not exist" in line["message"]

    monkeypatch.setenv(FAULT_ENV, "merge:raise")
    bug = invoke(world, root, NEW, global_opts=["--log-format", "json"])
    last = json_events(bug.stderr)[-1]
    assert bug.exit_code == 2 and last["event"] == "internal_error" and last["fields"]["error_type"] == "RuntimeError"
    Path(last["fields"]["traceback_file"]).unlink()


def test_optional_channel_failure_is_recorded_and_the_run_published(world, tmp_path, monkeypatch):
    root = fresh_root(world, tmp_path)
    monkeypatch.setenv(FAULT_ENV, "channel:retarget:raise")
    result = invoke(world, root, NEW, "--set", 'run.optional_channels=["retarget"]', global_opts=["--quiet"])
    assert result.exit_code == 0
    assert result.stdout == "" and result.stderr.startswith("error: optional channel 'retarget' failed")
    run = check_published(root)[NEW]
    manifest = json.loads((run / MANIFEST).read_text())
    assert manifest["status"] == "degraded"
    (failure,) = manifest["failures"]
    assert failure["part"] == "channel:retarget" and failure["error_type"] == "RuntimeError"
    assert "fault injected at channel:retarget" in failure["message"] and "Traceback" in failure["traceback"]
    assert not (run / "channels" / "retarget.parquet").exists()
    assert pl.read_parquet(run / "candidates.parquet")["source"].unique().to_list() == ["itemcf"]

    required = invoke(world, root, "2024-01-03")  # the same failure in a required channel fails the run
    assert required.exit_code == 2 and "2024-01-03" not in check_published(root)
    Path(required.stderr.split("traceback written to ")[1].split(";")[0]).unlink()

    monkeypatch.setenv(FAULT_ENV, "channel:retarget:raise,channel:itemcf:raise")
    every = invoke(world, root, "2024-01-03", "--set", 'run.optional_channels=["retarget", "itemcf"]')
    assert every.exit_code == 1 and "every enabled channel failed" in every.stderr


def test_complete_run_says_so_in_the_manifest(world):
    manifest = json.loads(((world.baseline / OLD) / MANIFEST).read_text())
    assert manifest["status"] == "complete" and manifest["failures"] == []


def test_unknown_optional_channel_is_a_config_error(world, tmp_path):
    result = invoke(world, tmp_path / "out", OLD, "--set", 'run.optional_channels=["nosuch"]')
    assert result.exit_code == 1 and "run.optional_channels: unknown channel 'nosuch'" in result.stderr
