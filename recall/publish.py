"""Writing outputs so that readers never see a half-written table."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl


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
