"""Shared fixtures: tiny random logs, and the location of the public datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recall.io import Dataset, normalise_events

# The repo and ``shared`` are siblings (``<root>/main`` and ``<root>/shared``);
# RECALL_SHARED_DATA points elsewhere (e.g. a CI cache).
SHARED_DATA = Path(os.environ.get("RECALL_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
REPO = Path(__file__).resolve().parents[1]


def shared_dataset(name: str) -> Path:
    """Path of a public dataset folder; skips the test with the reason when it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"public dataset folder {path} is absent (it lives beside the repo in shared/data, "
                    "or set RECALL_SHARED_DATA)")
    return path


def random_log(seed: int, n_events: int = 300, n_users: int = 12, n_items: int = 15,
               days: int = 10, behaviors=("click", "fav", "cart", "buy", "impression")) -> pl.DataFrame:
    """A small random events table in the normalised schema."""
    rng = np.random.default_rng(seed)
    frame = pl.DataFrame({
        "user_id": rng.integers(0, n_users, n_events),
        "item_id": rng.integers(0, n_items, n_events) * 10,  # ids are not indices
        "behavior": rng.choice(list(behaviors), n_events),
        "ts": 1_700_000_000 + rng.integers(0, days * 86400, n_events),
    })
    return normalise_events(frame, Path("<random>"))


@pytest.fixture
def tiny_dataset() -> Dataset:
    rng = np.random.default_rng(7)
    events = random_log(1)
    items = pl.DataFrame({"item_id": np.arange(15) * 10, "category_id": rng.integers(0, 3, 15)})
    return Dataset(events=events, items=items)
