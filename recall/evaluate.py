"""Offline evaluation on a time split: every channel, the merge and two baselines, in one run.

Train on events before the split time T, test on the next ``test_days``. A test
user's targets are the items they engaged with in the test window (by default
only items new to them). Metrics at each K, averaged over test users with at
least one target (users a channel cannot serve count as zeros):

- Recall@K = hits in the top K / number of targets;
- HitRate@K = share of users with at least one hit;
- NDCG@K with binary relevance;
- Coverage@K = distinct items recommended in the top K / items in the training catalogue.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import polars as pl

from recall import schema as S
from recall.config import Config, EvalConfig
from recall.context import UIDX, TrainData
from recall.errors import RecallError
from recall.io import Dataset
from recall.pipeline import Step, fit_channels, merge_outputs, no_progress


def time_split(data: Dataset, cfg: EvalConfig) -> tuple[Dataset, pl.DataFrame, int]:
    """Training dataset (events before T), test events in [T, T + test_days), and T."""
    events = data.events
    horizon = int(cfg.test_days * 86400)
    split = cfg.split_ts if cfg.split_ts is not None else int(events[S.TS].max()) + 1 - horizon
    train = events.filter(pl.col(S.TS) < split)
    test = events.filter((pl.col(S.TS) >= split) & (pl.col(S.TS) < split + horizon))
    if train.height == 0 or test.height == 0:
        raise RecallError(f"the time split at ts={split} leaves an empty {'train' if train.height == 0 else 'test'} "
                          "set; set eval.split_ts or eval.test_days to fall inside the log")
    return Dataset(train, data.items, data.users, data.files), test, split


def test_targets(train: TrainData, test: pl.DataFrame, cfg: EvalConfig) -> pl.DataFrame:
    """(user_id, item_id) pairs the user engaged with in the test window."""
    targets = test.filter(pl.col(S.BEHAVIOR).is_in(cfg.target_behaviors)).select(S.USER, S.ITEM).unique()
    if cfg.exclude_seen_targets:
        seen = train.engaged().select(S.USER, S.ITEM).unique()
        targets = targets.join(seen, on=[S.USER, S.ITEM], how="anti")
    if cfg.max_users is not None:
        users = targets.select(S.USER).unique().sort(S.USER)
        if users.height > cfg.max_users:
            users = users.sample(cfg.max_users, seed=train.seed)
            targets = targets.join(users, on=S.USER, how="semi")
    return targets.sort(S.USER, S.ITEM)


def metrics(candidates: pl.DataFrame, targets: pl.DataFrame, ks: list[int], n_items: int) -> dict:
    """Recall, HitRate, NDCG and Coverage at each K (see the module docstring)."""
    per_user = targets.group_by(S.USER).agg(n_targets=pl.len())
    n_users = per_user.height
    candidates = candidates.join(per_user.select(S.USER), on=S.USER, how="semi")
    hits = candidates.join(targets, on=[S.USER, S.ITEM], how="semi")
    out = {}
    for k in ks:
        top_hits = hits.filter(pl.col(S.RANK) <= k)
        gains = (top_hits.group_by(S.USER)
                 .agg(hits=pl.len(), dcg=(1.0 / (pl.col(S.RANK) + 1).log(2)).sum())
                 .join(per_user, on=S.USER))
        ideal_ranks = np.arange(1, k + 1)
        ideal_prefix = np.cumsum(1.0 / np.log2(ideal_ranks + 1))
        idcg = ideal_prefix[np.minimum(gains["n_targets"].to_numpy(), k) - 1]
        covered = candidates.filter(pl.col(S.RANK) <= k)[S.ITEM].n_unique()
        out[k] = {
            "recall": float((gains["hits"] / gains["n_targets"]).sum() / n_users),
            "hit_rate": gains.height / n_users,
            "ndcg": float((gains["dcg"].to_numpy() / idcg).sum() / n_users),
            "coverage": covered / max(n_items, 1),
        }
    return out


def popularity(train: TrainData, users: pl.Series, n: int) -> pl.DataFrame:
    """Most-engaged items in training, minus what each user already engaged with."""
    counts = train.engaged().group_by(S.ITEM).agg(pl.col(UIDX).n_unique().alias("n")).sort(
        ["n", S.ITEM], descending=[True, False])
    max_seen = int(np.diff(train.interactions.indptr).max(initial=0))
    top = counts.head(n + max_seen).with_columns(pop_rank=pl.int_range(pl.len()))
    seen = train.engaged().select(S.USER, S.ITEM).unique()
    return (pl.DataFrame({S.USER: users}).join(top, how="cross")
            .join(seen, on=[S.USER, S.ITEM], how="anti")
            .sort(S.USER, "pop_rank")
            .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over(S.USER).alias(S.RANK))
            .filter(pl.col(S.RANK) <= n)
            .select(S.USER, S.ITEM, pl.col("n").cast(pl.Float64).alias(S.SCORE), S.RANK))


def implicit_bm25(train: TrainData, users: pl.Series, n: int, k1: float = 1.2, b: float = 0.75,
                  neighbours: int = 100) -> pl.DataFrame:
    """implicit's BM25 item-item recommender, the peer baseline, on the same training data."""
    from implicit.nearest_neighbours import BM25Recommender

    user_items = train.interactions.astype(np.float64).tocsr()
    model = BM25Recommender(K=neighbours, K1=k1, B=b)
    idx = train.user_index(users)
    idx = idx[idx >= 0]
    with warnings.catch_warnings():  # implicit warns about its own internal COO conversion
        warnings.simplefilter("ignore")
        model.fit(user_items, show_progress=False)
        ids, scores = model.recommend(idx, user_items[idx], N=n, filter_already_liked_items=True)
    valid = (ids >= 0) & np.isfinite(scores) & (scores > -1e30)
    rows = np.repeat(idx, ids.shape[1]).reshape(ids.shape)
    rank = np.tile(np.arange(1, ids.shape[1] + 1), (ids.shape[0], 1))
    return pl.DataFrame({
        S.USER: train.user_ids.gather(rows[valid]),
        S.ITEM: train.item_ids.gather(ids[valid].astype(np.int64)),
        S.SCORE: scores[valid].astype(np.float64),
        S.RANK: rank[valid].astype(np.int32),
    }).filter(pl.col(S.SCORE) > 0).with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over(S.USER).alias(S.RANK))


def evaluate(cfg: Config, data: Dataset, step: Step = no_progress) -> dict:
    """Fit every enabled channel on the training window and score it, the merge and the baselines."""
    ecfg = cfg.eval
    train_data, test, split = time_split(data, ecfg)
    train = TrainData.build(train_data, now=split, triggers=cfg.triggers, seed=cfg.seed)
    targets = test_targets(train, test, ecfg)
    if targets.height == 0:
        raise RecallError("the test window has no target interactions; widen eval.test_days")
    users = targets[S.USER].unique().sort()
    n_items = train.engaged()[S.ITEM].n_unique()
    depth = max(max(ecfg.ks), cfg.candidates_per_user)
    names = cfg.enabled_channels()
    outputs = fit_channels(cfg, train, names, step, n=depth + cfg.filters.reserve)
    rows: list[dict] = []

    # "warm": test users with training history, the only ones history-based channels can serve.
    warm_targets = targets.join(train.engaged().select(S.USER).unique(), on=S.USER, how="semi")
    segments = {"all": targets, "warm": warm_targets}

    def record(name: str, kind: str, candidates: pl.DataFrame, seconds: float) -> None:
        for segment, segment_targets in segments.items():
            if segment_targets.height == 0:
                continue
            for k, values in metrics(candidates, segment_targets, ecfg.ks, n_items).items():
                rows.append({"name": name, "kind": kind, "segment": segment, "k": k, **values,
                             "seconds": round(seconds, 2)})

    for name, output in outputs.items():
        record(name, "channel", output.candidates, output.seconds)
    if names:
        with step("merge and filter"):
            started = time.perf_counter()
            merged, unfiltered, _ = merge_outputs(cfg, {n: o.candidates for n, o in outputs.items()}, train)
            seconds = time.perf_counter() - started
            record("merged", "merged", merged, seconds)
            record("merged_unfiltered", "merged", unfiltered, seconds)
    for name, baseline in (("popularity", popularity), ("implicit_bm25", implicit_bm25)):
        with step(f"baseline {name}"):
            started = time.perf_counter()
            candidates = baseline(train, users, depth)
            record(name, "baseline", candidates, time.perf_counter() - started)
    cold = users.len() - warm_targets[S.USER].n_unique()
    return {
        "split_ts": split,
        "test_days": ecfg.test_days,
        "train_events": train.events.height,
        "test_users": users.len(),
        "test_users_without_history": cold,
        "targets": targets.height,
        "catalogue_items": n_items,
        "results": rows,
    }
