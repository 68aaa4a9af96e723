"""Cutting users' time-ordered event sequences into sessions (numpy only, no package imports)."""

from __future__ import annotations

import numpy as np


def split_sessions(user: np.ndarray, item: np.ndarray, ts: np.ndarray,
                   gap_hours: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Session number of each event, and the mask of events kept once repeats are collapsed.

    Events are sorted by user then time. A session ends at a new user or, with
    ``gap_hours``, where consecutive events are further apart. The gap is measured
    between raw events, before collapsing repeats: clicking A, carting A 50 minutes
    later and then clicking B 50 minutes after that is one session. Consecutive
    repeats of one item within a session (click, then cart) are one position.
    """
    starts = np.ones(user.size, dtype=bool)
    starts[1:] = user[1:] != user[:-1]
    if gap_hours is not None:
        starts[1:] |= np.diff(ts) > gap_hours * 3600
    session = np.cumsum(starts, dtype=np.int64) - 1
    keep = starts.copy()
    keep[1:] |= item[1:] != item[:-1]
    return session, keep
