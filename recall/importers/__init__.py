"""Importers: turn public data sets and arbitrary event logs into the data contract.

Each importer is a plan function ``(src, **options) -> Plan`` (lazy tables, see
:mod:`recall.importers.plan`) registered in the explicit registry
:data:`IMPORTERS` with a one-line description for the CLI. Calling a registered
importer collects its plan into a normalised :class:`~recall.io.Dataset`;
:func:`import_to_folder` streams it into a data folder instead, in bounded
memory. Every table has been through :func:`recall.io.normalise_events` /
``normalise_items`` / ``normalise_users`` with the path of the file it came
from, so later errors name the real source file.

Text files are read with every field as a string and parsed column by column
(:mod:`recall.importers.text`): a bad value is reported with its column and line
number instead of as a reader failure, ``on_bad_lines="skip"`` can drop and count
such lines, and no polars exception reaches the user.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from recall.errors import RecallError
from recall.importers.generic import plan_generic
from recall.importers.movielens import plan_movielens
from recall.importers.plan import ImportReport, Plan, to_dataset, write_plan
from recall.importers.retailrocket import plan_retailrocket
from recall.importers.taobao import plan_taobao
from recall.importers.tianchi import plan_tianchi_ads
from recall.importers.text import READ_ERRORS, first_line_of
from recall.io import Dataset

__all__ = ["IMPORTERS", "IMPORTER_HELP", "ImportReport", "Importer", "Plan", "get_importer",
           "import_to_folder", "importer_options", "run_importer"]


def _guarded(src: str | Path, run: Callable[[], Any]) -> Any:
    """Safety net: a polars error the importer did not anticipate still becomes a RecallError."""
    try:
        return run()
    except READ_ERRORS as exc:
        raise RecallError(f"cannot import '{src}' ({first_line_of(exc)}); check that the file matches the "
                          "expected format") from exc


@dataclass(frozen=True)
class Importer:
    """A registered importer: its plan function and the one-line help shown by the CLI.

    Calling it runs the plan into memory and returns the normalised Dataset.
    """

    plan: Callable[..., Plan]
    help: str

    def __call__(self, src: str | Path, **options: Any) -> Dataset:
        return _guarded(src, lambda: to_dataset(self.plan(Path(src), **options)))


IMPORTERS: dict[str, Importer] = {
    "taobao": Importer(plan_taobao, "Taobao UserBehavior.csv (Tianchi): pv->click, fav, cart, buy; "
                                    "item categories."),
    "movielens": Importer(plan_movielens, "MovieLens as GroupLens ships it (ml-100k, ml-1m, ml-10m, "
                                          "ml-latest, 20m/25m/32m) or RecBole atomic files: ratings -> "
                                          "behaviours by click_threshold / fav_threshold; genres, year, users."),
    "retailrocket": Importer(plan_retailrocket, "RetailRocket events.csv (+ item_properties_part*.csv, "
                                                "category_tree.csv): view->click, addtocart->cart, "
                                                "transaction->buy; categories as of each event."),
    "tianchi-ads": Importer(plan_tianchi_ads, "Taobao display-ad clicks (Tianchi raw_sample.csv, ad_feature.csv, "
                                              "user_profile.csv): impressions and clicks; gender, age_band, city."),
    "generic": Importer(plan_generic, "Any CSV/Parquet event log via user_col, item_col, ts_col, behavior_col, "
                                      "behavior_map or rating_col, ts_unit, list_cols, sep."),
}

IMPORTER_HELP: dict[str, str] = {name: importer.help for name, importer in IMPORTERS.items()}


def get_importer(name: str) -> Importer:
    """Look up an importer, with a did-you-mean hint for unknown names."""
    if name in IMPORTERS:
        return IMPORTERS[name]
    close = difflib.get_close_matches(name, IMPORTERS, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise RecallError(f"unknown importer '{name}'{hint}; available: {', '.join(IMPORTERS)}")


def importer_options(name: str) -> list[str]:
    """Keyword options the importer ``name`` accepts (for CLI help and validation)."""
    signature = inspect.signature(get_importer(name).plan)
    return [p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY]


def _checked_options(name: str, options: dict[str, Any]) -> Importer:
    importer = get_importer(name)
    allowed = importer_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise RecallError(
            f"importer '{name}' does not take option(s) {', '.join(unknown)}; "
            f"its options: {', '.join(allowed) or 'none'}"
        )
    return importer


def run_importer(name: str, src: str | Path, **options: Any) -> Dataset:
    """Run importer ``name`` on ``src`` into memory, rejecting options it does not take."""
    return _checked_options(name, options)(Path(src), **options)


def import_to_folder(name: str, src: str | Path, out: str | Path, **options: Any) -> ImportReport:
    """Run importer ``name`` on ``src`` and stream the tables into the data folder ``out``.

    Events go to Parquet batch by batch (bounded memory: a 20M-row log imports in
    well under 6 GiB, see BENCHMARKS.md); ``out/import.json`` records the format,
    options, row counts, duplicates dropped and any skipped bad lines.
    """
    importer = _checked_options(name, options)
    src = Path(src)
    return _guarded(src, lambda: write_plan(importer.plan(src, **options), out, fmt=name, src=src,
                                            options=options))
