"""Side information of items for the learned channels (EGES, GES and others): fields of value tokens.

Every column of the items table except ``item_id`` (or the listed ``side_columns``)
becomes a field. Categorical columns (strings, booleans, integer ids such as
``category_id``, integers with at most ``numeric_buckets`` distinct values) embed
each value; numeric columns (floats, other integers such as a release year,
dates) are cut into ``numeric_buckets`` quantile buckets; list columns (e.g.
MovieLens ``genres``) are a multi-valued field whose embedding is the mean of its
values' embeddings. A missing value (null, NaN, empty list) is a dedicated
"unknown" value of the field. Text columns that are (nearly) unique per item,
such as titles, are identifiers rather than side information and are left out
unless listed in ``side_columns``.

``p`` below is any params model with the fields ``side_columns``,
``exclude_columns``, ``categorical_columns``, ``numeric_buckets`` and
``max_distinct_share`` (``EGESParams`` has them).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl

from recall import schema as S
from recall.errors import RecallError

# --------------------------------------------------------------------------------------
# Side information
# --------------------------------------------------------------------------------------


@dataclass
class SideInfo:
    """Every item's tokens: rows of the one value table, grouped into fields.

    Row layout of the value table: item IDs ``0 .. n_items - 1``, then each side
    field's values (the field's "unknown" value last), then one padding row.
    Column c of ``tokens`` belongs to field ``column_field[c]`` (0 is the ID);
    a multi-valued field has as many columns as its longest list, and
    ``within`` gives each token's weight inside its field (1 / number of values;
    0 on padding), so every field's weights sum to 1 for every item.
    """

    fields: list[str]          # side fields, in order (field j + 1 in the attention)
    kinds: list[str]           # "categorical", "numeric" or "multi" per side field
    vocab: list[int]           # values per side field, "unknown" included
    tokens: np.ndarray         # int64 (n_items, T)
    within: np.ndarray         # float32 (n_items, T)
    column_field: np.ndarray   # int64 (T,)
    known: np.ndarray          # bool (n_items,): some side value is not "unknown"
    n_rows: int                # rows of the value table, padding included

    @property
    def n_items(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_fields(self) -> int:
        """Side fields, the ID not counted."""
        return len(self.fields)

    @property
    def pad(self) -> int:
        return self.n_rows - 1


def column_kind(series: pl.Series, name: str, p) -> str | None:
    """How a side column is encoded: "multi", "numeric", "categorical", or None (unsupported type)."""
    dtype = series.dtype
    if name in p.categorical_columns:
        return "multi" if isinstance(dtype, (pl.List, pl.Array)) else "categorical"
    if isinstance(dtype, (pl.List, pl.Array)):
        return "multi"
    if dtype.is_float() or dtype.is_temporal():
        return "numeric"
    if dtype.is_integer():
        # Integer ids (category_id, brand_id) and small codes (a price bucket) are
        # categories; larger integer ranges (a release year, a price in cents) are quantities.
        few = series.drop_nulls().n_unique() <= p.numeric_buckets
        return "categorical" if name.endswith("_id") or few else "numeric"
    if dtype in (pl.String, pl.Categorical, pl.Boolean) or isinstance(dtype, pl.Enum):
        return "categorical"
    return None


def dense_codes(values: pl.Series) -> tuple[np.ndarray, int]:
    """Values as codes ``0 .. V - 1`` in sorted order, nulls as ``V``; returns (codes, V + 1)."""
    values = values.cast(pl.String)
    ranks = values.rank("dense")  # 1-based, null stays null
    size = int(ranks.max() or 0)
    return ranks.fill_null(size + 1).to_numpy().astype(np.int64) - 1, size + 1


def quantile_codes(values: pl.Series, buckets: int) -> tuple[np.ndarray, int]:
    """Quantile-bucket codes ``0 .. B - 1`` (B <= buckets, equal edges merged), unknown as ``B``."""
    if values.dtype.is_temporal():
        values = values.to_physical()
    x = values.cast(pl.Float64).to_numpy()
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros(x.size, dtype=np.int64), 1
    edges = np.unique(np.quantile(x[finite], np.linspace(0.0, 1.0, buckets + 1)[1:-1]))
    codes = np.searchsorted(edges, x, side="right").astype(np.int64)
    codes[~finite] = edges.size + 1
    return codes, edges.size + 2


def field_tokens(series: pl.Series, kind: str, buckets: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One field as (codes (n, m) with -1 padding, known (n,) bool, vocabulary size incl. unknown)."""
    n = series.len()
    if kind == "multi":
        if isinstance(series.dtype, pl.Array):
            series = series.arr.to_list()
        lengths = series.list.len().fill_null(0).to_numpy().astype(np.int64)
        values = series.explode(empty_as_null=False, keep_nulls=False)  # exactly sum(lengths) values
        # A null or empty list becomes one null value: the field's "unknown".
        empty = np.flatnonzero(lengths == 0)
        order = np.argsort(np.concatenate([np.repeat(np.arange(n), lengths), empty]), kind="stable")
        codes, size = dense_codes(pl.concat([values, pl.Series(values.name, [None] * empty.size,
                                                               dtype=values.dtype)]))
        codes = codes[order]
        counts = np.maximum(lengths, 1)
        unknown = size - 1
        row = np.repeat(np.arange(n), counts)
        position = np.arange(codes.size) - np.repeat(np.cumsum(counts) - counts, counts)
        out = np.full((n, int(counts.max()) if n else 1), -1, dtype=np.int64)
        out[row, position] = codes
        known = np.zeros(n, dtype=bool)
        np.logical_or.at(known, row, codes != unknown)
        return out, known, size
    codes, size = quantile_codes(series, buckets) if kind == "numeric" else dense_codes(series)
    return codes[:, None], codes != size - 1, size


def select_side_columns(items: pl.DataFrame, p) -> list[tuple[str, str]]:
    """The (column, kind) pairs used as side information (see the module docstring)."""
    if p.side_columns is not None:
        missing = [c for c in p.side_columns if c not in items.columns]
        if missing:
            raise RecallError(f"side_columns {missing} are not in the items table (columns: "
                              f"{', '.join(items.columns)}); fix side_columns or leave it unset to use all")
        chosen = []
        for name in p.side_columns:
            kind = column_kind(items[name], name, p)
            if kind is None:
                raise RecallError(f"items column '{name}' has type {items[name].dtype}, which EGES cannot "
                                  "encode; remove it from side_columns or convert it to text or numbers")
            chosen.append((name, kind))
        return chosen
    chosen = []
    for name in items.columns:
        if name == S.ITEM or name in p.exclude_columns:
            continue
        kind = column_kind(items[name], name, p)
        if kind is None:
            warnings.warn(f"EGES skips items column '{name}' of type {items[name].dtype}", stacklevel=3)
            continue
        if kind == "categorical" and items[name].dtype == pl.String:
            present = items[name].drop_nulls()
            # A value per item (a title, a URL) is an identifier, not shared side information.
            if present.len() and present.n_unique() > p.max_distinct_share * present.len():
                continue
        chosen.append((name, kind))
    return chosen


def side_info(item_ids: pl.Series, items: pl.DataFrame | None, p) -> SideInfo:
    """Encode the items table into :class:`SideInfo` aligned to item indices (``item_ids``)."""
    n_items = item_ids.len()
    columns = [] if items is None else select_side_columns(items, p)
    parts = [np.arange(n_items, dtype=np.int64)[:, None]]
    weights = [np.ones((n_items, 1), dtype=np.float32)]
    column_field = [0]
    kinds, vocab = [], []
    known = np.zeros(n_items, dtype=bool)
    offset = n_items
    if columns:
        aligned = (pl.DataFrame({S.ITEM: item_ids})
                   .join(items.select(S.ITEM, *[c for c, _ in columns]), on=S.ITEM, how="left",
                         maintain_order="left"))
        for field, (name, kind) in enumerate(columns, start=1):
            codes, field_known, size = field_tokens(aligned[name], kind, p.numeric_buckets)
            valid = codes >= 0
            count = valid.sum(axis=1, keepdims=True)
            parts.append(np.where(valid, codes + offset, -1))
            weights.append((valid / count).astype(np.float32))
            column_field += [field] * codes.shape[1]
            kinds.append(kind)
            vocab.append(size)
            known |= field_known
            offset += size
    tokens = np.concatenate(parts, axis=1)
    pad = offset
    tokens[tokens < 0] = pad
    return SideInfo(fields=[c for c, _ in columns], kinds=kinds, vocab=vocab, tokens=tokens,
                    within=np.concatenate(weights, axis=1), column_field=np.asarray(column_field, dtype=np.int64),
                    known=known, n_rows=pad + 1)


__all__ = ["SideInfo", "column_kind", "dense_codes", "field_tokens", "quantile_codes", "select_side_columns",
           "side_info"]
