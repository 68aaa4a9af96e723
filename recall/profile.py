"""What a log looks like, and the starting configuration that fits it (`recall data check`, `recall init`).

A new dataset should not need hand settings. The profile measures what the
defaults depend on: how long the log spans, how active users are, whether it is a
ratings log (bursts of ratings months apart, every item rated once) or a behaviour
log (sessions of clicks, carts and purchases), whether impressions exist, which
side tables and columns are there, and how many users of a recent window have no
history at all. :func:`starting_config` turns it into a commented TOML file: one
comment per choice, saying which measurement chose it. ``recall tune`` then
chooses the quotas and the hot list's settings on validation windows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from recall import schema as S
from recall.io import Dataset

DAY = 86400
ENGAGED = ("click", "fav", "cart", "buy")
TEST_WINDOWS = (1, 2, 7, 14, 28, 56, 91)  # days; the first holding enough of the log is the test window
MAX_CROWD_VALUES = 50  # more distinct values than this: too fine for a crowd


@dataclass
class Profile:
    """Measurements of a data folder (plain values, JSON-ready)."""

    events: int
    users: int
    items: int
    span_days: float
    behaviors: dict[str, int]
    kind: str  # "ratings" or "behaviour"
    has_impressions: bool
    events_per_user: dict[str, float]  # median, p90
    items_per_user: dict[str, float]
    active_days_per_user: float  # median days between a user's first and last event
    test_days: float  # the suggested test (and validation) window
    test_share: float  # share of events inside it
    cold_user_share: float  # users active in that window with no event before it
    item_columns: list[str] = field(default_factory=list)
    crowd_attributes: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str]]:
        """(measurement, value) pairs for a table."""
        return [(key, _text(value)) for key, value in asdict(self).items()]


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_text(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return str(value)


def _quantiles(values: pl.Series) -> dict[str, float]:
    if values.len() == 0:  # no engaged user (an impressions-only log)
        return {"median": 0.0, "p90": 0.0}
    return {"median": float(values.median()), "p90": float(values.quantile(0.9))}


def profile(data: Dataset) -> Profile:
    """Measure the log (vectorised: a few group-bys over the events)."""
    events = data.events
    ts = events[S.TS]
    start, end = int(ts.min()), int(ts.max())
    mix = {str(b): int(n) for b, n in events.group_by(S.BEHAVIOR).len().sort(S.BEHAVIOR).iter_rows()}
    engaged = events.filter(pl.col(S.BEHAVIOR).is_in(ENGAGED))
    per_user = engaged.group_by(S.USER).agg(n=pl.len(), items=pl.col(S.ITEM).n_unique(),
                                            active=(pl.col(S.TS).max() - pl.col(S.TS).min()) / DAY)
    # A ratings log: ratings as a column, or each (user, item) engaged at one moment only, never revisited.
    revisits = engaged.group_by(S.USER, S.ITEM).agg(pl.col(S.TS).n_unique().alias("times"))["times"]
    # (A log with no engagement at all, impressions only, has nothing to call ratings.)
    ratings = "rating" in events.columns or (revisits.len() > 0 and float((revisits > 1).mean()) < 0.01
                                             and "buy" not in mix)
    test_days = next((d for d in TEST_WINDOWS if (ts >= end + 1 - d * DAY).mean() >= 0.05), TEST_WINDOWS[-1])
    split = end + 1 - test_days * DAY
    recent = events.filter(pl.col(S.TS) >= split).select(S.USER).unique()
    known = events.filter(pl.col(S.TS) < split).select(S.USER).unique()
    cold = recent.join(known, on=S.USER, how="anti").height / max(recent.height, 1)
    return Profile(
        events=events.height, users=events[S.USER].n_unique(), items=events[S.ITEM].n_unique(),
        span_days=(end - start) / DAY, behaviors=mix, kind="ratings" if ratings else "behaviour",
        has_impressions=mix.get("impression", 0) > 0,
        events_per_user=_quantiles(per_user["n"]), items_per_user=_quantiles(per_user["items"]),
        active_days_per_user=float(per_user["active"].median() or 0.0), test_days=float(test_days),
        test_share=float((ts >= split).mean()), cold_user_share=cold,
        item_columns=[] if data.items is None else [c for c in data.items.columns if c != S.ITEM],
        crowd_attributes=_crowd_attributes(data.users),
    )


def _crowd_attributes(users: pl.DataFrame | None) -> list[str]:
    """Low-cardinality user columns, coarse (fewest values) first: the crowd hierarchy."""
    if users is None:
        return []
    counts = {c: users[c].drop_nulls().n_unique() for c in users.columns if c != S.USER}
    # A crowd must hold several users: a column with a value per user or two is an id (zip code).
    usable = [c for c, n in counts.items() if 1 < n <= min(MAX_CROWD_VALUES, users.height / 2)]
    return sorted(usable, key=lambda c: (counts[c], c))


def starting_config(p: Profile, data_dir: str) -> str:
    """A commented TOML config fitted to the profile; every choice names the measurement behind it."""
    engaged = [b for b in ENGAGED if p.behaviors.get(b, 0) > 0] or ["click"]
    ratings = p.kind == "ratings"
    # Triggers look back over a user's active period: bursts months apart in ratings logs.
    half_life = float(np.clip(round(p.span_days / 8), 7.0, 60.0)) if ratings else 7.0
    window = float(np.clip(round(p.span_days), 30.0, 365.0)) if ratings else 30.0
    light = int(max(5, round(p.items_per_user["median"])))
    lines = [
        f"# recall: a starting config written by `recall init` from {data_dir}.",
        f"# Profile: {p.events} events, {p.users} users, {p.items} items over {p.span_days:.1f} days; "
        f"a {p.kind} log; impressions: {'yes' if p.has_impressions else 'no'}.",
        "# Next: recall tune -c <this file> --out tuned.toml; recall eval -c <this file> -c tuned.toml",
        "seed = 42",
        "candidates_per_user = 200",
        "",
        "[data]",
        f'dir = "{data_dir}"',
        "",
        "[eval]",
        f"test_days = {p.test_days:g}                 # the shortest window holding >= 5% of the events "
        f"({p.test_share:.1%})",
        f"target_behaviors = {_list(engaged)}   # the engaged behaviours the log has",
        "",
        "[eval.segments]",
        f"light_max_items = {light}           # the median user has {p.items_per_user['median']:g} items",
        "",
        "[tune]",
        f"validation_days = {p.test_days:g}           # as long as the test window",
        "",
        "[triggers]",
        f"half_life_days = {half_life:g}           # "
        + (f"ratings: an eighth of the log's span ({p.span_days:.0f} days), within [7, 60]"
           if ratings else "behaviour log: interest moves within a week"),
        f"window_days = {window:g}             # "
        + ("ratings arrive in bursts months apart" if ratings else "a month of behaviour")
        + "; users with nothing inside fall back to their latest events",
        "behavior_weights = { impression = 0.0, click = 1.0, fav = 2.0, cart = 3.0, buy = 3.0 }",
    ]
    lines += _channel_sections(p, engaged, ratings)
    lines += _filter_sections(p, ratings)
    return "\n".join(lines) + "\n"


def _list(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


# Prior shares of the budget: `recall tune` keeps them unless its search gains beyond noise.
# The hot list backs every user (and is all a user without history gets), so it starts large.
PRIOR_SHARES = {"itemcf": 0.1, "usercf": 0.1, "ranki2i": 0.1, "association": 0.1, "item2vec": 0.05,
                "deepwalk": 0.05, "node2vec": 0.05, "eges": 0.05, "ease": 0.05, "als": 0.05, "swing": 0.05,
                "interest": 0.1, "crowd": 0.25}
SESSION_CHANNELS = ("item2vec", "deepwalk", "node2vec", "eges")
# Learned user-to-item channels: written disabled (a fit takes minutes where the counting channels
# take seconds); their prior share applies once a user enables them.
LEARNED_CHANNELS = ("youtubednn", "mind")
LEARNED_PRIOR_SHARE = 0.05


def _channel_sections(p: Profile, engaged: list[str], ratings: bool) -> list[str]:
    behaviors = f"behaviors = {_list(engaged)}"
    pair = ["pair_window_hours = inf          # ratings: when two were rated says little",
            "decay_half_life_hours = inf"] if ratings else []
    extra = {"itemcf": pair, "ranki2i": pair + ([] if p.has_impressions else
                                               ["# no impressions: the CTR is the documented deep-action proxy"]),
             **{name: ["session_gap_hours = 24.0         # ratings: a day of rating is one session"]
                for name in SESSION_CHANNELS if ratings}}
    lines = []
    for name, share in PRIOR_SHARES.items():
        lines += ["", f"[channels.{name}]", f"share = {share}"]
        if name == "swing" and not ratings:
            # Validation: users of a behaviour log rarely share two items (taobao-84k R@200 0.0007).
            lines.append("enabled = false                  # behaviour log: few user pairs share two items")
        if name == "interest" and "category_id" not in p.item_columns:
            lines.append("enabled = false                  # no category_id column in the items table")
        if name == "interest":
            lines.append("# size_exponent and popularity_half_life_days are chosen by `recall tune` on validation")
        elif name == "crowd":
            lines += [f"attributes = {_list(p.crowd_attributes)}   # low-cardinality users-table columns, "
                      "coarse first" if p.crowd_attributes
                      else "attributes = []                  # no users table: the global hot list",
                      "# rank_by, half_life_days and the crowd depth are chosen by `recall tune` on validation"]
        else:
            lines += [behaviors, *extra.get(name, [])]
    deep = any(p.behaviors.get(b, 0) for b in ("fav", "cart")) and not ratings
    lines += ["", "[channels.ges]", "enabled = false                  # EGES without attention: a reference only"]
    for name in LEARNED_CHANNELS:
        lines += ["", f"[channels.{name}]",
                  "enabled = false                  # learned u2i: minutes of CPU per fit; enable to compare "
                  "(BENCHMARKS.md, issue 17)", f"share = {LEARNED_PRIOR_SHARE}", behaviors]
    lines += ["", "[channels.retarget]"]
    lines += (["enabled = true", "quota = 10                       # retargeting volume is capped on purpose",
               "strict = true"] if deep else
              ["enabled = false                  # "
               + ("ratings: a rated item is not re-recommended" if ratings else "no fav or cart events")])
    return lines


def _filter_sections(p: Profile, ratings: bool) -> list[str]:
    buys = p.behaviors.get("buy", 0) > 0
    category, brand = "category_id" in p.item_columns, "brand_id" in p.item_columns
    capped = not ratings and (category or brand)
    # Over-cap candidates are demoted below the reserve; measured on the Taobao log with interest
    # recall, when they were still dropped, a 100-row reserve left 11% of users short of the
    # budget and 300 none (BENCHMARKS.md, issue 12): 300 keeps the caps holding for them.
    lines = (["", "[filters]", "reserve = 300                    # rows merged beyond the budget: the diversity "
              "caps' replacements"] if capped else [])
    lines += ["", "[filters.purchase]",
              *(["enabled = true", "estimate = true                  # each category's block from its repurchase "
                 "intervals in the log"] if buys else
                ["enabled = false                  # no purchases in the log"]),
              "", "[filters.diversity]"]
    if not capped:
        lines.append("enabled = false                  # "
                     + ("ratings: categories are genres" if ratings else "no category or brand columns"))
    else:
        lines.append(f"max_per_category = {40 if category else 0}")
        lines.append(f"max_per_brand = {20 if brand else 0}")
    return lines
