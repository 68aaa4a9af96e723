"""The one small interface every channel implements, and the shared trigger expansion."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Annotated, ClassVar

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from recall import schema as S
from recall.context import TrainData
from recall.sparse import chunk_rows, csr_to_frame, row_blocks, top_k_per_row


def _infinite_is_none(value: float | None) -> float | None:
    # TOML has no null: `inf` spells "no window", "no decay", "no session cut".
    return None if value is not None and math.isinf(value) else value


def _known_behaviors(value: list[str]) -> list[str]:
    if not value or set(value) - set(S.BEHAVIORS):
        raise ValueError(f"behaviors must be a non-empty subset of {', '.join(S.BEHAVIORS)}")
    return value


# Parameter types shared by the channels' Params models.
Span = Annotated[float | None, AfterValidator(_infinite_is_none)]
"""A length of time (hours or days); None, or ``inf`` in TOML, means unbounded."""
BehaviorList = Annotated[list[str], AfterValidator(_known_behaviors)]
"""A non-empty list of behaviours from :data:`recall.schema.BEHAVIORS`."""


class ChannelParams(BaseModel):
    """Settings every channel has; each channel subclasses this with its own parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    quota: int | None = Field(None, ge=0, description="slots per user in the merge")
    share: float | None = Field(None, gt=0, le=1, description="share of the per-user budget")
    strict: bool = Field(False, description="never take back-filled slots beyond the quota")
    user_block: int = Field(5_000, ge=1, description="users per block in u2i scoring: bounds its working memory "
                                                   "(5,000 was also faster than 20,000 at 5M events: BENCHMARKS.md)")

    @model_validator(mode="after")
    def _one_quota(self):
        if self.quota is not None and self.share is not None:
            raise ValueError("give either quota (a count) or share (a fraction), not both")
        if self.quota is None and self.share is None:
            object.__setattr__(self, "share", 1.0)
        return self


class Channel(ABC):
    """A recall channel: ``fit`` on training data, then ``recommend`` candidates per user.

    Constructors do no work; learned state lives in attributes ending in ``_``.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[ChannelParams]] = ChannelParams
    # Scheduling only: when several channels are fitted at once (run.workers), the costlier
    # start first, so the longest fit is not the last one left running alone.
    fit_cost: ClassVar[int] = 0

    def __init__(self, params: ChannelParams | None = None):
        self.params = params if params is not None else self.Params()

    @abstractmethod
    def fit(self, data: TrainData) -> "Channel":
        """Learn from the training data; returns self."""

    @abstractmethod
    def recommend(self, data: TrainData, n: int, users: np.ndarray | None = None) -> pl.DataFrame:
        """Up to ``n`` candidates per user: ``user_id, item_id, score, rank`` (rank 1 is best).

        ``users`` (sorted user indices) restricts the output to those users, with
        exactly the rows they get when every user is recommended at once: the
        pipeline streams users shard by shard through the fitted model.
        """

    def similar_items(self, data: TrainData) -> pl.DataFrame | None:
        """The item-to-item table ``item_id, neighbor_id, score, rank``, for channels that have one."""
        return None

    def extra_tables(self, data: TrainData) -> dict[str, pl.DataFrame]:
        """Further tables to publish, keyed by path inside the run (e.g. ``hot/<crowd>.parquet``)."""
        return {}

    def facts(self) -> dict:
        """JSON-ready facts about the fitted model for the run's manifest (``channel_facts``).

        For what a fit left out or capped, e.g. the items EASE cut to bound its
        memory; empty by default.
        """
        return {}


class I2IChannel(Channel):
    """A channel defined by an item-to-item similarity matrix, recalled through trigger expansion."""

    exclude_interacted: ClassVar[bool] = True

    @abstractmethod
    def item_similarity(self, data: TrainData) -> sp.csr_matrix:
        """Items x items scores, each row truncated and sorted best first."""

    def fit(self, data: TrainData) -> "I2IChannel":
        self.similarity_ = self.item_similarity(data)
        return self

    def recommend(self, data: TrainData, n: int, users: np.ndarray | None = None) -> pl.DataFrame:
        return expand_triggers(data, self.similarity_, n, exclude_interacted=self.exclude_interacted,
                               user_block=self.params.user_block, users=users)

    def similar_items(self, data: TrainData) -> pl.DataFrame:
        return csr_to_frame(self.similarity_, data.item_ids, data.item_ids, S.ITEM, S.NEIGHBOR)


def expand_triggers(data: TrainData, similarity: sp.csr_matrix, n: int, *,
                    exclude_interacted: bool = True, user_block: int = 5_000,
                    users: np.ndarray | None = None) -> pl.DataFrame:
    """u2i score = sum over a user's triggers of trigger weight x i2i score; top ``n`` per user.

    Users (all, or the sorted indices ``users``) are scored block by block so
    memory depends on the block size, not on the number of users. Items the user
    already engaged with are dropped when ``exclude_interacted`` is set.
    """
    triggers = data.trigger_matrix
    seen = data.interactions
    frames = []
    for chunk in row_blocks(users, data.n_users, user_block):
        scores = (triggers[chunk] @ similarity).tocsr()
        if exclude_interacted:
            scores = scores - scores.multiply(seen[chunk])
        frames.append(csr_to_frame(top_k_per_row(scores, n), data.user_ids, data.item_ids,
                                   S.USER, S.ITEM, row_index=chunk_rows(chunk)))
    return pl.concat(frames) if frames else empty_candidates(data)


def empty_candidates(data: TrainData) -> pl.DataFrame:
    return pl.DataFrame(schema={S.USER: data.user_ids.dtype, S.ITEM: data.item_ids.dtype,
                                S.SCORE: pl.Float64, S.RANK: pl.Int32})
