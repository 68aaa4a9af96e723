"""The command line end to end on a small log: every command, help texts, error exit codes."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from recall.cli import app
from recall.io import Dataset, write_dataset
from tests.conftest import random_log

runner = CliRunner()


def all_commands(group, prefix=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a sub-group
            yield from all_commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,)


@pytest.mark.parametrize("path", list(all_commands(get_command(app))), ids=" ".join)
def test_every_command_has_help_with_an_example(path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example: recall " + " ".join(path) in result.output


@pytest.fixture
def data_dir(tmp_path, tiny_dataset):
    events = random_log(5, n_events=600, n_users=30, n_items=15)
    write_dataset(Dataset(events=events, items=tiny_dataset.items), tmp_path / "data")
    return tmp_path / "data"


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_run_show_similar_build_merge(tmp_path, data_dir):
    out = tmp_path / "out"
    result = invoke("run", "--data", data_dir, "--out", out, "--run-date", "2024-01-01")
    assert "itemcf" in result.output and "published" in result.output
    run = out / "2024-01-01"
    candidates = pl.read_parquet(run / "candidates.parquet")
    assert candidates.columns == ["user_id", "item_id", "score", "rank", "source", "channels"]
    assert (run / "i2i" / "itemcf.parquet").exists() and (run / "channels" / "itemcf.parquet").exists()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["tables"]["candidates.parquet"] == candidates.height
    assert set(manifest["inputs"]) == {"events", "items"} and manifest["seed"] == 42
    assert "polars" in manifest["libraries"]

    user = candidates["user_id"][0]
    shown = invoke("show", user, "--out", out)
    assert candidates.filter(pl.col("user_id") == user)["source"][0] in shown.output
    item = pl.read_parquet(run / "i2i" / "itemcf.parquet")["item_id"][0]
    invoke("similar", item, "--channel", "itemcf", "--out", out)

    invoke("build", "itemcf", "--data", data_dir, "--out", out, "--run-date", "2024-01-01",
           "--set", "channels.itemcf.top_k=3")
    i2i = pl.read_parquet(run / "i2i" / "itemcf.parquet")
    assert i2i.group_by("item_id").len()["len"].max() <= 3
    assert (run / "candidates.parquet").exists(), "build keeps the other tables"
    invoke("merge", "--out", out, "--run-date", "2024-01-01")


def test_eval_writes_json(tmp_path, data_dir):
    report_path = tmp_path / "eval.json"
    invoke("eval", "--data", data_dir, "--set", "eval.test_days=2", "--set", "eval.ks=[5,10]",
           "--json", report_path)
    report = json.loads(report_path.read_text())
    names = {row["name"] for row in report["results"]}
    assert {"itemcf", "merged", "popularity", "implicit_bm25"} <= names
    assert {row["k"] for row in report["results"]} == {5, 10}


@pytest.mark.parametrize("args", [
    ["show", "1", "--out", "{tmp}/nothing"],
    ["build", "nosuch", "--out", "{tmp}/o"],
    ["run", "--data", "{tmp}/missing"],
    ["run", "--set", "channels.itemcf.top_k=0"],
])
def test_user_errors_exit_1_without_traceback(tmp_path, args):
    result = runner.invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "error:" in result.output and "Traceback" not in result.output
