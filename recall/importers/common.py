"""Pieces several importers share: value mapping, ratings to behaviours, id types, age bands."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import polars as pl

from recall import schema as S
from recall.errors import RecallError

# Bands of the MovieLens 1M age codes (1, 18, 25, 35, 45, 50, 56) extended to
# raw ages, so every data set gets the same labels.
AGE_BANDS = ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (55, "45-54"))
AGE_OPEN_BAND = "55+"
NO_THRESHOLD = ("none", "off", "")


def map_values(expr: pl.Expr, mapping: Mapping[str, str]) -> pl.Expr:
    """``expr`` with each key of ``mapping`` replaced by its value; other values unchanged (alias the result).

    A when/then chain rather than ``Expr.replace``: polars does not stream
    ``replace`` and held the whole column in memory (2.4 GB more on 20M rows).
    """
    chain = None
    for key, value in mapping.items():
        chain = (pl.when(expr == key) if chain is None else chain.when(expr == key)).then(pl.lit(value))
    return expr if chain is None else chain.otherwise(expr)


def age_band(age: pl.Expr) -> pl.Expr:
    """Age in years (or a MovieLens 1M age code) to the shared band labels."""
    expr = pl.when(age.is_null()).then(pl.lit(None, dtype=pl.String))
    for upper, label in AGE_BANDS:
        expr = expr.when(age < upper).then(pl.lit(label))
    return expr.otherwise(pl.lit(AGE_OPEN_BAND))


# --------------------------------------------------------------------------- ratings


@dataclass(frozen=True)
class Thresholds:
    """Rating thresholds for behaviours; None turns the behaviour off (click: every rating is one)."""

    click: float | None
    fav: float | None


def _threshold(name: str, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in NO_THRESHOLD):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if math.isnan(number) or isinstance(value, bool):
        raise RecallError(f"{name} must be a number, e.g. 4, or 'none', not {value!r}")
    return number


def thresholds(click_threshold: Any, fav_threshold: Any) -> Thresholds:
    """Validate the ``click_threshold`` / ``fav_threshold`` options of the rating importers."""
    click = _threshold("click_threshold", click_threshold)
    fav = _threshold("fav_threshold", fav_threshold)
    if click is not None and fav is not None and fav < click:
        raise RecallError(f"fav_threshold ({fav:g}) is below click_threshold ({click:g}): a rating between "
                          "them would be a favourite that was not clicked; raise fav_threshold")
    return Thresholds(click=click, fav=fav)


def rating_events(frame: pl.LazyFrame, limits: Thresholds, rating: str = "rating") -> pl.LazyFrame:
    """Ratings (one row each, with ``ts``) to behaviour events at the rating's time.

    Without a click threshold every rating is a ``click`` (rating a film means it
    was chosen). With one, every rating is an ``impression`` and a rating at or
    above it adds a ``click``, so clicks / impressions is the share of liked
    ratings, a CTR proxy for the CTR-weighted channels. A rating at or above
    ``fav_threshold`` adds a ``fav``. Events are in time order, and at one second
    impression, click, fav (the sort is stable).
    """
    value = pl.col(rating)
    parts = []
    if limits.click is None:
        parts.append(frame.with_columns(pl.lit("click").alias(S.BEHAVIOR)))
    else:
        parts += [frame.with_columns(pl.lit("impression").alias(S.BEHAVIOR)),
                  frame.filter(value >= limits.click).with_columns(pl.lit("click").alias(S.BEHAVIOR))]
    if limits.fav is not None:
        parts.append(frame.filter(value >= limits.fav).with_columns(pl.lit("fav").alias(S.BEHAVIOR)))
    return pl.concat(parts).sort(S.TS, maintain_order=True)


# --------------------------------------------------------------------------- ids


def all_integral(frames: Sequence[pl.LazyFrame], column: str) -> bool:
    """True if every value of ``column`` in every frame is an integer (one streaming query per text frame).

    Decided over all tables together: if the events kept string ids and a side
    table integer ids, joins on the id would silently match nothing.
    """
    for frame in frames:
        dtype = frame.collect_schema()[column]
        if dtype.is_integer():
            continue
        if dtype != pl.String:
            return False
        value = pl.col(column)
        failing = frame.select((value.is_not_null() & value.cast(pl.Int64, strict=False).is_null()).any())
        if failing.collect(engine="streaming").item():
            return False
    return True


def id_cast(column: str, integral: bool) -> pl.Expr:
    """The id column as Int64 when every id is an integer, else as String."""
    return pl.col(column).cast(pl.Int64 if integral else pl.String)
