"""Channel analysis for the evaluation report: overlap, unique hits, marginal gain, segments.

All quantities are computed on the test users of a time split (users with at
least one target) from K-truncated lists (``rank <= K``):

- **Overlap** of channels a and b at K: the Jaccard index of their top-K sets,
  ``|A_u ∩ B_u| / |A_u ∪ B_u|``, averaged over the test users for whom at least one
  of the two lists is non-empty (a user neither channel serves says nothing
  about their overlap). The diagonal is 1.
- **Unique hits** of channel c at K: target pairs (user, item) in c's top K that no
  other channel has in its top K: what would be lost outright without c.
- **Marginal gain** of channel c: the merged metric with every channel minus the
  merged metric without c, the remaining quotas scaled back up to the same total
  (:func:`renormalise`), so the gain measures c's contribution rather than the
  lost slots. The merge itself is passed in (the evaluation gives the real merge
  plus filters), so this module does not depend on the pipeline.
- **Segments.** Users by training history: *cold* (at most ``cold_max_items``
  distinct engaged items, by default none), *light* (up to ``light_max_items``),
  *heavy* (more). Target items by novelty: *new* (the user had not engaged with
  the item in training) and *repeat* (they had; only channels that re-recommend,
  like retargeting, can hit those).
- **Recall curve**: Recall@K for every K = 1..K_max from one pass over the hits
  (each hit at rank r adds ``1 / (targets of its user x users)`` to every K >= r).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import polars as pl
import scipy.sparse as sp

from recall import schema as S
from recall.sections import SegmentsConfig
from recall.threads import in_threads

CHANNEL = "channel"
OTHER = "other"
SEGMENT = "segment"
USER_SEGMENTS = ("cold", "light", "heavy")
ITEM_SEGMENTS = ("new_items", "repeat_items")


def top_k(candidates: pl.DataFrame, k: int) -> pl.DataFrame:
    return candidates.filter(pl.col(S.RANK) <= k).select(S.USER, S.ITEM)


def stacked_top_k(candidates: Mapping[str, pl.DataFrame], k: int, users: pl.DataFrame) -> pl.DataFrame:
    """``user_id, item_id, channel``: every channel's top K for the given users, in one frame."""
    frames = [top_k(frame, k).join(users, on=S.USER, how="semi").with_columns(pl.lit(name).alias(CHANNEL))
              for name, frame in candidates.items()]
    if not frames:
        return pl.DataFrame(schema={S.USER: users.schema[S.USER], S.ITEM: pl.Int64, CHANNEL: pl.String})
    return pl.concat(frames, how="vertical_relaxed")


def overlap(candidates: Mapping[str, pl.DataFrame], users: pl.DataFrame, k: int) -> pl.DataFrame:
    """Pairwise Jaccard of the channels' top-K sets, averaged over users: ``channel, other, jaccard, users``.

    ``users`` (a frame with ``user_id``) are the users to average over; for each
    pair only those with a non-empty union count (``users`` column of the result).

    Each (user, item) gets the bit mask of the channels that list it; a user's
    intersection counts are then the sum over their distinct masks of (count x
    the mask's channel-pair bits): a users x channels x channels array, not a
    self-join of every channel's pairs.
    """
    names = list(candidates)
    n = len(names)
    users = users.select(S.USER).unique()
    if n > 62:
        raise ValueError("overlap takes at most 62 channels (one bit each)")
    channel_bit = pl.col(CHANNEL).replace_strict(names, [1 << c for c in range(n)], return_dtype=pl.Int64)
    masks = (stacked_top_k(candidates, k, users)
             .group_by(S.USER, S.ITEM).agg(channel_bit.sum().alias("mask"))
             .group_by(S.USER, "mask").agg(pl.len().alias("count"))
             .with_columns(pl.col(S.USER).rank("dense").cast(pl.Int64).sub(1).alias("code")))
    n_users = int(masks["code"].max() or -1) + 1
    bits = ((masks["mask"].to_numpy()[:, None] >> np.arange(n)) & 1).astype(np.float64)   # groups x channels
    by_user = sp.csr_matrix((masks["count"].to_numpy().astype(np.float64),
                             (masks["code"].to_numpy(), np.arange(masks.height))), shape=(n_users, masks.height))
    inter = np.stack([by_user @ (bits * bits[:, [c]]) for c in range(n)], axis=1) if n else np.zeros((0, 0, 0))
    sizes = by_user @ bits                                                                  # users x channels
    union = sizes[:, :, None] + sizes[:, None, :] - inter                                   # users x n x n
    counted = union > 0
    jaccard = np.where(counted, inter / np.maximum(union, 1), 0.0).sum(axis=0)
    n_counted = counted.sum(axis=0)
    jaccard = np.where(n_counted > 0, jaccard / np.maximum(n_counted, 1), 0.0)
    return pl.DataFrame({CHANNEL: np.repeat(np.array(names, dtype=object), n).tolist(),
                         OTHER: np.tile(np.array(names, dtype=object), n).tolist(),
                         "jaccard": jaccard.ravel(), "users": n_counted.ravel().astype(np.int64)},
                        schema={CHANNEL: pl.String, OTHER: pl.String, "jaccard": pl.Float64, "users": pl.Int64})


def overlap_matrix(frame: pl.DataFrame, names: list[str]) -> list[list[float]]:
    """The overlap table as a square matrix in the order of ``names``."""
    lookup = {(a, b): v for a, b, v in frame.select(CHANNEL, OTHER, "jaccard").iter_rows()}
    return [[float(lookup.get((a, b), 0.0)) for b in names] for a in names]


def unique_hits(candidates: Mapping[str, pl.DataFrame], targets: pl.DataFrame, k: int) -> pl.DataFrame:
    """Per channel: ``hits`` (target pairs in its top K) and ``unique_hits`` (in no other channel's top K)."""
    names = list(candidates)
    users = targets.select(S.USER).unique()
    hits = stacked_top_k(candidates, k, users).join(targets.select(S.USER, S.ITEM), on=[S.USER, S.ITEM],
                                                     how="semi")
    finders = hits.group_by(S.USER, S.ITEM).agg(pl.col(CHANNEL).n_unique().alias("finders"))
    counted = (hits.join(finders, on=[S.USER, S.ITEM])
               .group_by(CHANNEL)
               .agg(pl.len().alias("hits"), (pl.col("finders") == 1).sum().alias("unique_hits")))
    return (pl.DataFrame({CHANNEL: names}).join(counted, on=CHANNEL, how="left")
            .with_columns(pl.col("hits").fill_null(0).cast(pl.Int64),
                          pl.col("unique_hits").fill_null(0).cast(pl.Int64)))


def renormalise(quotas: Mapping[str, int], total: int) -> dict[str, int]:
    """Scale quotas to add up to ``total`` (largest-remainder rounding, ties to the earlier channel)."""
    names = list(quotas)
    values = np.array([quotas[n] for n in names], dtype=np.float64)
    if not names or values.sum() <= 0:
        return dict.fromkeys(names, 0)
    exact = values * total / values.sum()
    floors = np.floor(exact).astype(np.int64)
    short = int(total - floors.sum())
    # Stable sort on the negated remainders: the largest remainders get the spare slots.
    order = np.argsort(-(exact - floors), kind="stable")
    floors[order[:short]] += 1
    return {n: int(v) for n, v in zip(names, floors)}


def equal_quotas(names: list[str], budget: int) -> dict[str, int]:
    """The budget split evenly, the remainder to the first channels: the untuned reference merge."""
    if not names:
        return {}
    base, extra = divmod(budget, len(names))
    return {name: base + (i < extra) for i, name in enumerate(names)}


def marginal_gains(candidates: Mapping[str, pl.DataFrame], quotas: Mapping[str, int],
                   merge: Callable[[dict[str, pl.DataFrame], dict[str, int]], pl.DataFrame],
                   score: Callable[[pl.DataFrame], dict], workers: int = 1) -> dict[str, dict]:
    """Per channel: ``score(merge(all)) - score(merge(all but the channel))``, quotas renormalised.

    ``score`` returns ``{k: {metric: value}}`` (as :func:`recall.evaluation.metrics`);
    the result has the same shape per channel, holding differences. The merges are
    independent and run ``workers`` at a time (the result does not depend on it).
    """
    names = [n for n in candidates if n in quotas]
    total = sum(quotas[n] for n in names)
    # None: the merge of all. A channel without slots adds nothing: its merge-without is that one.
    left_out = [None] + [n for n in names if quotas[n] > 0]

    def merged_without(name: str | None) -> dict:
        rest = [n for n in names if n != name]
        rest_quotas = {n: quotas[n] for n in rest}
        return score(merge({n: candidates[n] for n in rest},
                           rest_quotas if name is None else renormalise(rest_quotas, total)))

    scores = in_threads(merged_without, left_out, workers)
    full = scores[None]
    return {name: {k: {m: full[k][m] - scores.get(name, full)[k][m] for m in full[k]} for k in full}
            for name in names}


def user_segments(engaged: pl.DataFrame, users: pl.DataFrame, cfg: SegmentsConfig) -> pl.DataFrame:
    """``user_id, history, segment`` for the given users; ``engaged`` holds their training engagement."""
    history = engaged.group_by(S.USER).agg(pl.col(S.ITEM).n_unique().alias("history"))
    return (users.select(S.USER).unique()
            .join(history, on=S.USER, how="left")
            .with_columns(pl.col("history").fill_null(0).cast(pl.Int64))
            .with_columns(pl.when(pl.col("history") <= cfg.cold_max_items).then(pl.lit("cold"))
                          .when(pl.col("history") <= cfg.light_max_items).then(pl.lit("light"))
                          .otherwise(pl.lit("heavy")).alias(SEGMENT))
            .sort(S.USER))


def paired_difference(a: pl.DataFrame, b: pl.DataFrame, targets: pl.DataFrame, ks: list[int]) -> dict:
    """Recall@K of list ``a`` minus list ``b``, per K: mean and standard error over users (paired).

    Both lists are scored on the same users, so the per-user differences are
    paired; the standard error ``sd / sqrt(n)`` says whether a gap is more than
    noise (about two standard errors).
    """
    per_user = targets.group_by(S.USER).agg(pl.len().alias("n_targets"))
    n = per_user.height
    out = {}
    def hits_at(frame: pl.DataFrame, k: int) -> pl.DataFrame:
        return (frame.filter(pl.col(S.RANK) <= k)
                .join(targets.select(S.USER, S.ITEM), on=[S.USER, S.ITEM], how="semi")
                .group_by(S.USER).agg(pl.len().cast(pl.Int64).alias("hits")))  # signed: we subtract

    for k in ks:
        diff = (per_user.join(hits_at(a, k), on=S.USER, how="left")
                .join(hits_at(b, k), on=S.USER, how="left", suffix="_b")
                .select(((pl.col("hits").fill_null(0) - pl.col("hits_b").fill_null(0))
                         / pl.col("n_targets")).alias("d"))["d"].to_numpy())
        se = float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        out[k] = {"delta": float(diff.mean()) if n else 0.0, "stderr": se, "users": n}
    return out


def recall_curve(candidates: pl.DataFrame, targets: pl.DataFrame, k_max: int) -> np.ndarray:
    """Recall@K for K = 1..k_max (index K-1), averaged over the users in ``targets``."""
    per_user = targets.group_by(S.USER).agg(pl.len().alias("n_targets"))
    n_users = per_user.height
    if n_users == 0:
        return np.zeros(k_max)
    hits = (candidates.filter(pl.col(S.RANK) <= k_max)
            .join(targets.select(S.USER, S.ITEM), on=[S.USER, S.ITEM], how="semi")
            .join(per_user, on=S.USER))
    gained = np.bincount(hits[S.RANK].to_numpy().astype(np.int64) - 1,
                         weights=1.0 / hits["n_targets"].to_numpy(), minlength=k_max)[:k_max]
    return np.cumsum(gained) / n_users
