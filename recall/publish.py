"""Publishing outputs so a reader never sees a half-written run.

Layout under the output root::

    <root>/.lock                       one writer at a time (flock)
    <root>/.runs/<date>.<stamp>/       immutable run versions, each ending with _SUCCESS
    <root>/<date> -> .runs/<date>.<stamp>   what rankers read
    <root>/latest -> <date>

A run is written into a fresh version folder, finished with ``manifest.json`` and
``_SUCCESS``, and then published by atomically replacing the ``<date>`` symlink
(``rename(2)`` of a new link over the old one). A crash at any point leaves the
previously published version untouched; the abandoned folder is cleaned up by
the next run. Incremental steps (``recall build``, ``recall merge``) start their
version from hard links to the current one, so they publish atomically too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from recall.errors import RecallError

SUCCESS = "_SUCCESS"
MANIFEST = "manifest.json"
RUNS = ".runs"
LATEST = "latest"


def write_parquet_atomic(df: pl.DataFrame, path: str | Path) -> Path:
    """Write ``df`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        df.write_parquet(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _replace_symlink(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


@contextlib.contextmanager
def output_lock(root: Path, wait: bool = False) -> Iterator[None]:
    """Hold the output root's lock; a second writer waits or gets a clear error."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / ".lock", "a+")
    except OSError as exc:
        raise RecallError(f"cannot write to output folder '{root}' ({exc.strerror}); "
                          "choose a writable output.root or fix its permissions") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise RecallError(f"another recall run is writing to '{root}'; wait for it to finish "
                              "or use a different output.root") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Publication:
    """A new version of one run date, written in private and published on :meth:`commit`."""

    def __init__(self, root: Path, run_date: str, stage: Path, previous: Path | None, manifest: dict):
        self.root, self.run_date, self.stage, self.previous = root, run_date, stage, previous
        self.manifest = manifest

    def path(self, relative: str) -> Path:
        target = self.stage / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_table(self, relative: str, frame: pl.DataFrame) -> None:
        frame.write_parquet(self.path(relative))
        self.manifest.setdefault("tables", {})[relative] = frame.height

    def commit(self) -> Path:
        (self.stage / MANIFEST).write_text(json.dumps(self.manifest, indent=2, default=str))
        (self.stage / SUCCESS).write_text("")
        link = self.root / self.run_date
        if link.exists() and not link.is_symlink():
            raise RecallError(f"'{link}' is a real folder, not a published run; move it away")
        _replace_symlink(link, os.path.relpath(self.stage, self.root))
        latest = self.root / LATEST
        if not latest.exists() or os.readlink(latest) <= self.run_date:
            _replace_symlink(latest, self.run_date)
        if self.previous is not None and self.previous.resolve() != self.stage.resolve():
            shutil.rmtree(self.previous, ignore_errors=True)
        return link


def published_runs(root: Path) -> list[str]:
    """Run dates with a published, complete version, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_symlink() and p.name != LATEST and (p / SUCCESS).exists())


def resolve_run(root: str | Path, run_date: str | None = None) -> Path:
    """The folder of a published run (``latest`` by default); a RecallError if there is none."""
    root = Path(root)
    name = run_date or LATEST
    path = root / name
    if not (path / SUCCESS).exists():
        runs = published_runs(root)
        have = f"published runs: {', '.join(runs)}" if runs else "nothing is published there yet"
        raise RecallError(f"no published run '{name}' under '{root}' ({have}); run 'recall run' first")
    return path


def _clean_abandoned(root: Path, keep_runs: int) -> None:
    """Remove versions no symlink points at (crashed runs), and dates beyond ``keep_runs``."""
    runs_dir = root / RUNS
    dates = published_runs(root)
    for old in dates[:-keep_runs] if len(dates) > keep_runs else []:
        target = (root / old).resolve()
        (root / old).unlink()
        shutil.rmtree(target, ignore_errors=True)
    live = {(root / d).resolve() for d in published_runs(root)}
    if runs_dir.is_dir():
        for version in runs_dir.iterdir():
            if version.resolve() not in live:
                shutil.rmtree(version, ignore_errors=True)


@contextlib.contextmanager
def publish(root: str | Path, run_date: str, *, incremental: bool = False, keep_runs: int = 7,
            wait: bool = False) -> Iterator[Publication]:
    """Write a new version of ``run_date`` and publish it atomically when the block succeeds.

    With ``incremental`` the new version starts as hard links to the published one,
    so a step that rewrites a few tables keeps the others.
    """
    root = Path(root)
    with output_lock(root, wait=wait):
        _clean_abandoned(root, keep_runs)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        stage = root / RUNS / f"{run_date}.{stamp}"
        try:
            stage.mkdir(parents=True)
        except OSError as exc:
            raise RecallError(f"cannot create '{stage}' ({exc.strerror}); check free space and "
                              "permissions of output.root") from None
        current = root / run_date
        previous = current.resolve() if (current / SUCCESS).exists() else None
        if incremental and previous is not None:
            for src in previous.rglob("*"):
                if src.is_file() and src.name not in (SUCCESS, MANIFEST):
                    dst = stage / src.relative_to(previous)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    os.link(src, dst)
        manifest = {}
        if incremental and previous is not None:
            manifest = json.loads((previous / MANIFEST).read_text())
        publication = Publication(root, run_date, stage, previous, manifest)
        try:
            yield publication
            publication.commit()
        except OSError as exc:
            shutil.rmtree(stage, ignore_errors=True)
            raise RecallError(f"writing the run under '{root}' failed ({exc.strerror or exc}); "
                              "check free space and permissions; the previous run is untouched") from None
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        _clean_abandoned(root, keep_runs)
