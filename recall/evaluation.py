"""Offline evaluation on a time split: every channel, the merge, baselines and channel analysis, in one run.

Train on events before the split time T, test on the next ``test_days``. A test
user's targets are the items they engaged with in the test window (by default
only items new to them). Metrics at each K, averaged over test users with at
least one target (users a channel cannot serve count as zeros):

- Recall@K = hits in the top K / number of targets;
- HitRate@K = share of users with at least one hit;
- NDCG@K with binary relevance;
- Coverage@K = distinct items recommended in the top K / items in the training catalogue.

Scored on the same split: every enabled channel, the merge under the configured
quotas (``merged``, after the mechanism filters, and ``merged_unfiltered``), the
merge under equal quotas (``merged_equal``, the untuned reference), and three
baselines: global popularity, implicit's BM25 item-item and implicit's ALS
(Hu, Koren and Volinsky's implicit-feedback matrix factorisation). The channel
analysis of :mod:`recall.analysis` (overlap, unique hits, marginal gain, user and
item segments, recall curves) is added to the same report; ``recall.report``
renders it.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from recall import analysis as A
from recall import baselines as B
from recall import schema as S
from recall.context import TrainData
from recall.errors import RecallError
from recall.io import Dataset
from recall.pipeline import Step, costliest_first, fit_model, merge_outputs, no_progress
from recall.split import REPEAT, Split, eligible_users, target_pairs, time_split, user_split
from recall.threads import in_threads

if TYPE_CHECKING:
    from recall.config import Config, EvalConfig

MAIN_SEGMENTS = ("all", "warm")


def split_data(data: Dataset, cfg: EvalConfig) -> Split:
    """The evaluation's split under ``eval.protocol`` (:mod:`recall.split`): nothing after T is trained on."""
    if cfg.protocol == "user":
        return user_split(data, cfg.split_quantile)
    return time_split(data, cfg.test_days, cfg.split_ts)


def evaluation_targets(train: TrainData, split: Split, cfg: EvalConfig) -> pl.DataFrame:
    """``user_id, item_id, repeat`` to score: the test window's engagements, or each user's next items.

    With ``max_users``, a seeded sample of the users with any target is kept.
    """
    engaged = train.engaged()
    if split.protocol == "user":
        targets = target_pairs(engaged, split.test, cfg.target_behaviors, per_user=cfg.holdout_items)
        targets = targets.join(eligible_users(engaged, cfg.min_history_items), on=S.USER, how="semi")
    else:
        targets = target_pairs(engaged, split.test, cfg.target_behaviors)
    if cfg.max_users is not None:
        users = targets.select(S.USER).unique().sort(S.USER)
        if users.height > cfg.max_users:
            users = users.sample(cfg.max_users, seed=train.seed)
            targets = targets.join(users, on=S.USER, how="semi")
    return targets


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
            "recall": float((gains["hits"] / gains["n_targets"]).sum() / n_users) if n_users else 0.0,
            "hit_rate": gains.height / n_users if n_users else 0.0,
            "ndcg": float((gains["dcg"].to_numpy() / idcg).sum() / n_users) if n_users else 0.0,
            "coverage": covered / max(n_items, 1),
        }
    return out


def with_quotas(cfg: Config, quotas: dict[str, int]) -> Config:
    """A copy of the config whose channels have these slot counts (replacing any ``share``) for every user
    (segment quotas dropped)."""
    channels = dict(cfg.channels)
    for name, quota in quotas.items():
        channels[name] = channels[name].model_copy(update={"quota": int(quota), "share": None})
    return cfg.model_copy(update={"channels": channels,
                                  "merge": cfg.merge.model_copy(update={"segment_quotas": {}})})


def merge_with_quotas(cfg: Config, candidates: dict[str, pl.DataFrame], train: TrainData,
                      quotas: dict[str, int]) -> pl.DataFrame:
    """The real merge plus mechanism filters (:func:`recall.pipeline.merge_outputs`) under other quotas."""
    return merge_outputs(with_quotas(cfg, quotas), candidates, train)[0]


def baselines(cfg: Config) -> dict[str, B.Baseline]:
    """The baselines scored next to the merge (:mod:`recall.baselines`), each topped up with popularity."""
    ecfg = cfg.eval
    half_life = ecfg.popularity_half_life_days or (ecfg.test_days if ecfg.protocol == "time" else 7.0)
    methods: dict[str, B.Baseline] = {
        "popularity": B.popularity,
        "popularity_recent": lambda t, u, n: B.popularity_recent(t, u, n, half_life),
        "implicit_bm25": B.implicit_bm25,
    }
    als = cfg.eval.als
    if als.enabled:
        methods["implicit_als"] = lambda t, u, n: B.implicit_als(
            t, u, n, factors=als.factors, iterations=als.iterations, regularization=als.regularization,
            alpha=als.alpha)
    if ecfg.ease_max_items > 0:
        methods["ease_baseline"] = lambda t, u, n: B.ease(t, u, n, lam=ecfg.ease_lambda, max_items=ecfg.ease_max_items)

    def served(method: B.Baseline) -> B.Baseline:
        if method is B.popularity:
            return method
        return lambda t, u, n: B.topped_up(method(t, u, n), B.popularity(t, u, n), n)

    return {name: served(method) for name, method in methods.items()}


def headline(scored: dict[str, pl.DataFrame], rows: list[dict], segments: dict[str, pl.DataFrame],
             ks: list[int]) -> dict:
    """Merged vs the best baseline at each K, per main segment: values, ratio, paired difference and its SE."""
    out: dict = {}
    names = {r["name"] for r in rows if r["kind"] == "baseline"}
    if "merged" not in scored or not names:
        return out
    for segment in MAIN_SEGMENTS:
        targets = segments.get(segment)
        if targets is None or targets.height == 0:
            continue
        for k in ks:
            at = {r["name"]: r["recall"] for r in rows if r["segment"] == segment and r["k"] == k}
            best = max(sorted(names), key=lambda n: at.get(n, 0.0))
            diff = A.paired_difference(scored["merged"], scored[best], targets, [k])[k]
            out.setdefault(segment, {})[str(k)] = {
                "merged": at["merged"], "best_baseline": best, "baseline": at[best],
                "ratio": at["merged"] / at[best] if at[best] else float("inf"),
                "delta": diff["delta"], "stderr": diff["stderr"], "users": diff["users"]}
    return out


def _rows(name: str, kind: str, segment: str, values: dict, seconds: float) -> list[dict]:
    return [{"name": name, "kind": kind, "segment": segment, "k": k, **v, "seconds": round(seconds, 2)}
            for k, v in values.items()]


def target_segments(cfg: Config, train: TrainData, pairs: pl.DataFrame, targets: pl.DataFrame,
                    user_frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The targets of each segment: all, warm (history before T), cold / light / heavy users,
    new / repeat items (``pairs`` holds every target with its repeat flag)."""
    engaged_users = train.engaged().select(S.USER).unique()
    by_user = A.user_segments(train.engaged().join(user_frame, on=S.USER, how="semi"), user_frame,
                              cfg.eval.segments)
    segments = {"all": targets, "warm": targets.join(engaged_users, on=S.USER, how="semi")}
    for name in A.USER_SEGMENTS:
        segments[name] = targets.join(by_user.filter(pl.col(A.SEGMENT) == name), on=S.USER, how="semi")
    segments["new_items"] = pairs.filter(~pl.col(REPEAT)).select(S.USER, S.ITEM)
    segments["repeat_items"] = pairs.filter(pl.col(REPEAT)).select(S.USER, S.ITEM)
    return segments


def score_merges(cfg: Config, candidates: dict[str, pl.DataFrame], train: TrainData, equal: dict[str, int],
                 other_quotas: dict[str, dict[str, int]] | None, n_users: int, record, step: Step
                 ) -> dict[str, dict[str, float]]:
    """Merge (configured quotas, with and without filters; equal quotas; ``other_quotas``), ``record``
    each with its time; return the slots each channel filled in the two main merges.

    The merges are independent and run ``run.workers`` at a time; they are recorded in this order.
    """
    names = list(candidates)
    jobs = [("merged", "merge and filter"), ("merged_equal", "merge with equal quotas"),
            *((label, None) for label in other_quotas or {})]

    def merge(job: tuple[str, str | None]):
        label, title = job
        with step(title) if title else contextlib.nullcontext():
            started = time.perf_counter()
            if label == "merged":
                merged, unfiltered, _ = merge_outputs(cfg, candidates, train)
                return (merged, unfiltered), time.perf_counter() - started
            quotas = equal if label == "merged_equal" else {n: other_quotas[label].get(n, 0) for n in names}
            return merge_with_quotas(cfg, candidates, train, quotas), time.perf_counter() - started

    done = in_threads(merge, jobs, cfg.run.workers)
    (merged, unfiltered), seconds = done[jobs[0]]
    record("merged", "merged", merged, seconds)
    record("merged_unfiltered", "merged", unfiltered, seconds)
    merged_equal, seconds = done[jobs[1]]
    record("merged_equal", "merged", merged_equal, seconds)
    for job in jobs[2:]:
        record(job[0], "merged", *done[job])
    return {"merged": _slots(merged, names, n_users), "merged_equal": _slots(merged_equal, names, n_users)}


def evaluate(cfg: Config, data: Dataset, step: Step = no_progress,
             other_quotas: dict[str, dict[str, int]] | None = None) -> dict:
    """Fit every enabled channel on the training window; score it, the merges, the baselines; analyse.

    ``other_quotas`` adds named merges under other quota vectors (e.g. the quotas
    before tuning), scored on the same candidates.

    Returns a JSON-ready dict: split facts, ``results`` (segments ``all`` and
    ``warm``), ``segment_results`` (cold / light / heavy users, new / repeat
    items), ``quotas``, ``slots``, ``analysis`` (overlap, unique hits, marginal
    gain per K), ``curves`` (Recall@1..max K per name).
    """
    ecfg = cfg.eval
    ks = sorted(set(ecfg.ks))
    split = split_data(data, ecfg)
    train = TrainData.build(split.train, now=split.ts, triggers=cfg.triggers, seed=cfg.seed)
    pairs = evaluation_targets(train, split, ecfg)
    targets = pairs.filter(~pl.col(REPEAT)) if ecfg.exclude_seen_targets else pairs
    targets = targets.select(S.USER, S.ITEM)
    if targets.height == 0:
        raise RecallError("the test window has no target interactions; widen eval.test_days")
    # Candidates are needed for every user with a target, repeat targets included (the item segments).
    user_frame = pairs.select(S.USER).unique().sort(S.USER)
    users = user_frame[S.USER]
    user_rows = train.user_rows(users)  # users with no training row get no channel candidates anyway
    n_items = train.n_items  # the catalogue at T (items with any event before T, or listed)
    depth = max(max(ks), cfg.candidates_per_user)
    names = cfg.enabled_channels()
    methods = baselines(cfg)

    segments = target_segments(cfg, train, pairs, targets, user_frame)

    def score(frame: pl.DataFrame) -> dict[str, dict]:
        """The metrics of a list on every segment with targets."""
        return {segment: metrics(frame, segment_targets, ks, n_items)
                for segment, segment_targets in segments.items() if segment_targets.height}

    def fit(job: tuple[str, str]):
        """A channel fitted with its candidates, or a baseline served with its seconds; each scored in
        its thread, while the longest fit still runs."""
        kind, name = job
        with step(f"{kind} {name}"):
            if kind == "channel":
                output = fit_model(name, cfg, train, depth + cfg.filters.reserve, tables=False, users=user_rows)
                return output, score(output.candidates)
            started = time.perf_counter()
            frame = methods[name](train, users, depth)
            return frame, time.perf_counter() - started, score(frame)

    # The baselines share the channels' threads, queued after them: they fill a thread while the
    # longest channel fits instead of running after every channel has finished.
    jobs = [("channel", name) for name in costliest_first(names)] + [("baseline", name) for name in methods]
    done = in_threads(fit, jobs, cfg.run.workers)
    outputs = {name: done["channel", name][0] for name in names}
    candidates = {n: o.candidates for n, o in outputs.items()}

    rows: list[dict] = []
    segment_rows: list[dict] = []
    scored: dict[str, pl.DataFrame] = {}

    def record(name: str, kind: str, frame: pl.DataFrame, seconds: float, values: dict | None = None) -> None:
        scored[name] = frame
        for segment, segment_values in (score(frame) if values is None else values).items():
            out = rows if segment in MAIN_SEGMENTS else segment_rows
            out += _rows(name, kind, segment, segment_values, seconds)

    for name, output in outputs.items():
        record(name, "channel", candidates[name], output.seconds, done["channel", name][1])
    quotas = {n: q for n, q in cfg.quotas().items() if n in candidates}
    equal = A.equal_quotas(names, cfg.candidates_per_user)
    slots = score_merges(cfg, candidates, train, equal, other_quotas, users.len(), record, step) if names else {}
    for name in methods:
        record(name, "baseline", *done["baseline", name])

    with step("channel analysis"):
        analysis = analyse(cfg, candidates, train, targets, ks, n_items, quotas)
        if names:
            # Is the configured (e.g. tuned) merge really better than equal quotas, or is it noise?
            analysis["merged_vs_equal"] = {str(k): v for k, v in A.paired_difference(
                scored["merged"], scored["merged_equal"], targets, ks).items()}
    cold = targets[S.USER].n_unique() - segments["warm"][S.USER].n_unique()
    return {
        "data": str(cfg.data.dir),
        "protocol": split.protocol,
        "split_ts": split.ts,
        "test_days": ecfg.test_days if split.protocol == "time" else None,
        "train_events": train.events.height,
        "test_users": targets[S.USER].n_unique(),
        "test_users_without_history": cold,
        "targets": targets.height,
        "catalogue_items": n_items,
        "budget": cfg.candidates_per_user,
        "ks": ks,
        "channels": names,
        "quotas": {"configured": quotas, "equal": equal},
        "slots": slots,
        "results": rows,
        "segment_users": {name: frame[S.USER].n_unique() for name, frame in segments.items()},
        "segment_targets": {name: frame.height for name, frame in segments.items()},
        "segment_results": segment_rows,
        "analysis": analysis,
        "headline": headline(scored, rows, segments, ks),
        "budget_filled": budget_filled(scored.get("merged"), users, cfg.candidates_per_user),
        "curves": {name: A.recall_curve(frame, targets, max(ks)).round(6).tolist()
                   for name, frame in scored.items()},
    }


def budget_filled(merged: pl.DataFrame | None, users: pl.Series, budget: int) -> dict:
    """Mean merged list length over the test users and the share of them given the full budget."""
    if merged is None:
        return {}
    lengths = (pl.DataFrame({S.USER: users}).join(merged.group_by(S.USER).len(), on=S.USER, how="left")
               ["len"].fill_null(0))
    return {"mean_length": float(lengths.mean()), "full_share": float((lengths >= budget).mean())}


def _slots(merged: pl.DataFrame, names: list[str], n_users: int) -> dict[str, float]:
    """Average slots per test user that each channel's items took in a merged list (its ``source``)."""
    counts = dict(merged.group_by("source").len().iter_rows())
    return {name: round(counts.get(name, 0) / max(n_users, 1), 3) for name in names}


def analyse(cfg: Config, candidates: dict[str, pl.DataFrame], train: TrainData, targets: pl.DataFrame,
            ks: list[int], n_items: int, quotas: dict[str, int]) -> dict:
    """Overlap, unique hits and marginal gain at each K (see :mod:`recall.analysis`), JSON-ready."""
    names = list(candidates)
    if not names:
        return {"channels": [], "overlap": {}, "unique_hits": {}, "marginal_gain": {}}
    users = targets.select(S.USER).unique()
    overlap, unique = {}, {}
    for k in ks:
        overlap[str(k)] = A.overlap_matrix(A.overlap(candidates, users, k), names)
        frame = A.unique_hits(candidates, targets, k)
        unique[str(k)] = {name: {"hits": hits, "unique_hits": uniq}
                          for name, hits, uniq in frame.select(A.CHANNEL, "hits", "unique_hits").iter_rows()}
    gains = A.marginal_gains(candidates, quotas,
                             merge=lambda cands, q: merge_with_quotas(cfg, cands, train, q),
                             score=lambda merged: metrics(merged, targets, ks, n_items),
                             workers=cfg.run.workers)
    return {
        "channels": names,
        "overlap": overlap,
        "unique_hits": unique,
        "marginal_gain": {name: {str(k): v for k, v in per_k.items()} for name, per_k in gains.items()},
    }
