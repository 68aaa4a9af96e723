"""Merger properties (Hypothesis) and a hand-checked example."""

from __future__ import annotations

from unittest import mock

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from recall import merge
from recall.merge import label_channels, merge_channels

CHANNEL_NAMES = ["a", "b", "c"]


@st.composite
def channel_tables(draw):
    """Random candidate lists: per channel and user, distinct items ranked 1..n."""
    tables, quotas = {}, {}
    for name in draw(st.lists(st.sampled_from(CHANNEL_NAMES), min_size=1, max_size=3, unique=True)):
        rows = []
        for user in range(draw(st.integers(1, 4))):
            items = draw(st.lists(st.integers(0, 12), max_size=10, unique=True))
            rows += [(user, item, 1.0 / (r + 1), r + 1) for r, item in enumerate(items)]
        tables[name] = pl.DataFrame(rows, schema={"user_id": pl.Int64, "item_id": pl.Int64,
                                                  "score": pl.Float64, "rank": pl.Int32}, orient="row")
        quotas[name] = draw(st.integers(0, 6))
    return tables, quotas


@settings(max_examples=300, deadline=None)
@given(channel_tables(), st.integers(1, 12), st.booleans(), st.sets(st.sampled_from(CHANNEL_NAMES)),
       st.randoms(use_true_random=False))
def test_merge_properties(tables_quotas, budget, backfill, strict, rnd):
    tables, quotas = tables_quotas
    merged = merge_channels(tables, quotas, budget, strict=strict, backfill=backfill)
    # At most the budget per user, no duplicate pairs, ranks 1..n.
    per_user = merged.group_by("user_id").agg(pl.len(), pl.col("rank").sort())
    assert all(n <= budget for n in per_user["len"])
    assert all(r.to_list() == list(range(1, len(r) + 1)) for r in per_user["rank"])
    assert merged.select("user_id", "item_id").is_duplicated().sum() == 0
    # Quotas: a channel's own slots (position <= 1) never exceed its quota, and capped
    # channels (strict, or no back-fill) never take more slots at all.
    for name, quota in quotas.items():
        own = merged.filter(pl.col("source") == name)
        within = own.filter(pl.col("score") >= 1.0).group_by("user_id").len()
        assert within.height == 0 or within["len"].max() <= quota
        if name in strict or not backfill:
            assert own.height == 0 or own.group_by("user_id").len()["len"].max() <= quota
    # Every listed channel really holds the item, the slot's channel among them (the
    # oracle test checks that exactly the channels reached are listed).
    union = pl.concat([t.select("user_id", "item_id").with_columns(ch=pl.lit(n)) for n, t in tables.items()])
    holders = union.group_by("user_id", "item_id").agg(pl.col("ch").unique().sort())
    check = merged.join(holders, on=["user_id", "item_id"], how="left")
    assert all(set(listed) <= set(held) and source in listed
               for listed, held, source in zip(check["channels"], check["ch"], check["source"]))
    # Back-fill: a user gets the full budget whenever enough eligible candidates exist.
    if backfill and not strict:
        eligible = (union.join(pl.DataFrame({"ch": list(quotas), "q": list(quotas.values())}), on="ch")
                    .filter(pl.col("q") > 0).select("user_id", "item_id").unique()
                    .group_by("user_id").len())
        got = merged.group_by("user_id").len()
        joined = eligible.join(got, on="user_id", how="left", suffix="_got").fill_null(0)
        assert (joined["len_got"] == joined["len"].clip(upper_bound=budget)).all()
    # Stable under input order: shuffled rows and channel order give the same table.
    shuffled = {n: t.sample(fraction=1.0, shuffle=True, seed=rnd.randint(0, 10**6))
                for n, t in reversed(list(tables.items()))}
    again = merge_channels(shuffled, quotas, budget, strict=strict, backfill=backfill)
    assert again.sort("user_id", "rank").equals(merged.sort("user_id", "rank"))


def test_merge_worked_example():
    """Quotas a=2, b=1, budget 3: a's first two and b's first, shared items deduped, back-filled."""
    def table(items):
        return pl.DataFrame({"user_id": [1] * len(items), "item_id": items,
                             "score": [1.0] * len(items), "rank": list(range(1, len(items) + 1))},
                            schema_overrides={"rank": pl.Int32})

    merged = merge_channels({"a": table([10, 11, 12]), "b": table([11, 20])}, {"a": 2, "b": 1}, 3)
    rows = merged.select("item_id", "source", "channels").rows()
    # positions: a: 10->0.5, 11->1.0, 12->1.5; b: 11->1.0, 20->2.0. 11 is shared (one slot).
    assert rows == [(10, "a", ["a"]), (11, "a", ["a", "b"]), (12, "a", ["a"])]


def merge_oracle(tables: dict[str, pl.DataFrame], quotas: dict[str, int], budget: int, strict: set[str],
                 backfill: bool) -> list[tuple]:
    """The merge rule in exact fractions, user by user: (user, item, rank, source, channels).

    ``channels``: every channel listing the item at a slot position no later than the
    user's last kept item.
    """
    from fractions import Fraction

    best, listed = {}, []
    for name in sorted(tables):
        quota = quotas[name]
        for user, item, _, rank in tables[name].iter_rows():
            capped = name in strict or not backfill
            if quota == 0 or (capped and rank > quota):
                continue
            key = (Fraction(rank, quota), name)
            listed.append((user, item, key[0], name))
            if (user, item) not in best or key < best[(user, item)]:
                best[(user, item)] = key
    rows = []
    for user in sorted({u for u, _ in best}):
        mine = sorted((key, item) for (u, item), key in best.items() if u == user)[:budget]
        reach = mine[-1][0][0]
        for r, (key, item) in enumerate(mine):
            holders = sorted({n for u, i, position, n in listed if (u, i) == (user, item) and position <= reach})
            rows.append((user, item, r + 1, key[1], holders))
    return rows


@settings(max_examples=300, deadline=None)
@given(channel_tables(), st.integers(1, 12), st.booleans(), st.sets(st.sampled_from(CHANNEL_NAMES)))
def test_merge_equals_exact_fraction_oracle(tables_quotas, budget, backfill, strict):
    tables, quotas = tables_quotas
    expected = [tuple(r) for r in merge_oracle(tables, quotas, budget, strict, backfill)]
    # The shipped first pass, and one that reads so little that most users take the second.
    for reach in (merge.FIRST_PASS_REACH, 1):
        with mock.patch.object(merge, "FIRST_PASS_REACH", reach):
            merged = merge_channels(tables, quotas, budget, strict=strict, backfill=backfill)
        got = merged.sort("user_id", "rank").select("user_id", "item_id", "rank", "source", "channels").rows()
        assert [tuple(r) for r in got] == expected
        # Unlabelled (channel numbers and bit masks, as a run carries them through the filters), then named.
        unlabelled = merge_channels(tables, quotas, budget, strict=strict, backfill=backfill, labelled=False)
        assert unlabelled.schema["channels"] == pl.Int64
        assert label_channels(unlabelled, tables).equals(merged)


def test_first_pass_reads_the_same_positions_in_every_channel():
    """Depths are the ranks with position rank / quota <= reach x budget / sum of quotas, exactly."""
    from fractions import Fraction

    quotas = {"a": 7, "b": 3, "c": 0, "d": 5}
    depths = merge.first_pass_depths(quotas, 20, {"d"}, 3)
    bound = Fraction(3 * 20, sum(quotas.values()))
    for name, quota in quotas.items():
        if quota == 0:
            assert depths[name] == 0
            continue
        deepest = max(r for r in range(1, 1000) if Fraction(r, quota) <= bound)
        assert depths[name] == (min(deepest, quota) if name == "d" else deepest)


def test_second_pass_fills_users_the_first_pass_leaves_short():
    """Two channels listing the same items: the first pass (reach 1) yields half the budget; the
    user still gets the budget, equal to the oracle, and channels lists both where both reached."""
    items = list(range(100, 120))
    table = pl.DataFrame({"user_id": [1] * 20, "item_id": items, "score": [1.0] * 20, "rank": list(range(1, 21))},
                         schema_overrides={"rank": pl.Int32})
    # One table with 32-bit user ids: the passes match users across dtypes.
    tables, quotas = {"a": table.with_columns(pl.col("user_id").cast(pl.Int32)), "b": table}, {"a": 1, "b": 1}
    assert merge.first_pass_depths(quotas, 10, set(), 1) == {"a": 5, "b": 5}
    with mock.patch.object(merge, "FIRST_PASS_REACH", 1):
        merged = merge_channels(tables, quotas, 10)
    assert merged["item_id"].to_list() == items[:10]
    assert merged["channels"].to_list() == [["a", "b"]] * 10
    got = merged.select("user_id", "item_id", "rank", "source", "channels").rows()
    assert [tuple(r) for r in got] == [tuple(r) for r in merge_oracle(tables, quotas, 10, set(), True)]
    for score, (user, item, rank, source, _) in zip(merged.sort("user_id", "rank")["score"], got):
        assert score == quotas[source] / (tables[source].filter((pl.col("user_id") == user)
                                                                & (pl.col("item_id") == item))["rank"][0])


def test_merge_with_string_ids_and_huge_ids():
    """Ids that cannot be packed into one integer key take the two-column path, same rows."""
    rows = [(0, 5, 1.0, 1), (0, 6, 0.5, 2), (1, 5, 1.0, 1)]
    schema = {"user_id": pl.Int64, "item_id": pl.Int64, "score": pl.Float64, "rank": pl.Int32}
    base = {"a": pl.DataFrame(rows, schema=schema, orient="row"),
            "b": pl.DataFrame([(0, 6, 1.0, 1), (1, 7, 1.0, 1)], schema=schema, orient="row")}
    expected = merge_channels(base, {"a": 2, "b": 1}, 3).sort("user_id", "rank")
    as_text = {n: t.with_columns(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String))
               for n, t in base.items()}
    text = merge_channels(as_text, {"a": 2, "b": 1}, 3).sort("user_id", "rank")
    assert text.select("rank", "source", "channels").equals(expected.select("rank", "source", "channels"))
    huge = {n: t.with_columns(pl.col("user_id") + 2**62, pl.col("item_id") * 2**40) for n, t in base.items()}
    big = merge_channels(huge, {"a": 2, "b": 1}, 3).sort("user_id", "rank")
    assert big["item_id"].to_list() == [i * 2**40 for i in expected["item_id"].to_list()]
    assert big.select("rank", "source", "channels").equals(expected.select("rank", "source", "channels"))
