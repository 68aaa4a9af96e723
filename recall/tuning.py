"""Per-channel quotas chosen from data: greedy marginal-gain allocation on a validation window.

The seeds say the merge "adjusts each strategy's share according to its historical
performance". Here that history is a validation window just before the evaluation:

    train on events before T1,  validate on [T1, T2),  T2 = the split T of `recall eval`

with ``T1 = T2 - tune.validation_days`` (default: as long as the test window), so
tuning never sees the evaluation's test window [T2, T2 + eval.test_days). With
``validation_windows = n``, n consecutive windows ending at T2 are pooled, each with
its own training cut (less noise, n times the fitting). Every enabled channel is
fitted once per window on the training part; a quota vector q is then scored by the
merge and mechanism filters of :func:`recall.pipeline.merge_outputs` followed by the
evaluation's metric@K on the validation targets. The merge is evaluated by
:class:`QuotaMerger`, a faithful, cheaper evaluation of the same merge (the
quota-independent work done once; a test checks it equals ``merge_outputs`` row for
row), then the real :func:`recall.filters.filter_with_refill`. Only the validation users'
candidate rows are merged: the merge and every filter work user by user, so this
restriction changes no number. Cost: about ``budget / step x channels`` merges of the
validation users for the greedy pass, plus ``channels x (channels - 1)`` per
refinement move.

**Greedy marginal-gain allocation.** Start every channel at ``min_quota``; while
budget is left, give ``step`` slots to the channel whose extra slots raise the
merged metric most (ties: the channel that scores best on its own, then config
order), recording each step. With back-fill the merge depends on the quotas'
ratios, so early steps choose the mix and later ones refine the proportions.
**Refinement** (``refine``): then move ``step`` slots from one channel to another
while the best such move improves the metric (best-improvement local search, at
most ``channels x (channels - 1)`` evaluations per move). Strict channels keep at
most their configured quota (``respect_strict``): their volume is capped on purpose.
:func:`exhaustive_allocate` enumerates every allocation for small cases; the tests
check the greedy result against it.

The result is written as a TOML fragment (``[channels.X] quota = N`` plus a comment
block with the validation numbers) to be layered over the base config:
``recall eval -c configs/default.toml -c tuned.toml`` (:func:`load_config_files`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from recall import schema as S
from recall.analysis import equal_quotas
from recall.config import Config
from recall.sections import TuneConfig
from recall.context import TrainData
from recall.errors import RecallError
from recall.evaluation import evaluation_targets, metrics, split_data
from recall.filters import filter_with_refill, purchase_blocks
from recall.merge import run_positions, slot_positions
from recall.io import Dataset
from recall.pipeline import Step, fit_channels, no_progress
from recall.split import REPEAT, Split, dataset_at, user_split

Quotas = dict[str, int]
Score = Callable[[Quotas], float]
# A move must beat the current value by more than float noise to count as an improvement.
TOLERANCE = 1e-12


@dataclass
class Allocation:
    """Quotas found by a search, their score, and the search's trace."""

    quotas: Quotas
    value: float
    path: list[dict] = field(default_factory=list)
    evaluations: int = 0


class CachedScore:
    """Memoise a score function over quota vectors (greedy and refinement revisit allocations)."""

    def __init__(self, score: Score):
        self.score = score
        self.cache: dict[tuple, float] = {}

    def __call__(self, quotas: Quotas) -> float:
        key = tuple(sorted(quotas.items()))
        if key not in self.cache:
            self.cache[key] = float(self.score(dict(quotas)))
        return self.cache[key]

    @property
    def evaluations(self) -> int:
        return len(self.cache)


def _caps(names: Sequence[str], max_quota: dict[str, int] | None, budget: int) -> dict[str, int]:
    return {n: budget if max_quota is None or n not in max_quota else max_quota[n] for n in names}


def greedy_allocate(score: Score, names: Sequence[str], budget: int, step: int, *, min_quota: int = 0,
                    max_quota: dict[str, int] | None = None, prefer: Sequence[str] | None = None,
                    refine: bool = True) -> Allocation:
    """Hand out the budget ``step`` slots at a time to the channel with the largest marginal gain.

    Parameters
    ----------
    score
        Metric of the merged lists under a quota vector (higher is better).
    names
        Channels to allocate to.
    budget
        Total slots per user.
    step
        Slots per greedy step; the last step takes what is left.
    min_quota
        Slots every channel starts with.
    max_quota
        Optional per-channel caps (a capped channel stops receiving slots).
    prefer
        Tie-break order (best first); default: the order of ``names``.
    refine
        Run the pairwise-move local search after the greedy pass.
    """
    names = list(names)
    caps = _caps(names, max_quota, budget)
    cached = score if isinstance(score, CachedScore) else CachedScore(score)
    rank = {n: i for i, n in enumerate(prefer or names)}
    quotas = {n: min(min_quota, caps[n]) for n in names}
    left = budget - sum(quotas.values())
    if left < 0:
        raise RecallError(f"tune.min_quota = {min_quota} for {len(names)} channels exceeds the budget "
                          f"candidates_per_user = {budget}; lower tune.min_quota")
    current = cached(quotas) if sum(quotas.values()) else 0.0
    path = []
    while left > 0:
        give = min(step, left)
        options = [n for n in names if quotas[n] + give <= caps[n]]
        if not options:
            break  # every channel is at its cap: the rest of the budget stays unassigned
        values = {n: cached({**quotas, n: quotas[n] + give}) for n in options}
        best = max(options, key=lambda n: (values[n], -rank.get(n, len(rank))))
        quotas[best] += give
        left -= give
        path.append({"move": f"+{give} {best}", "gain": values[best] - current, "value": values[best],
                     "quotas": dict(quotas)})
        current = values[best]
    if refine:
        quotas, current = _refine(cached, quotas, current, step, min_quota, caps, path)
    return Allocation(quotas, current, path, cached.evaluations)


def _refine(score: CachedScore, quotas: Quotas, current: float, step: int, min_quota: int,
            caps: dict[str, int], path: list[dict]) -> tuple[Quotas, float]:
    """Best-improvement local search: move ``step`` slots between two channels while it helps."""
    names = list(quotas)
    while True:
        best_value, best_quotas, best_move = current, None, ""
        for source, target in itertools.permutations(names, 2):
            moved = min(step, quotas[source] - min_quota, caps[target] - quotas[target])
            if moved <= 0:
                continue
            trial = {**quotas, source: quotas[source] - moved, target: quotas[target] + moved}
            value = score(trial)
            if value > best_value + TOLERANCE:
                best_value, best_quotas, best_move = value, trial, f"{moved} {source} -> {target}"
        if best_quotas is None:
            return quotas, current
        path.append({"move": best_move, "gain": best_value - current, "value": best_value,
                     "quotas": dict(best_quotas)})
        quotas, current = best_quotas, best_value


def allocations(names: Sequence[str], budget: int, step: int, min_quota: int = 0,
                max_quota: dict[str, int] | None = None) -> Iterable[Quotas]:
    """Every quota vector of multiples of ``step`` above ``min_quota`` that uses the whole budget.

    A remainder (budget not a multiple of step) goes whole to one channel, as in the greedy pass.
    """
    names = list(names)
    caps = _caps(names, max_quota, budget)
    free = budget - min_quota * len(names)
    units, rest = divmod(free, step)
    for split in itertools.product(range(units + 1), repeat=len(names)):
        if sum(split) != units:
            continue
        base = {n: min_quota + u * step for n, u in zip(names, split)}
        for extra in (names if rest else [None]):
            quotas = base if extra is None else {**base, extra: base[extra] + rest}
            if all(quotas[n] <= caps[n] for n in names):
                yield quotas


def exhaustive_allocate(score: Score, names: Sequence[str], budget: int, step: int, *, min_quota: int = 0,
                        max_quota: dict[str, int] | None = None) -> Allocation:
    """The best allocation by enumeration (ties: the first found); for small cases and tests."""
    cached = score if isinstance(score, CachedScore) else CachedScore(score)
    best = None
    for quotas in allocations(names, budget, step, min_quota, max_quota):
        value = cached(quotas)
        if best is None or value > best.value + TOLERANCE:
            best = Allocation(dict(quotas), value)
    if best is None:
        raise RecallError("no quota allocation fits the budget; lower tune.min_quota")
    best.evaluations = cached.evaluations
    return best


@dataclass
class Validation:
    """One validation split: training data before T1, targets in [T1, T2), the channels' candidates."""

    train: TrainData
    targets: pl.DataFrame
    t1: int
    t2: int
    candidates: dict[str, pl.DataFrame] = field(default_factory=dict)

    @property
    def users(self) -> int:
        return self.targets[S.USER].n_unique()


def validation_split(cfg: Config, data: Dataset, t1: int, t2: int) -> Validation:
    """Train on what was knowable at ``t1``; targets from [t1, t2), chosen as the evaluation chooses them."""
    events = data.events
    split = Split(dataset_at(data, t1), events.filter((pl.col(S.TS) >= t1) & (pl.col(S.TS) < t2)), t1,
                  cfg.eval.protocol)
    if split.train.events.height == 0 or split.test.height == 0:
        part = "training" if split.train.events.height == 0 else "validation"
        raise RecallError(f"the validation window [{t1}, {t2}) leaves no {part} events; set "
                          "tune.validation_days (and tune.validation_windows) so the windows fall inside the log")
    train = TrainData.build(split.train, now=t1, triggers=cfg.triggers, seed=cfg.seed)
    pairs = evaluation_targets(train, split, cfg.eval)
    if cfg.eval.exclude_seen_targets:
        pairs = pairs.filter(~pl.col(REPEAT))
    targets = pairs.select(S.USER, S.ITEM)
    if targets.height == 0:
        raise RecallError(f"the validation window [{t1}, {t2}) has no target interactions; "
                          "widen tune.validation_days")
    return Validation(train, targets, t1, t2)


def validation_windows(cfg: Config, data: Dataset, settings: TuneConfig | None = None) -> list[tuple[int, int]]:
    """The validation windows [T1, T2), latest first, the latest ending at the evaluation split.

    Time protocol: windows as long as ``tune.validation_days`` (default: the test
    window). User protocol: each window's T1 is the ``eval.split_quantile`` of the
    events before its T2, so validation users are held out as test users are.
    """
    settings = settings or cfg.tune
    split = split_data(data, cfg.eval).ts
    if cfg.eval.protocol == "user":
        windows, t2 = [], split
        for _ in range(settings.validation_windows):
            t1 = user_split(Dataset(data.events.filter(pl.col(S.TS) < t2)), cfg.eval.split_quantile).ts
            windows.append((t1, t2))
            t2 = t1
        return windows
    length = int((settings.validation_days or cfg.eval.test_days) * 86400)
    return [(split - (i + 1) * length, split - i * length) for i in range(settings.validation_windows)]


class QuotaMerger:
    """The merge of :func:`recall.merge.merge_channels` plus the mechanism filters, for many quota vectors.

    A faithful, cheaper evaluation of the same merge: the quota-independent work is
    done once (the distinct (user, item) pairs and each channel's rank of each pair,
    a pairs x channels array, ``inf`` where the channel lacks the pair); a quota
    vector then costs a few array operations. As in ``merge_channels``, a pair's
    position is ``min over channels of rank / quota`` (ties: the channel first by
    name), a capped channel (strict, or no back-fill) has no position beyond its
    quota, a zero quota none at all; each user's pairs are ordered by (position,
    channel, item) and the first ``budget + reserve`` kept; then the real
    :func:`recall.filters.filter_with_refill` cuts to the budget (merging a short
    list again to full depth). A test checks the
    output equals :func:`recall.pipeline.merge_outputs` row for row.
    """

    def __init__(self, cfg: Config, candidates: dict[str, pl.DataFrame], train: TrainData):
        self.cfg = cfg
        self.train = train
        self.names = sorted(candidates)  # the merge's channel order for ties
        stacked = pl.concat([frame.select(S.USER, S.ITEM, S.RANK).with_columns(pl.lit(i, pl.Int32).alias("ch"))
                             for i, frame in enumerate(candidates[n] for n in self.names)], how="vertical_relaxed")
        pairs = stacked.select(S.USER, S.ITEM).unique().sort(S.USER, S.ITEM)
        self.user_ids = pairs[S.USER]
        self.item_ids = pairs[S.ITEM]
        # Codes that sort like the ids, for the merge's final tie-break on the item.
        self.user_code = pairs.select(pl.col(S.USER).rank("dense")).to_series().to_numpy()
        self.item_code = pairs.select(pl.col(S.ITEM).rank("dense")).to_series().to_numpy()
        located = stacked.join(pairs.with_row_index("pair"), on=[S.USER, S.ITEM])
        self.ranks = np.full((pairs.height, len(self.names)), np.inf)
        self.ranks[located["pair"].to_numpy(), located["ch"].to_numpy()] = located[S.RANK].to_numpy()
        self.strict = np.array([cfg.channels[n].strict or not cfg.merge.backfill for n in self.names])
        # The purchase blocks depend on the training data only: once, not per quota vector.
        self.blocks = purchase_blocks(train, cfg.filters.purchase) if cfg.filters.purchase.enabled else None

    def merged(self, quotas: Quotas, depth: int | None, users: pl.Series | None = None) -> pl.DataFrame:
        """``user_id, item_id, score, rank, source`` of ``users`` (None: all), ``depth`` rows per user at
        most (None: all)."""
        # The merge's own rule (recall.merge.slot_positions), column by column.
        positions = np.column_stack([slot_positions(self.ranks[:, i], quotas.get(n, 0), bool(self.strict[i]))
                                     for i, n in enumerate(self.names)]) if self.names else self.ranks
        source = np.argmin(positions, axis=1)  # the first minimum: the channel first by name
        best = positions[np.arange(len(source)), source]
        keep = np.isfinite(best)
        if users is not None:
            keep &= self.user_ids.is_in(users.implode()).to_numpy()
        keep = np.flatnonzero(keep)
        order = keep[np.lexsort((self.item_code[keep], source[keep], best[keep], self.user_code[keep]))]
        rank = run_positions(self.user_code[order])
        if depth is not None:
            within = rank <= depth
            order, rank = order[within], rank[within]
        return pl.DataFrame({
            S.USER: self.user_ids.gather(order), S.ITEM: self.item_ids.gather(order),
            S.SCORE: 1.0 / best[order], S.RANK: rank.astype(np.int32),
            "source": pl.Series(self.names, dtype=pl.String).gather(source[order]),
        })

    def __call__(self, quotas: Quotas) -> pl.DataFrame:
        """The filtered merge cut to the budget, as ``merge_outputs(...)[0]`` (without ``channels``)."""
        return filter_with_refill(lambda depth, users: self.merged(quotas, depth, users), self.train,
                                  self.cfg.filters, self.cfg.candidates_per_user, self.blocks)[0]


def quota_scorer(cfg: Config, validations: Sequence[Validation], metric: str, k: int) -> CachedScore:
    """metric@K of the merge + filters under a quota vector, pooled over the validation windows.

    The metric is a mean over users, so pooling weights each window by its users.
    Only the validation users' rows are merged: the merge and the filters work
    user by user, so dropping the other users changes no result.
    """
    prepared = []
    for v in validations:
        users = v.targets.select(S.USER).unique()
        restricted = {n: frame.join(users, on=S.USER, how="semi") for n, frame in v.candidates.items()}
        prepared.append((v, QuotaMerger(cfg, restricted, v.train), v.train.engaged()[S.ITEM].n_unique()))
    total = sum(v.users for v in validations)

    def score(quotas: Quotas) -> float:
        if not any(q > 0 for q in quotas.values()) or not total:
            return 0.0
        pooled = 0.0
        for v, merge, n_items in prepared:
            pooled += v.users * metrics(merge(quotas), v.targets, [k], n_items)[k][metric]
        return pooled / total

    return CachedScore(score)


@dataclass
class TuneResult:
    """Tuned quotas and what they scored on the validation window."""

    quotas: Quotas
    gain: dict[str, float]  # searched minus configured quotas, recall@K: delta, stderr, users (paired)
    kept_prior: bool  # the gain was within min_z standard errors: the configured quotas were kept
    params: dict[str, dict]  # channel parameters chosen on validation ({} without the search)
    segments: dict[str, dict]  # per user segment: quotas, gain over the global quotas, users, kept
    metric: str
    k: int
    budget: int
    light_max_items: int
    step: int
    windows: list[tuple[int, int]]  # validation windows [T1, T2), latest first
    validation_users: int
    validation_targets: int
    scores: dict[str, float]  # "tuned", "equal", "configured"
    equal: Quotas
    configured: Quotas
    alone: dict[str, float]  # each channel given the whole budget
    path: list[dict]
    evaluations: int
    seconds: float

    def to_dict(self) -> dict:
        return {key: getattr(self, key) for key in self.__dataclass_fields__}

    def to_toml(self) -> str:
        """The config fragment: a comment block with the validation numbers, then one quota per channel."""
        def when(ts: int) -> str:
            return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

        label = f"{self.metric}@{self.k}"
        lines = [
            f"# Tuned by `recall tune`: per-channel quotas maximising the merged {label}",
            f"# under the budget candidates_per_user = {self.budget} (greedy marginal-gain allocation",
            f"# in steps of {self.step} slots; merge and filters as in `recall run`).",
            "# Validation windows [T1, T2), each scored with the channels trained on events before its T1:",
            *(f"#   [{t1}, {t2}) = [{when(t1)}, {when(t2)})" for t1, t2 in self.windows),
            f"# {self.validation_users} users, {self.validation_targets} targets in all.",
            f"# The evaluation's test window starts at {when(self.windows[0][1])} (ts {self.windows[0][1]}): not used.",
            f"# Validation {label} (pooled over the windows):",
            f"#   tuned       {self.scores['tuned']:.4f}   {_quota_text(self.quotas)}",
            f"#   equal       {self.scores['equal']:.4f}   {_quota_text(self.equal)}",
            f"#   configured  {self.scores['configured']:.4f}   {_quota_text(self.configured)}",
            "#   each channel alone: " + ", ".join(f"{n} {v:.4f}" for n, v in self.alone.items()),
            f"# Searched minus configured quotas, recall@{self.k}: {self.gain['delta']:+.4f} "
            f"± {self.gain['stderr']:.4f} (s.e., {self.gain['users']} paired users): "
            + ("within noise, so the configured quotas are kept." if self.kept_prior
               else "beyond noise, so the searched quotas are used."),
            f"# {self.evaluations} merges evaluated in {self.seconds:.1f} s.",
            "# Use it over the base config: recall eval -c <base.toml> -c <this file>",
        ]
        for segment, found in self.segments.items():
            lines.append(f"# {segment} users ({found['users']}): own quotas {found['gain']['delta']:+.4f} "
                         f"± {found['gain']['stderr']:.4f} over the global ones: "
                         + ("kept" if not found["kept_prior"] else "within noise, global quotas used"))
        for name, quota in self.quotas.items():
            lines += ["", f"[channels.{name}]", f"quota = {quota}"]
            chosen = self.params.get(name, {})
            if chosen:
                lines.append("# chosen on validation from " + ", ".join(
                    f"{key} in {values}" for key, values in SEARCH_SPACE_TEXT.get(name, {}).items()))
            lines += [f"{key} = {_toml_value(value)}" for key, value in chosen.items()]
        used = {segment: found for segment, found in self.segments.items() if not found["kept_prior"]}
        if used:
            lines += ["", "[merge]", f"light_max_items = {self.light_max_items}"]
        for segment, found in used.items():
            lines += ["", f"[merge.segment_quotas.{segment}]",
                      *(f"{n} = {q}" for n, q in found["quotas"].items())]
        return "\n".join(lines) + "\n"

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        if path.parent != Path(""):
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_toml())
        return path


def _toml_value(value) -> str:
    if value is None:
        return "inf"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


# --- channel parameters chosen on validation ------------------------------------------------------

SEARCH_SPACE_TEXT = {"crowd": {"attributes": "every prefix of the configured list",
                               "rank_by": ["ctr", "volume"], "half_life_days": [7, 14, 30, "inf"]},
                     "interest": {"size_exponent": [0, 0.5, 1], "popularity_half_life_days": [7, 14, 30, "inf"]}}


def crowd_variants(params) -> list[dict]:
    """The hot list's settings worth trying: crowd depth, CTR or volume, the recency blend."""
    depths = [list(params.attributes[:d]) for d in range(len(params.attributes) + 1)]
    return [dict(attributes=a, rank_by=r, half_life_days=h)
            for a in depths for r in ("ctr", "volume") for h in (7.0, 14.0, 30.0, None)
            if not (r == "ctr" and h != params.half_life_days)]  # the CTR mode does not decay


def interest_variants(params) -> list[dict]:
    """Interest recall: raw popularity or share of the category, and how fast popularity votes decay."""
    return [dict(size_exponent=e, popularity_half_life_days=h)
            for e in (0.0, 0.5, 1.0) for h in (7.0, 14.0, 30.0, None)]


# Channels whose parameters have no safe universal default: the variants worth trying.
PARAM_VARIANTS = {"crowd": crowd_variants, "interest": interest_variants}


def search_channel_params(cfg: Config, validations: Sequence[Validation], metric: str, k: int
                          ) -> tuple[Config, dict[str, dict]]:
    """Channel parameters with no safe universal default, chosen by the channel's own metric@K on validation.

    The crowd hot list: whether demographic crowds beat the global list, whether CTR
    or engaged users rank it, how fast votes decay. Interest recall: whether a
    category's items rank by raw popularity or by their share of the category, and
    how fast popularity decays. Both depend on the data. A variant that cannot fit
    (CTR without impressions) is skipped.
    """
    from recall.channels import get_channel

    chosen: dict[str, dict] = {}
    channels = dict(cfg.channels)
    total = max(sum(v.users for v in validations), 1)
    for name, variants in PARAM_VARIANTS.items():
        if name not in cfg.enabled_channels():
            continue
        base = cfg.channels[name]
        best, best_value = None, -1.0
        for variant in variants(base):
            params = base.model_copy(update=variant)
            value = 0.0
            try:
                for v in validations:
                    channel = get_channel(name)(params).fit(v.train)
                    frame = channel.recommend(v.train, k, v.train.user_rows(v.targets[S.USER]))
                    value += v.users * metrics(frame, v.targets, [k], 1)[k][metric]
            except RecallError:
                continue
            if value / total > best_value + TOLERANCE:
                best, best_value = variant, value / total
        if best is not None:
            chosen[name] = best
            channels[name] = base.model_copy(update=best)
    return cfg.model_copy(update={"channels": channels}), chosen


def restricted(validation: Validation, users: pl.DataFrame) -> Validation:
    """The validation split on a subset of its users (targets and candidates)."""
    return Validation(validation.train, validation.targets.join(users, on=S.USER, how="semi"), validation.t1,
                      validation.t2, {n: f.join(users, on=S.USER, how="semi")
                                      for n, f in validation.candidates.items()})


def segment_search(cfg: Config, validations: Sequence[Validation], settings: TuneConfig, tuned: Quotas,
                   free: list[str], fixed: Quotas, caps: dict[str, int], k: int) -> dict[str, dict]:
    """Quotas of their own for light and heavy users, kept only where they beat ``tuned`` beyond noise.

    Cold users are left out: only the hot lists serve them, whatever the quotas.
    """
    from recall.pipeline import user_segments

    budget = cfg.candidates_per_user
    found: dict[str, dict] = {}
    for segment in ("light", "heavy"):
        parts = []
        for v in validations:
            users = user_segments(v.train, v.targets.select(S.USER).unique(), cfg.merge.light_max_items)
            part = restricted(v, users.filter(pl.col("segment") == segment).select(S.USER))
            if part.targets.height:
                parts.append(part)
        if sum(p.users for p in parts) < settings.min_segment_users:
            continue
        score = quota_scorer(cfg, parts, settings.metric, k)
        search = greedy_allocate(lambda q: score({**q, **fixed}), free, budget - sum(fixed.values()),
                                 settings.step, min_quota=settings.min_quota, max_quota=caps,
                                 refine=settings.refine)
        quotas = {n: fixed.get(n, search.quotas.get(n, 0)) for n in tuned}
        gain = paired_gain(cfg, parts, quotas, tuned, k)
        found[segment] = {"quotas": quotas, "gain": gain, "users": sum(p.users for p in parts),
                          "kept_prior": gain["delta"] <= settings.min_z * gain["stderr"]}
    return found


def paired_gain(cfg: Config, validations: Sequence[Validation], tuned: Quotas, prior: Quotas, k: int) -> dict:
    """Recall@K of the merge under ``tuned`` minus under ``prior``, paired per validation user, pooled."""
    from recall.analysis import paired_difference

    deltas, variances, users = 0.0, 0.0, 0
    for v in validations:
        restricted = {n: f.join(v.targets.select(S.USER).unique(), on=S.USER, how="semi")
                      for n, f in v.candidates.items()}
        merge = QuotaMerger(cfg, restricted, v.train)
        diff = paired_difference(merge(tuned), merge(prior), v.targets, [k])[k]
        deltas += diff["delta"] * diff["users"]
        variances += (diff["stderr"] * diff["users"]) ** 2 if np.isfinite(diff["stderr"]) else 0.0
        users += diff["users"]
    return {"delta": deltas / max(users, 1), "stderr": float(np.sqrt(variances)) / max(users, 1), "users": users}


def _quota_text(quotas: Quotas) -> str:
    return ", ".join(f"{n}={q}" for n, q in quotas.items())


def tune(cfg: Config, data: Dataset, step: Step = no_progress, settings: TuneConfig | None = None) -> TuneResult:
    """Choose per-channel quotas on the validation window (see the module docstring).

    ``settings`` defaults to the config's ``[tune]`` section.
    """
    started = time.perf_counter()
    settings = settings or cfg.tune
    names = cfg.enabled_channels()
    if not names:
        raise RecallError("no channel is enabled; set channels.<name>.enabled = true in the config")
    budget = cfg.candidates_per_user
    k = settings.k or budget
    windows = validation_windows(cfg, data, settings)
    validations = []
    for i, (t1, t2) in enumerate(windows, 1):
        with step(f"validation window {i}/{len(windows)}"):
            validations.append(validation_split(cfg, data, t1, t2))
    params: dict[str, dict] = {}
    if settings.search_params:
        with step("channel parameter search"):
            cfg, params = search_channel_params(cfg, validations, settings.metric, k)
    for validation in validations:
        # Only the validation users' candidates are scored (quota_scorer).
        outputs = fit_channels(cfg, validation.train, names, step, tables=False,
                               users=validation.train.user_rows(validation.targets[S.USER]))
        validation.candidates = {n: o.candidates for n, o in outputs.items()}
    score = quota_scorer(cfg, validations, settings.metric, k)
    configured = {n: q for n, q in cfg.quotas().items() if n in names}
    unknown = sorted(set(settings.fixed) - set(names))
    if unknown:
        raise RecallError(f"tune.fixed names {unknown}, which are not enabled channels; "
                          f"enabled: {', '.join(names)}")
    fixed = {n: configured[n] for n in names if n in settings.fixed}
    free = [n for n in names if n not in fixed]
    caps = ({n: configured[n] for n in free if cfg.channels[n].strict} if settings.respect_strict else {})
    with step("quota search"):
        alone = {n: score({n: caps.get(n, fixed.get(n, budget))}) for n in names}
        prefer = sorted(free, key=lambda n: -alone[n])
        if sum(fixed.values()) > budget:
            raise RecallError(f"the fixed quotas {fixed} exceed the budget candidates_per_user = {budget}; "
                              "lower them or remove channels from tune.fixed")
        found = greedy_allocate(lambda q: score({**q, **fixed}), free, budget - sum(fixed.values()),
                                settings.step, min_quota=settings.min_quota, max_quota=caps, prefer=prefer,
                                refine=settings.refine)
        tuned = {n: fixed.get(n, found.quotas.get(n, 0)) for n in names}
        # Greedy steps can miss a corner: if one free channel given the whole budget scores
        # better, that allocation stands (the fixed channels keep their slots).
        # (A channel capped below the free budget has no such corner: it would leave slots unassigned.)
        free_budget = budget - sum(fixed.values())
        corners = {n: {**{m: 0 for m in free}, n: free_budget, **fixed}
                   for n in free if settings.min_quota == 0 and caps.get(n, free_budget) >= free_budget}
        best_corner = max(corners, key=lambda n: score(corners[n]), default=None)
        if best_corner is not None and score(corners[best_corner]) > score(tuned) + TOLERANCE:
            tuned = {n: corners[best_corner].get(n, 0) for n in names}
        equal = equal_quotas(names, budget)
        scores = {"tuned": score(tuned), "equal": score(equal), "configured": score(configured)}
        gain = paired_gain(cfg, validations, tuned, configured, k)
        kept_prior = gain["delta"] <= settings.min_z * gain["stderr"]
        if kept_prior:
            tuned = dict(configured)  # the search found no gain beyond noise: the prior stands
    segments: dict[str, dict] = {}
    if settings.segment_quotas:
        with step("per-segment quota search"):
            segments = segment_search(cfg, validations, settings, tuned, free, fixed, caps, k)
    return TuneResult(
        quotas=tuned, gain=gain, kept_prior=kept_prior, params=params, segments=segments,
        metric=settings.metric, k=k, budget=budget, step=settings.step, light_max_items=cfg.merge.light_max_items,
        windows=windows, validation_users=sum(v.users for v in validations),
        validation_targets=sum(v.targets.height for v in validations), scores=scores, equal=equal,
        configured=configured, alone=alone, path=found.path, evaluations=score.evaluations, seconds=time.perf_counter() - started)
