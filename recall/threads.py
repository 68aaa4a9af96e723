"""Calls spread over a few threads (numpy's sorts, polars, faiss and gensim release the GIL)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable


def in_threads(function: Callable, keys: list, workers: int) -> dict:
    """``{key: function(key)}``, calls started in the order of ``keys``, ``workers`` at a time.

    The first exception is raised once the calls already running have finished;
    calls not yet started are dropped.
    """
    if workers <= 1 or len(keys) <= 1:
        return {key: function(key) for key in keys}
    with concurrent.futures.ThreadPoolExecutor(min(workers, len(keys))) as pool:
        futures = {key: pool.submit(function, key) for key in keys}
        done, _ = concurrent.futures.wait(futures.values(), return_when=concurrent.futures.FIRST_EXCEPTION)
        if any(future.exception() is not None for future in done):
            for future in futures.values():
                future.cancel()
            concurrent.futures.wait(futures.values())
            for future in futures.values():
                if not future.cancelled() and future.exception() is not None:
                    raise future.exception()
        return {key: future.result() for key, future in futures.items()}
