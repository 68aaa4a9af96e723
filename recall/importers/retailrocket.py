"""RetailRocket e-commerce log (Kaggle): ``events.csv``, ``item_properties_part*.csv``, ``category_tree.csv``.

Layout, as published:

- ``events.csv``: ``timestamp,visitorid,event,itemid,transactionid``; timestamps in
  milliseconds, ``event`` one of ``view``, ``addtocart``, ``transaction`` (the
  transaction id only on the last).
- ``item_properties_part1.csv``, ``item_properties_part2.csv``:
  ``timestamp,itemid,property,value``, snapshots of item properties over time
  (values of most properties are hashed text); only ``categoryid`` is read.
- ``category_tree.csv``: ``categoryid,parentid`` (no parent for a root).

Behaviours: view -> click, addtocart -> cart, transaction -> buy. Items get the
latest ``categoryid`` known for them, its ``parent_category_id`` and the
``category_path`` from the root; each event also carries the ``category_id``
valid when it happened (the last value set before it, else the first known).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recall import schema as S
from recall.errors import RecallError
from recall.importers.common import map_values
from recall.importers.layout import TextFile, read_file
from recall.importers.plan import Plan
from recall.importers.text import Skipped, check_on_bad_lines, existing, one_of

RR = "RetailRocket"
EVENTS = TextFile(RR, "events.csv", ",", ("timestamp", "visitorid", "event", "itemid", "transactionid"),
                  header=("timestamp", "visitorid", "event", "itemid", "transactionid"))
# The value of most properties is free text: it is the rest of the line.
PROPERTIES = TextFile(RR, "item_properties_part*.csv", ",", ("timestamp", "itemid", "property", "value"),
                      header=("timestamp", "itemid", "property", "value"), rest=True)
TREE = TextFile(RR, "category_tree.csv", ",", ("categoryid", "parentid"), header=("categoryid", "parentid"))
RR_BEHAVIORS = {"view": "click", "addtocart": "cart", "transaction": "buy"}
CATEGORY_PROPERTY = "categoryid"


def _events(path: Path, on_bad_lines: str, skipped: list[Skipped]) -> pl.LazyFrame:
    """Events with contract names and ``ts_ms`` (the millisecond time, for the category as of then)."""
    rows = read_file(path, EVENTS, on_bad_lines=on_bad_lines, skipped=skipped,
                     required=("timestamp", "visitorid", "event", "itemid"),
                     ints=("timestamp", "visitorid", "itemid", "transactionid"),
                     rules=[one_of("event", list(RR_BEHAVIORS), "this is not the RetailRocket layout; use the "
                                   "'generic' importer with behavior_map")])
    return rows.select(
        pl.col("visitorid").alias(S.USER), pl.col("itemid").alias(S.ITEM),
        map_values(pl.col("event"), RR_BEHAVIORS).alias(S.BEHAVIOR),
        (pl.col("timestamp") // 1000).alias(S.TS), pl.col("timestamp").alias("ts_ms"),
        pl.col("transactionid").alias("transaction_id"),
    )


def _category_history(paths: list[Path], on_bad_lines: str, skipped: list[Skipped]) -> pl.LazyFrame:
    """``item_id, ts_ms, category_id`` of every categoryid snapshot, sorted by time."""
    parts = [read_file(p, PROPERTIES, on_bad_lines=on_bad_lines, skipped=skipped,
                       required=("timestamp", "itemid", "value"), ints=("timestamp", "itemid", "value"),
                       where=pl.col("property") == CATEGORY_PROPERTY)
             for p in paths]
    history = pl.concat(parts).select(pl.col("itemid").alias(S.ITEM), pl.col("timestamp").alias("ts_ms"),
                                      pl.col("value").alias(S.CATEGORY))
    # Two values for one item at one instant would make "the value then" ambiguous: keep the larger id.
    return history.group_by(S.ITEM, "ts_ms").agg(pl.col(S.CATEGORY).max()).sort("ts_ms", S.ITEM)


def _category_paths(path: Path, on_bad_lines: str, skipped: list[Skipped]) -> pl.DataFrame:
    """``category_id, parent_category_id, category_path`` (root first) from the tree, one level per join."""
    tree = read_file(path, TREE, on_bad_lines=on_bad_lines, skipped=skipped, required=("categoryid",),
                     ints=("categoryid", "parentid")).collect(engine="streaming")
    tree = tree.rename({"categoryid": S.CATEGORY, "parentid": "parent_category_id"})
    walk = tree.select(S.CATEGORY, pl.concat_list(S.CATEGORY).alias("category_path"),
                       pl.col("parent_category_id").alias("up"))
    # Each pass prepends the next ancestor; a tree is at most as deep as it is large,
    # so a cycle in a broken file stops there instead of looping forever.
    for _ in range(tree.height):
        if walk["up"].null_count() == walk.height:
            break
        step = tree.select(pl.col(S.CATEGORY).alias("up"), pl.col("parent_category_id").alias("next"))
        walk = (walk.join(step, on="up", how="left", maintain_order="left")
                .with_columns(pl.when(pl.col("up").is_not_null())
                              .then(pl.concat_list("up", "category_path")).otherwise("category_path")
                              .alias("category_path"))
                .drop("up").rename({"next": "up"}))
    return tree.join(walk.drop("up"), on=S.CATEGORY, how="left", maintain_order="left")


def _category_at_event(events: pl.LazyFrame, history: pl.LazyFrame) -> pl.LazyFrame:
    """Each event's ``category_id``: the item's last value set before it, else its first known one.

    The property snapshots start after some events; the earliest snapshot is the best guess for those.
    """
    first = history.group_by(S.ITEM).agg(pl.col(S.CATEGORY).sort_by("ts_ms").first().alias("first_category"))
    return (events.sort("ts_ms", maintain_order=True)
            # Both sides are sorted by ts_ms just above and in _category_history.
            .join_asof(history, on="ts_ms", by=S.ITEM, strategy="backward", check_sortedness=False)
            .join(first, on=S.ITEM, how="left", maintain_order="left")
            .with_columns(pl.col(S.CATEGORY).fill_null(pl.col("first_category")))
            .drop("first_category", "ts_ms"))


def _source_files(src: str | Path) -> tuple[Path, list[Path], Path | None]:
    """``events.csv`` (``src`` or in folder ``src``) and the property and tree files beside it."""
    path = existing(src, "RetailRocket source")
    folder = path if path.is_dir() else path.parent
    events = folder / EVENTS.name if path.is_dir() else path
    if not events.is_file():
        found = sorted(p.name for p in folder.glob("*.csv"))
        raise RecallError(f"no '{EVENTS.name}' in folder '{folder}' (CSV files there: {', '.join(found) or 'none'}); "
                          "pass the RetailRocket folder or its events.csv")
    tree = folder / TREE.name
    return events, sorted(folder.glob(PROPERTIES.name)), (tree if tree.is_file() else None)


def plan_retailrocket(src: str | Path, *, on_bad_lines: str = "error") -> Plan:
    """Import the RetailRocket log.

    Parameters
    ----------
    src
        The folder holding ``events.csv`` (and optionally ``item_properties_part*.csv``
        and ``category_tree.csv``), or ``events.csv`` itself (side files are looked
        for beside it).
    on_bad_lines
        ``"error"`` refuses a line with a missing or unparsable field, naming it;
        ``"skip"`` drops and counts such lines (in every file).

    Returns
    -------
    Plan
        See the module docstring; ``transaction_id`` is kept on the events.
    """
    check_on_bad_lines(on_bad_lines)
    events_path, properties, tree_path = _source_files(src)
    skipped: list[Skipped] = []
    events = _events(events_path, on_bad_lines, skipped)
    plan = Plan(events=events.drop("ts_ms"), files={"events": events_path}, skipped=skipped)
    if not properties:
        return plan
    history = _category_history(properties, on_bad_lines, skipped)
    plan.events = _category_at_event(events, history)
    items = history.group_by(S.ITEM).agg(pl.col(S.CATEGORY).sort_by("ts_ms").last())
    if tree_path is not None:
        items = items.join(_category_paths(tree_path, on_bad_lines, skipped).lazy(), on=S.CATEGORY, how="left")
        plan.files["category_tree"] = tree_path
    plan.items = items.sort(S.ITEM)
    plan.files.update({"items": properties[0]}, **{f"items_part{i}": p for i, p in enumerate(properties[1:], 2)})
    return plan
