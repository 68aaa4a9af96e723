"""The shared trigger weights against a brute-force oracle, including the fallback for lapsed users."""

from __future__ import annotations

import numpy as np
import pytest

from recall.config import TriggerConfig
from recall.context import TrainData
from recall.io import Dataset
from tests.conftest import random_log


def brute_triggers(events, cfg: TriggerConfig, now: int) -> dict:
    """{(user, item): weight}: strongest event, window and decay from now, or from the user's last
    behaviour when none is inside the window; the max_triggers strongest per user."""
    rows = [(u, i, b, t) for u, i, b, t in events.select("user_id", "item_id", "behavior", "ts").iter_rows()
            if cfg.behavior_weights.get(b, 0) > 0]
    last = {}
    for u, _, _, t in rows:
        last[u] = max(last.get(u, t), t)
    best = {}
    for u, i, b, t in rows:
        reference = now if now - last[u] <= cfg.window_days * 86400 else last[u]
        age = (reference - t) / 86400
        if age > cfg.window_days:
            continue
        w = cfg.behavior_weights[b] * 0.5 ** (age / cfg.half_life_days)
        best[u, i] = max(best.get((u, i), 0.0), w)
    out = {}
    for u in {u for u, _ in best}:
        mine = sorted(((w, i) for (v, i), w in best.items() if v == u), key=lambda x: (-x[0], x[1]))
        out.update({(u, i): w for w, i in mine[:cfg.max_triggers]})
    return out


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("window", [0.5, 2.0, 30.0])
def test_trigger_matrix_matches_brute_force(seed, window):
    events = random_log(seed, n_events=500, n_users=15, n_items=20, days=10)
    cfg = TriggerConfig(window_days=window, half_life_days=1.5, max_triggers=4)
    train = TrainData.build(Dataset(events), triggers=cfg)
    got = train.trigger_matrix.tocoo()
    users, items = train.user_ids.to_numpy(), train.item_ids.to_numpy()
    table = {(users[r], items[c]): w for r, c, w in zip(got.row, got.col, got.data)}
    expected = brute_triggers(events, cfg, train.now)
    assert table.keys() == expected.keys()
    np.testing.assert_allclose([table[k] for k in expected], list(expected.values()), rtol=1e-12)


def test_a_lapsed_user_gets_triggers_from_their_latest_behaviours():
    events = random_log(1, n_events=400, n_users=10, n_items=20, days=30)
    cfg = TriggerConfig(window_days=1.0)
    train = TrainData.build(Dataset(events), triggers=cfg)
    per_user = np.diff(train.trigger_matrix.indptr)
    engaged = np.diff(train.interactions.indptr)
    assert (per_user[engaged > 0] > 0).all()  # nobody with history is left without triggers
