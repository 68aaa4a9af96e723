"""User shards: a stable hash of ``user_id`` into N shards, so per-user stages can stream.

A run with ``run.shards = N`` fits every channel once on all events, then
recommends, merges, filters and writes one shard of users at a time, so the
per-user tables in memory hold one shard, not every user.

The hash is stable across runs, machines and library versions (a polars or Python
``hash`` is not): a user stays in the same shard every day, and a reader can find a
user's partition without scanning the others. Integer ids go through the
splitmix64 finaliser; string ids through 64-bit FNV-1a over their UTF-8 bytes
(vectorised over users, one numpy pass per byte position of the longest id).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of 64-bit integers: every input bit affects every output bit."""
    z = values.astype(np.int64).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def fnv1a64(strings: pl.Series) -> np.ndarray:
    """64-bit FNV-1a of each string's UTF-8 bytes."""
    array = pc.cast(strings.to_arrow(), pa.large_string())
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    _, offsets, data = array.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int64)[array.offset: array.offset + len(array) + 1]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    hashes = np.full(len(array), FNV_OFFSET, dtype=np.uint64)
    for position in range(int(lengths.max(initial=0))):
        longer = np.flatnonzero(lengths > position)
        hashes[longer] = (hashes[longer] ^ data[starts[longer] + position].astype(np.uint64)) * FNV_PRIME
    return hashes


def shard_of(user_ids: pl.Series, n_shards: int) -> np.ndarray:
    """The shard (0 .. n_shards - 1) of each user id."""
    if n_shards <= 1:
        return np.zeros(user_ids.len(), dtype=np.int64)
    if user_ids.dtype.is_integer():
        hashes = splitmix64(user_ids.to_numpy())
    else:
        hashes = fnv1a64(user_ids.cast(pl.String))
    return (hashes % np.uint64(n_shards)).astype(np.int64)


def user_shards(user_ids: pl.Series, n_shards: int) -> list[np.ndarray]:
    """Sorted user indices (positions in ``user_ids``) of each shard; ``[None]`` means all users at once."""
    if n_shards <= 1:
        return [None]
    shard = shard_of(user_ids, n_shards)
    order = np.argsort(shard, kind="stable")
    bounds = np.searchsorted(shard[order], np.arange(n_shards + 1))
    return [order[bounds[k]:bounds[k + 1]] for k in range(n_shards)]
