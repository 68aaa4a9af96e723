"""Each formula has one definition: the recency decay and the merge rule are called, never restated."""

from __future__ import annotations

import ast
from pathlib import Path

RECALL = Path(__file__).resolve().parents[1] / "recall"


def halvings(path: Path) -> list[int]:
    """Lines of code (not docstrings) that compute ``0.5 ** x`` or ``pow(0.5, x)`` themselves."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and \
                isinstance(node.left, ast.Constant) and node.left.value == 0.5:
            found.append(node.lineno)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "pow" and node.args:
            first = node.args[0]
            if ast.unparse(first) in ("0.5", "F.lit(0.5)"):
                found.append(node.lineno)
    return found


def test_the_recency_decay_is_written_once():
    offenders = {str(p.relative_to(RECALL)): lines for p in RECALL.rglob("*.py")
                 if p.name != "decay.py" and (lines := halvings(p))}
    assert offenders == {}, f"compute recency decay with recall.decay.halving, not inline: {offenders}"


def test_every_merge_uses_the_one_slot_rule():
    for module in ("merge.py", "spark/merge.py", "tuning.py"):
        text = (RECALL / module).read_text()
        assert "slot_positions" in text, module
    for module in ("spark/merge.py", "tuning.py"):
        tree = ast.parse((RECALL / module).read_text())
        divisions = [n for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)
                     and "quota" in ast.unparse(n.right)]
        assert not divisions, f"{module} restates rank / quota: {[ast.unparse(d) for d in divisions]}"


# --- the counting formulas: one pure function each, next to its channel; Spark builds columns from them

FORMULAS = {  # formula -> (module that defines it, function)
    "IUF / IIF / sequence-length damping": ("decay.py", "log_damping"),
    "itemCF hot-item normalisation": ("channels/itemcf.py", "popularity_scales"),
    "itemCF pair window in buckets": ("channels/itemcf.py", "max_bucket_gap"),
    "itemCF time decay between interactions": ("channels/itemcf.py", "pair_decay"),
    "association distance weight": ("channels/association.py", "distance_weight"),
    "association direction weights": ("channels/association.py", "directions"),
    "association popularity normalisation": ("channels/association.py", "popularity_powers"),
    "Beta posterior mean": ("ctr.py", "posterior_mean"),
    "hierarchical shrinkage": ("ctr.py", "shrunk"),
    "RankI2I CTR factor": ("channels/ranki2i.py", "ctr_factor"),
    "userCF cosine": ("channels/usercf.py", "cosine"),
    "Swing user weight": ("channels/swing.py", "user_weight"),
    "Swing pair weight": ("channels/swing.py", "pair_weight"),
}


def defined_functions(path: Path) -> set[str]:
    return {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}


def test_each_formula_has_one_definition():
    """Each formula function is defined in its home module and nowhere else in recall/."""
    for what, (home, function) in FORMULAS.items():
        homes = [str(p.relative_to(RECALL)) for p in RECALL.rglob("*.py") if function in defined_functions(p)]
        assert homes == [home], f"{what}: {function} defined in {homes}, expected only {home}"


def spark_modules() -> list[Path]:
    return sorted((RECALL / "spark").glob("*.py"))


def test_spark_modules_restate_no_formula():
    """No power, log or exp in recall/spark/: those come from the channels' functions.

    Checked on the code (docstrings are text): no ``**``, no ``pow``/``log``/``log1p``/``exp``/``sqrt``
    call (Spark's or numpy's; passing ``F.sqrt`` to :func:`recall.channels.usercf.cosine` is how the
    engine supplies its correctly rounded square root), no ``lambda`` computing a weight for :func:`numpy_lookup`
    other than by calling a formula function, and no smoothing written as
    ``(c + x) / (n + y)``.
    """
    offenders = []
    for path in spark_modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            where = f"{path.name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
                offenders.append(f"{where} {ast.unparse(node)}")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("pow", "log", "log1p", "exp",
                                                                                   "log10", "log2", "sqrt"):
                offenders.append(f"{where} {ast.unparse(node)}")
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and \
                    isinstance(node.left, ast.BinOp) and isinstance(node.left.op, ast.Add) and \
                    isinstance(node.right, ast.BinOp) and isinstance(node.right.op, ast.Add):
                offenders.append(f"{where} smoothing restated: {ast.unparse(node)}")
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "numpy_lookup":
                for arg in node.args:
                    if isinstance(arg, ast.Lambda) and not isinstance(arg.body, (ast.Subscript, ast.Call)):
                        offenders.append(f"{where} lambda computes a formula: {ast.unparse(arg)}")
    assert offenders == [], "\n".join(offenders)


def test_spark_modules_import_their_formulas_from_the_channels():
    uses = {"itemcf.py": {"popularity_scales", "max_bucket_gap", "pair_decay", "log_damping"},
            "association.py": {"distance_weights", "directions", "popularity_powers", "log_damping"},
            "usercf.py": {"log_damping", "cosine"},
            "crowd.py": {"posterior_mean", "shrunk"},
            "ranki2i.py": {"shrunk", "ctr_factor"},
            "swing.py": {"user_weight", "pair_weight"}}
    for module, names in uses.items():
        tree = ast.parse((RECALL / "spark" / module).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert names <= imported, f"spark/{module} does not import {names - imported}"


def test_the_formula_functions_agree_with_their_definitions():
    """The pure functions compute the documented formulas (numpy), so the engines share the right maths."""
    import numpy as np

    from recall.channels.association import AssociationParams, directions, distance_weights
    from recall.channels.itemcf import ItemCFParams, max_bucket_gap, pair_decay, popularity_scales
    from recall.channels.ranki2i import ctr_factor
    from recall.channels.swing import SwingParams, pair_weight, user_weight
    from recall.ctr import posterior_mean, shrunk
    from recall.decay import log_damping

    n = np.array([1.0, 2.0, 7.0, 1000.0])
    assert np.array_equal(log_damping(n), 1.0 / np.log1p(n))
    si, sj = popularity_scales(n, 0.8)
    assert np.allclose(si * sj, 1.0 / n) and np.allclose(si, n ** -0.8)
    p = ItemCFParams(pair_window_hours=168.0, bucket_hours=24.0, decay_half_life_hours=72.0)
    assert max_bucket_gap(p) == 7 and max_bucket_gap(ItemCFParams(pair_window_hours=None)) == 0
    assert pair_decay(3, p) == 0.5
    assert distance_weights(AssociationParams(window=3, distance_base=0.8)) == [1.0, 0.8, 0.8 ** 2]
    assert directions(AssociationParams(forward_weight=1.0, backward_weight=0.7)) == [(1.0, False), (0.7, True)]
    assert directions(AssociationParams(forward_weight=0.0, backward_weight=0.7)) == [(0.7, True)]
    assert posterior_mean(3.0, 10.0, 1.0, 4.0) == 4.0 / 15.0
    assert shrunk(3.0, 10.0, 0.2, 5.0) == 4.0 / 15.0
    assert ctr_factor(0.25, 1.0) == 0.25 and ctr_factor(0.25, 0.5) == 0.5
    s = SwingParams(user_alpha=5.0, user_beta=0.3, alpha=1.0)
    assert user_weight(np.array([5.0]), s)[0] == 10.0 ** -0.3
    assert pair_weight(2.0, 3.0, np.array([4.0]), s)[0] == 6.0 / 5.0
