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
