"""The run configuration: the sections of :mod:`recall.sections` plus the channel sections, and its loaders.

Each ``[channels.<name>]`` section is validated with the ``Params`` model its channel
declares, looked up in the registry (:data:`recall.channels.CHANNELS`); so this module
sits above the channel registry, and everything the channels need from the
configuration (their sections, the trigger settings) comes from the bottom layer,
:mod:`recall.sections`, which imports no channel. The section models are re-exported
here, so ``from recall.config import TriggerConfig`` keeps working for callers above
the channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from recall.channels import CHANNELS, unknown_channel
from recall.errors import RecallError
from recall.sections import (
    ALSConfig,
    BlacklistConfig,
    DataConfig,
    DiversityConfig,
    EvalConfig,
    FiltersConfig,
    MergeConfig,
    OutputConfig,
    PurchaseFilterConfig,
    QUOTA_KEYS,
    RunConfig,
    SegmentsConfig,
    SparkSettings,
    Strict,
    TriggerConfig,
    TuneConfig,
    USER_SEGMENTS,
    apply_overrides,
    merge_config_dicts,
    merge_config_files,
    parse_override,
    read_toml,
)


class Config(Strict):
    """The whole run configuration."""

    seed: int = 42
    data: DataConfig = DataConfig()
    output: OutputConfig = OutputConfig()
    run: RunConfig = RunConfig()
    candidates_per_user: int = Field(200, ge=1)
    triggers: TriggerConfig = TriggerConfig()
    channels: dict[str, Any] = Field(default_factory=dict)
    merge: MergeConfig = MergeConfig()
    filters: FiltersConfig = FiltersConfig()
    eval: EvalConfig = EvalConfig()
    tune: TuneConfig = TuneConfig()
    spark: SparkSettings = SparkSettings()

    @model_validator(mode="after")
    def _typed_channels(self) -> "Config":
        """Validate each channel section with the parameter model its channel declares."""
        typed, problems = {}, []
        for name, section in self.channels.items():
            if name not in CHANNELS:
                problems.append(f"channels.{name}: {unknown_channel(name)}")
                continue
            params_model = CHANNELS[name].Params
            try:
                typed[name] = (section if isinstance(section, params_model)
                               else params_model.model_validate(section))
            except ValidationError as exc:
                problems += [f"{'.'.join(['channels', name, *map(str, e['loc'])])}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        problems += [f"run.optional_channels: {unknown_channel(name)}"
                     for name in self.run.optional_channels if name not in CHANNELS]
        if problems:
            # One problem per line, each already naming its field path (see _format_validation_error).
            raise ValueError("\n  ".join(problems))
        object.__setattr__(self, "channels", typed)
        return self

    def enabled_channels(self) -> list[str]:
        """Names of enabled channels, in config order."""
        return [name for name, params in self.channels.items() if params.enabled]

    def quotas(self, segment: str | None = None) -> dict[str, int]:
        """Per-channel slot counts for the merge, resolving shares against the budget.

        With ``segment``, that segment's ``merge.segment_quotas`` where given (a channel it
        does not name gets 0 slots there), else the channels' quotas.
        """
        if segment is not None and segment in self.merge.segment_quotas:
            chosen = self.merge.segment_quotas[segment]
            return {name: int(chosen.get(name, 0)) for name in self.enabled_channels()}
        budget = self.candidates_per_user
        out = {}
        for name in self.enabled_channels():
            params = self.channels[name]
            out[name] = params.quota if params.quota is not None else max(1, round(params.share * budget))
        return out


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a model-level check (the channel sections) names its own paths
            lines.append(f"  {msg}")
            continue
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {path}: {msg}")
    return f"invalid configuration in {source}:\n" + "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a TOML config (or the defaults), apply overrides, validate; errors name the field."""
    raw: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        raw = read_toml(path)
    raw = apply_overrides(raw, overrides)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise RecallError(_format_validation_error(exc, source)) from None
def load_config_files(paths: Sequence[str | Path], overrides: list[str] | None = None) -> Config:
    """:func:`recall.config.load_config` for several layered files (none: the defaults)."""
    raw = apply_overrides(merge_config_files(paths), overrides)
    source = " + ".join(str(p) for p in paths) or "defaults"
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise RecallError(_format_validation_error(exc, source)) from None


__all__ = ["Config", "load_config", "load_config_files",
           "ALSConfig",
           "BlacklistConfig",
           "DataConfig",
           "DiversityConfig",
           "EvalConfig",
           "FiltersConfig",
           "MergeConfig",
           "OutputConfig",
           "PurchaseFilterConfig",
           "QUOTA_KEYS",
           "RunConfig",
           "SegmentsConfig",
           "SparkSettings",
           "Strict",
           "TriggerConfig",
           "TuneConfig",
           "USER_SEGMENTS",
           "apply_overrides",
           "merge_config_dicts",
           "merge_config_files",
           "parse_override",
           "read_toml",
]
