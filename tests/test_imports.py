"""Every module imports on its own in a fresh interpreter (no circular imports hidden by test order)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import recall

MODULES = sorted(m.name for m in pkgutil.walk_packages(recall.__path__, "recall.")
                 if not m.name.startswith("recall.spark"))


def test_every_module_imports_alone():
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    failures = []
    for name in MODULES:  # one interpreter per module: each must import first, on its own
        run = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True)
        if run.returncode:
            failures.append(f"{name}: {run.stderr.strip().splitlines()[-1]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("heavy", ["torch", "gensim", "faiss", "pyspark", "matplotlib"])
def test_cli_does_not_import_heavy_libraries(heavy):
    run = subprocess.run([sys.executable, "-c", f"import recall.cli, sys; print('{heavy}' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"


def test_the_public_api_is_small_lazy_and_real():
    import subprocess
    import sys

    import recall

    assert set(recall.__all__) == {"CHANNELS", "Config", "RecallError", "evaluate", "load_config",
                                   "load_config_files", "load_data", "run", "tune"}
    from recall.evaluation import evaluate
    from recall.pipeline import run

    assert recall.run is run and recall.evaluate is evaluate and "itemcf" in recall.CHANNELS
    # Importing the package loads no heavy module.
    probe = "import sys, recall; print(sorted(m for m in ('polars', 'torch', 'gensim', 'faiss') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
