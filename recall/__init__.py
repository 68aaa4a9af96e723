"""recall: multi-channel candidate generation (recall) for recommender systems.

The public API, imported lazily so that ``import recall`` (and ``recall --help``)
loads nothing heavy::

    import recall
    cfg = recall.load_config("configs/default.toml")
    summary = recall.run(cfg)                                # fit, merge, filter, publish
    report = recall.evaluate(cfg, recall.load_data(cfg))     # channels vs baselines on a time split
    sorted(recall.CHANNELS)                                  # the registered channels
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "CHANNELS": "recall.channels",
    "Config": "recall.config",
    "load_config": "recall.config",
    "load_config_files": "recall.config",
    "RecallError": "recall.errors",
    "load_data": "recall.pipeline",
    "run": "recall.pipeline",
    "evaluate": "recall.evaluation",
    "tune": "recall.tuning",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'recall' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
