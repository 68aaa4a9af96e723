"""MovieLens in every layout GroupLens ships, or as RecBole atomic files, detected from the folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recall.errors import RecallError
from recall.importers.common import thresholds
from recall.importers.plan import Plan
from recall.importers.recbole import plan_recbole
from recall.importers.text import check_on_bad_lines, existing


def plan_movielens(src: str | Path, *, click_threshold: Any = None, fav_threshold: Any = 4,
                   on_bad_lines: str = "error") -> Plan:
    """Import MovieLens.

    Parameters
    ----------
    src
        A folder holding ``NAME.inter`` and optionally ``NAME.user`` and
        ``NAME.item`` (RecBole atomic files), or the ``.inter`` file itself.
    click_threshold
        None (default): every rating is a ``click``. A number: every rating is an
        ``impression`` and a rating at or above it also a ``click``.
    fav_threshold
        A rating at or above this value also yields a ``fav`` (``none``: never).
    on_bad_lines
        ``"error"`` or ``"skip"`` (drop and count lines with missing or unparsable fields).
    """
    limits = thresholds(click_threshold, fav_threshold)
    check_on_bad_lines(on_bad_lines)
    path = existing(src, "MovieLens source")
    if path.is_dir() and not any(path.glob("*.inter")):
        raise RecallError(
            f"no '.inter' file in folder '{path}'; pass a folder with NAME.inter "
            "(RecBole atomic files) or the .inter file itself"
        )
    return plan_recbole(path, limits, on_bad_lines)
