"""Taobao display-ad click log (Alibaba Tianchi): ``raw_sample.csv``, ``ad_feature.csv``, ``user_profile.csv``.

Layout, as published (comma-separated, header lines):

- ``raw_sample.csv``: ``user,time_stamp,adgroup_id,pid,nonclk,clk``, one row per ad
  shown (epoch seconds; ``pid`` the resource position; ``clk`` 1 if clicked);
  about 26M rows over 8 days.
- ``ad_feature.csv``: ``adgroup_id,cate_id,campaign_id,customer,brand,price``
  (``brand`` is ``NULL`` when unknown).
- ``user_profile.csv``: ``userid,cms_segid,cms_group_id,final_gender_code,age_level,
  pvalue_level,shopping_level,occupation,new_user_class_level`` (1 = male, 2 =
  female; empty where unknown).

Every row is an ``impression``; ``clk = 1`` adds a ``click`` at the same second,
so CTR-based channels (RankI2I, crowd hot lists) see real impressions. Items are ad
groups (``category_id`` = cate_id, ``brand_id`` = brand). Users get the names the
crowd channel groups by: ``gender`` (M/F), ``age_band`` (the age level, 0-6) and
``city`` (the city tier, ``new_user_class_level``), plus the other profile columns.
The 700M-row ``behavior_log.csv`` of the same release is per category and brand,
not per ad, and is not read.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recall import schema as S
from recall.errors import RecallError
from recall.importers.layout import TextFile, read_file
from recall.importers.plan import Plan
from recall.importers.text import Skipped, check_on_bad_lines, existing, one_of

TC = "Tianchi ad-click"
SAMPLE = TextFile(TC, "raw_sample.csv", ",", ("user", "time_stamp", "adgroup_id", "pid", "nonclk", "clk"),
                  header=("user", "time_stamp", "adgroup_id", "pid", "nonclk", "clk"))
ADS = TextFile(TC, "ad_feature.csv", ",", ("adgroup_id", "cate_id", "campaign_id", "customer", "brand", "price"),
               header=("adgroup_id", "cate_id", "campaign_id", "customer", "brand", "price"), nulls=("NULL",))
PROFILE_COLUMNS = ("userid", "cms_segid", "cms_group_id", "final_gender_code", "age_level", "pvalue_level",
                   "shopping_level", "occupation", "new_user_class_level")
PROFILE = TextFile(TC, "user_profile.csv", ",", PROFILE_COLUMNS, header=PROFILE_COLUMNS)
GENDERS = {1: "M", 2: "F"}


def _events(path: Path, on_bad_lines: str, skipped: list[Skipped]) -> pl.LazyFrame:
    rows = read_file(path, SAMPLE, on_bad_lines=on_bad_lines, skipped=skipped,
                     required=("user", "time_stamp", "adgroup_id", "clk"), ints=("user", "time_stamp", "adgroup_id"),
                     rules=[one_of("clk", ["0", "1"], "clk is 1 for a click, 0 for none")])
    shown = rows.select(pl.col("user").alias(S.USER), pl.col("adgroup_id").alias(S.ITEM),
                        pl.lit("impression").alias(S.BEHAVIOR), pl.col("time_stamp").alias(S.TS), "pid", "clk")
    clicked = shown.filter(pl.col("clk") == "1").with_columns(pl.lit("click").alias(S.BEHAVIOR))
    # Stable sort: at one second the impression comes before its click.
    return pl.concat([shown, clicked]).drop("clk").sort(S.TS, maintain_order=True)


def _items(path: Path, on_bad_lines: str, skipped: list[Skipped]) -> pl.LazyFrame:
    ints = ("adgroup_id", "cate_id", "campaign_id", "customer", "brand")
    rows = read_file(path, ADS, on_bad_lines=on_bad_lines, skipped=skipped, required=("adgroup_id",), ints=ints,
                     floats=("price",))
    return rows.select(pl.col("adgroup_id").alias(S.ITEM), pl.col("cate_id").alias(S.CATEGORY),
                       pl.col("brand").alias(S.BRAND), "campaign_id", pl.col("customer").alias("customer_id"),
                       "price")


def _users(path: Path, on_bad_lines: str, skipped: list[Skipped]) -> pl.LazyFrame:
    rows = read_file(path, PROFILE, on_bad_lines=on_bad_lines, skipped=skipped, required=("userid",),
                     ints=PROFILE_COLUMNS)
    gender = pl.col("final_gender_code")
    return rows.select(
        pl.col("userid").alias(S.USER),
        pl.when(gender == 1).then(pl.lit(GENDERS[1])).when(gender == 2).then(pl.lit(GENDERS[2])).alias("gender"),
        pl.col("age_level").cast(pl.String).alias("age_band"),
        pl.col("new_user_class_level").cast(pl.String).alias("city"),
        "cms_segid", "cms_group_id", "pvalue_level", "shopping_level", "occupation",
    )


def plan_tianchi_ads(src: str | Path, *, on_bad_lines: str = "error") -> Plan:
    """Import the Taobao display-ad click log of Alibaba Tianchi.

    Parameters
    ----------
    src
        The folder holding ``raw_sample.csv`` (and optionally ``ad_feature.csv`` and
        ``user_profile.csv``), or ``raw_sample.csv`` itself (side files are looked for beside it).
    on_bad_lines
        ``"error"`` refuses a line with a missing or unparsable field, naming it;
        ``"skip"`` drops and counts such lines (in every file).

    Returns
    -------
    Plan
        See the module docstring; ``pid`` is kept on the events.
    """
    check_on_bad_lines(on_bad_lines)
    path = existing(src, "Tianchi ad-click source")
    folder = path if path.is_dir() else path.parent
    sample = folder / SAMPLE.name if path.is_dir() else path
    if not sample.is_file():
        found = sorted(p.name for p in folder.glob("*.csv"))
        raise RecallError(f"no '{SAMPLE.name}' in folder '{folder}' (CSV files there: {', '.join(found) or 'none'}); "
                          "pass the folder of the Tianchi ad-click release or its raw_sample.csv")
    skipped: list[Skipped] = []
    plan = Plan(events=_events(sample, on_bad_lines, skipped), files={"events": sample}, skipped=skipped)
    for name, spec, read in (("items", ADS, _items), ("users", PROFILE, _users)):
        if (folder / spec.name).is_file():
            setattr(plan, name, read(folder / spec.name, on_bad_lines, skipped))
            plan.files[name] = folder / spec.name
    return plan
