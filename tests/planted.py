"""A log with planted interest clusters, for the learned u2i channels' tests.

Items fall into ``n_clusters`` clusters of ``cluster_size``; each user draws one
cluster (or two, for the ``two_share`` of users) and clicks distinct items of it
(them) in random order, an hour apart. The last ``held_out`` clicks of every user
are the test targets; the channels train on the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recall import schema as S
from recall.io import normalise_events


def planted_log(seed: int = 0, n_clusters: int = 8, cluster_size: int = 25, n_users: int = 400,
                clicks: int = 16, two_share: float = 0.0, held_out: int = 4):
    """(train events, test events, user clusters as a list of tuples)."""
    rng = np.random.default_rng(seed)
    users, items, ts, clusters = [], [], [], []
    for user in range(n_users):
        two = rng.random() < two_share
        chosen = tuple(sorted(rng.choice(n_clusters, 2 if two else 1, replace=False).tolist()))
        pool = np.concatenate([np.arange(c * cluster_size, (c + 1) * cluster_size) for c in chosen])
        picked = rng.choice(pool, clicks, replace=False)
        users += [user] * clicks
        items += picked.tolist()
        ts += (1_700_000_000 + user * 7 + np.arange(clicks) * 3600).tolist()
        clusters.append(chosen)
    events = normalise_events(pl.DataFrame({S.USER: users, S.ITEM: items, S.BEHAVIOR: ["click"] * len(users),
                                            S.TS: ts}), Path("<planted>"))
    position = pl.int_range(pl.len()).over(S.USER)
    events = events.sort(S.USER, S.TS).with_columns(test=position >= clicks - held_out)
    return (events.filter(~pl.col("test")).drop("test"), events.filter(pl.col("test")).drop("test"), clusters)


def recall_at(recs: pl.DataFrame, test: pl.DataFrame) -> float:
    """Share of the test (user, item) pairs among the recommendations."""
    hits = test.join(recs.select(S.USER, S.ITEM), on=[S.USER, S.ITEM], how="semi").height
    return hits / test.height
