"""Publishing outputs so a reader never sees a half-written run, and one writer per output root.

Layout under the output root::

    <root>/.lock                       one writer at a time (flock); holds the writer's pid and start time
    <root>/.runs/<date>.<stamp>/       immutable run versions, each ending with _SUCCESS
    <root>/<date> -> .runs/<date>.<stamp>   what rankers read
    <root>/latest -> <date>

A run is written into a fresh version folder, finished with ``manifest.json`` and
``_SUCCESS``, and then published by atomically replacing the ``<date>`` symlink
(``rename(2)`` of a new link over the old one); ``latest`` moves after that. A
crash at any point leaves the previously published version untouched: before the
rename nothing points at the new folder, after it the new folder is complete.
Folders no link points at are removed by the next writer (it holds the lock, so
their writer is gone). A version superseded by a re-run of the same date is kept
``grace_seconds`` longer, so a reader that resolved the old link can finish.
Incremental steps (``recall build``, ``recall merge``) start their version from
hard links to the current one, so they publish atomically too.

The lock is an advisory ``flock(2)`` on ``<root>/.lock``: the kernel releases it
when the holder exits, however it dies, so a crashed run never blocks the next
one. A second writer fails at once or waits up to a timeout (``output.on_lock``).
Readers take no lock: they resolve ``<date>`` (or ``latest``) once and read from
that version folder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import polars as pl

from recall.errors import RecallError
from recall.logs import event

SUCCESS = "_SUCCESS"
MANIFEST = "manifest.json"
SUPERSEDED = "_SUPERSEDED"
RUNS = ".runs"
LATEST = "latest"
LOCK = ".lock"
FAULT_ENV = "RECALL_FAULT_POINT"
_OS_ERROR = re.compile(r"os error (\d+)")
log = logging.getLogger("recall")


def fault_point(name: str) -> None:
    """Test hook: crash, stall or fail at the named point when ``RECALL_FAULT_POINT`` asks for it.

    Only for the fault-injection tests (``tests/test_reliability.py``); with the
    variable unset this is one dictionary lookup. The variable holds comma-separated
    entries ``POINT`` or ``POINT:ACTION``; ACTION is ``kill`` (the default: SIGKILL
    to this process, as the OOM killer or a power cut would), ``sleep=SECONDS``
    (hold here, e.g. to keep the lock), ``until=PATH`` (hold here until the file
    PATH exists, at most 120 s), ``raise`` (a RuntimeError, an internal bug) or
    ``enospc`` (an ``OSError`` "No space left on device").

    Points: ``lock:acquired``, ``channel:<name>`` (after its fit),
    ``merge`` (after the quota merge, before the filters), ``publish:write``
    (after each table written into the new version), ``publish:before-link``
    (version complete, not yet published), ``publish:after-link`` (date link
    replaced, ``latest`` not yet moved), ``publish:before-cleanup``.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    for entry in spec.split(","):
        point, _, action = entry.strip().rpartition(":")
        if not (action in ("kill", "raise", "enospc") or action.startswith(("sleep=", "until="))):
            point, action = entry.strip(), "kill"
        if point != name:
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "raise":
            raise RuntimeError(f"fault injected at {name}")
        elif action == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        elif action.startswith("until="):
            release, deadline = Path(action.removeprefix("until=")), time.monotonic() + 120
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        else:
            time.sleep(float(action.removeprefix("sleep=")))


def write_parquet_atomic(df: pl.DataFrame, path: str | Path) -> Path:
    """Write ``df`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _write_parquet(df, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    """``df.write_parquet`` with I/O failures raised as OSError (polars wraps them in ComputeError)."""
    try:
        df.write_parquet(path)
    except pl.exceptions.PolarsError as exc:
        found = _OS_ERROR.search(str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from exc


def _replace_symlink(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _write_problem(root: Path, exc: OSError) -> str:
    """The fix for a failed write, by cause."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left under '{root}' ({reason}); free some space or lower "
                "output.keep_runs; the previous run is untouched")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"output folder '{root}' is not writable ({reason}); fix its permissions, mount it "
                "read-write or choose another output.root; the previous run is untouched")
    return (f"writing the run under '{root}' failed ({reason}); check free space and permissions; "
            "the previous run is untouched")


@dataclass
class OutputLock:
    """A held lock on an output root (from :func:`output_lock`)."""

    root: Path
    handle: IO[str]


def lock_holder(root: Path) -> str:
    """Who holds (or last held) the lock of ``root``, as recorded in the lock file; '' if unknown."""
    try:
        info = json.loads((Path(root) / LOCK).read_text())
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


@contextlib.contextmanager
def output_lock(root: str | Path, on_lock: str = "fail", timeout_seconds: float = 3600.0,
                poll_seconds: float = 0.2) -> Iterator[OutputLock]:
    """Hold the output root's lock for the block; a second writer fails at once or waits.

    Parameters
    ----------
    root : path
        The output root (created if missing).
    on_lock : {"fail", "wait"}
        What to do when another process holds the lock: raise a RecallError naming
        the holder at once, or poll until it is free.
    timeout_seconds : float
        With ``"wait"``, give up with a RecallError after this long.
    poll_seconds : float
        With ``"wait"``, how often to retry.
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / LOCK, "a+")
    except OSError as exc:
        raise RecallError(f"cannot write to output folder '{root}' ({exc.strerror}); "
                          "choose a writable output.root or fix its permissions") from None
    with handle:
        deadline = time.monotonic() + timeout_seconds
        waiting = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = lock_holder(root)
                held_by = f" ({holder})" if holder else ""
                if on_lock != "wait":
                    raise RecallError(
                        f"another recall run{held_by} is writing to '{root}'; wait for it to finish, "
                        "set output.on_lock = \"wait\", or use a different output.root") from None
                if not waiting:
                    waiting = True
                    event(log, "lock.waiting", f"waiting up to {timeout_seconds:g} s for the lock on "
                          f"'{root}', held by another recall run{held_by}", root=str(root),
                          holder=holder, timeout_seconds=timeout_seconds)
                if time.monotonic() >= deadline:
                    raise RecallError(
                        f"gave up after waiting {timeout_seconds:g} s for the lock on '{root}', held by "
                        f"another recall run{held_by}; check whether it is stuck or raise "
                        "output.lock_timeout_seconds") from None
                time.sleep(poll_seconds)
        if waiting:
            event(log, "lock.acquired", f"got the lock on '{root}'", root=str(root))
        _record_holder(handle)
        try:
            yield OutputLock(root, handle)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _record_holder(handle: IO[str]) -> None:
    """Write who holds the lock into the lock file, for the next writer's message (best effort)."""
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}
    # A full or read-only disk must not stop a run here: the lock itself is held.
    with contextlib.suppress(OSError):
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(info))
        handle.flush()


class Publication:
    """A new version of one run date, written in private and published on :meth:`commit`."""

    def __init__(self, root: Path, run_date: str, stage: Path, previous: Path | None, manifest: dict,
                 grace_seconds: float = 0.0):
        self.root, self.run_date, self.stage, self.previous = root, run_date, stage, previous
        self.manifest = manifest
        self.grace_seconds = grace_seconds
        self._sharded: set[str] = set()

    def path(self, relative: str) -> Path:
        target = self.stage / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_table(self, relative: str, frame: pl.DataFrame) -> None:
        """Write one table as a single Parquet file, replacing any earlier one (file or dataset)."""
        self._clear(relative)
        _write_parquet(frame, self.path(relative))
        self.manifest.setdefault("tables", {})[relative] = frame.height
        fault_point("publish:write")

    def write_shard(self, relative: str, shard: int, frame: pl.DataFrame) -> None:
        """Write one user shard of a table partitioned as ``<relative>/shard=<k>/part-0.parquet``.

        The folder reads as one table with polars, pyarrow and Spark (hive
        partitioning adds a ``shard`` column). The first shard written replaces an
        earlier table of that name; the manifest counts the rows of all shards.
        """
        tables = self.manifest.setdefault("tables", {})
        if relative not in self._sharded:
            self._clear(relative)
            self._sharded.add(relative)
            tables[relative] = 0
        _write_parquet(frame, self.path(f"{relative}/shard={shard}/part-0.parquet"))
        tables[relative] += frame.height
        fault_point("publish:write")

    def _clear(self, relative: str) -> None:
        # Incremental versions start as hard links to the previous one; a table
        # rewritten in another layout (file <-> shard folder) must not mix the two.
        target = self.stage / relative
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        self._sharded.discard(relative)

    def commit(self) -> Path:
        (self.stage / MANIFEST).write_text(json.dumps(self.manifest, indent=2, default=str))
        (self.stage / SUCCESS).write_text("")
        fault_point("publish:before-link")
        link = self.root / self.run_date
        _replace_symlink(link, os.path.relpath(self.stage, self.root))
        fault_point("publish:after-link")
        latest = self.root / LATEST
        if not latest.is_symlink() or not (latest / SUCCESS).exists() or os.readlink(latest) <= self.run_date:
            _replace_symlink(latest, self.run_date)
        fault_point("publish:before-cleanup")
        if self.previous is not None and self.previous.resolve() != self.stage.resolve():
            if self.grace_seconds > 0:
                # Mark it; the first writer after the grace period removes it (see _clean).
                with contextlib.suppress(OSError):
                    (self.previous / SUPERSEDED).write_text("")
            else:
                shutil.rmtree(self.previous, ignore_errors=True)
        return link


def published_runs(root: Path) -> list[str]:
    """Run dates with a published, complete version, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_symlink() and p.name != LATEST and (p / SUCCESS).exists())


def resolve_run(root: str | Path, run_date: str | None = None) -> Path:
    """The version folder of a published run (``latest`` by default); a RecallError if there is none.

    The link is resolved once, so every table read from the returned folder comes
    from the same version even if a new one is published meanwhile.
    """
    root = Path(root)
    name = run_date or LATEST
    path = root / name
    if not (path / SUCCESS).exists():
        runs = published_runs(root)
        have = f"published runs: {', '.join(runs)}" if runs else "nothing is published there yet"
        raise RecallError(f"no published run '{name}' under '{root}' ({have}); run 'recall run' first")
    return path.resolve()


def _clean(root: Path, keep_runs: int, grace_seconds: float) -> None:
    """Prune dates beyond ``keep_runs`` and remove versions no link points at.

    Called with the lock held, so an unlinked version without ``_SUPERSEDED`` was
    abandoned by a writer that died (or failed) before publishing it.
    """
    dates = published_runs(root)
    for old in dates[:-keep_runs] if len(dates) > keep_runs else []:
        target = (root / old).resolve()
        (root / old).unlink()
        shutil.rmtree(target, ignore_errors=True)
    for stale in root.glob(".*.link"):  # a link a writer died before renaming into place
        if stale.is_symlink():
            stale.unlink(missing_ok=True)
    runs_dir = root / RUNS
    if not runs_dir.is_dir():
        return
    live = {(root / d).resolve() for d in published_runs(root)}
    now = time.time()
    for version in runs_dir.iterdir():
        if version.resolve() in live:
            continue
        with contextlib.suppress(OSError):
            if now - (version / SUPERSEDED).stat().st_mtime < grace_seconds:
                continue  # a reader may still be inside it
        if version.is_dir():
            shutil.rmtree(version, ignore_errors=True)
        else:
            version.unlink(missing_ok=True)


def _check_links(root: Path, run_date: str) -> None:
    for name in (run_date, LATEST):
        path = root / name
        if path.exists() and not path.is_symlink():
            raise RecallError(f"'{path}' is a real file or folder, not a published-run link; "
                              "move it away (recall publishes runs as symlinks there)")


@contextlib.contextmanager
def publish(root: str | Path, run_date: str, *, incremental: bool = False, keep_runs: int = 7,
            grace_seconds: float = 0.0, lock: OutputLock | None = None) -> Iterator[Publication]:
    """Write a new version of ``run_date`` and publish it atomically when the block succeeds.

    Parameters
    ----------
    root : path
        The output root.
    run_date : str
        ``YYYY-MM-DD``; the version is published as ``<root>/<run_date>``.
    incremental : bool
        Start the new version as hard links to the published one, so a step that
        rewrites a few tables keeps the others (and the manifest).
    keep_runs : int
        Dates kept; older ones are removed.
    grace_seconds : float
        How long a version superseded by a re-run of the same date stays on disk.
    lock : OutputLock, optional
        The caller's lock on ``root`` (taken around a whole run); without it the
        lock is taken here, failing at once if another writer holds it.

    A write that fails for lack of space or permission becomes a RecallError; on
    any failure the new version is removed and the published one is untouched.
    """
    root = Path(root)
    if lock is not None and lock.root != root:
        raise ValueError(f"lock is for '{lock.root}', not '{root}'")
    with contextlib.nullcontext(lock) if lock is not None else output_lock(root):
        _check_links(root, run_date)
        _clean(root, keep_runs, grace_seconds)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        stage = root / RUNS / f"{run_date}.{stamp}"
        try:
            stage.mkdir(parents=True)
        except OSError as exc:
            raise RecallError(f"cannot create '{stage}': {_write_problem(root, exc)}") from None
        try:
            current = root / run_date
            previous = current.resolve() if (current / SUCCESS).exists() else None
            manifest = {}
            if incremental and previous is not None:
                for src in previous.rglob("*"):
                    if src.is_file() and src.name not in (SUCCESS, MANIFEST, SUPERSEDED):
                        dst = stage / src.relative_to(previous)
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        os.link(src, dst)
                manifest = json.loads((previous / MANIFEST).read_text())
            publication = Publication(root, run_date, stage, previous, manifest, grace_seconds)
            yield publication
            publication.commit()
        except OSError as exc:
            shutil.rmtree(stage, ignore_errors=True)
            raise RecallError(_write_problem(root, exc)) from exc
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        _clean(root, keep_runs, grace_seconds)
