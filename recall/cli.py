"""The ``recall`` command line: thin commands over the library; RecallError becomes exit code 1."""

from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recall.errors import RecallError

app = typer.Typer(help="Multi-channel recall: turn an interaction log into per-user candidate tables.",
                  no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="rich")
data_app = typer.Typer(help="Create, import and check input data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
out = Console()
err = Console(stderr=True)

DEFAULT_CONFIG = Path("configs/default.toml")

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config (default: configs/default.toml if present)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a config value, e.g. --set channels.itemcf.top_k=50")]
DataOpt = Annotated[Optional[Path], typer.Option("--data", help="input data folder (overrides data.dir)")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", help="output root (overrides output.root)")]
DateOpt = Annotated[Optional[str], typer.Option("--run-date", help="run date YYYY-MM-DD (overrides output.run_date)")]


def command(group: typer.Typer, name: str | None = None):
    """Register a command whose RecallError is printed as one line and exits with code 1."""

    def register(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except RecallError as exc:
                err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
                raise typer.Exit(1) from None

        return group.command(name)(wrapper)

    return register


def load(config: Path | None, overrides: list[str] | None, data: Path | None = None,
         out_root: Path | None = None, run_date: str | None = None):
    from recall.config import load_config

    if config is None and DEFAULT_CONFIG.exists():
        config = DEFAULT_CONFIG
    extra = list(overrides or [])
    if data is not None:
        extra.append(f"data.dir={json.dumps(str(data))}")
    if out_root is not None:
        extra.append(f"output.root={json.dumps(str(out_root))}")
    if run_date is not None:
        extra.append(f"output.run_date={json.dumps(run_date)}")
    return load_config(config, extra)


@contextlib.contextmanager
def progress_steps():
    """A ``step(name)`` context factory that shows a spinner and the elapsed time of each step."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err, transient=False) as progress:
        @contextlib.contextmanager
        def step(name: str):
            task = progress.add_task(name, total=1)
            yield
            progress.update(task, completed=1)

        yield step


def print_summary(result: dict) -> None:
    table = Table(title=f"run {result['run_date']}")
    for column in ("channel", "candidate rows", "users", "i2i rows", "seconds"):
        table.add_column(column, justify="right" if column != "channel" else "left")
    for name, row in result["channels"].items():
        table.add_row(name, f"{row['rows']:,}", f"{row['users']:,}",
                      "-" if row["i2i_rows"] is None else f"{row['i2i_rows']:,}", f"{row['seconds']:.2f}")
    if "candidates" in result:
        cand = result["candidates"]
        by_source = ", ".join(f"{k} {v:,}" for k, v in cand["by_source"].items())
        table.add_row("[bold]merged[/]", f"{cand['rows']:,}", f"{cand['users']:,}", "-", "", end_section=True)
        out.print(table)
        out.print(f"merged slots by channel: {by_source}")
    else:
        out.print(table)
    out.print(f"tables published under [bold]{result['published']}[/]")


@command(data_app, "synth")
def data_synth(
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write events/items/users Parquet into")],
    users: Annotated[int, typer.Option(help="number of users")] = 2000,
    items: Annotated[int, typer.Option(help="number of items")] = 1000,
    days: Annotated[int, typer.Option(help="days of activity")] = 14,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same data)")] = 0,
):
    """Generate a realistic synthetic log with planted structure.

    Example: recall data synth --out data/sample --users 3000 --items 1500 --days 14 --seed 0
    """
    from recall.io import summarise, write_dataset
    from recall.synth import synthesize

    dataset = synthesize(users, items, days, seed)
    written = write_dataset(dataset, out_dir)
    out.print(summarise(dataset))
    out.print(f"wrote {', '.join(str(p) for p in written.values())}")


@command(data_app, "import")
def data_import(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help="taobao, movielens or generic")],
    src: Annotated[Path, typer.Argument(help="source file or folder")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write the normalised tables into")],
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", help="importer option key=value (generic: user_col=..., behavior_map={pv='click'})")] = None,
):
    """Import a public dataset or a generic log into the recall data contract.

    Example: recall data import movielens ../shared/data/ml-100k --out data/imported/ml-100k
    """
    from recall.config import parse_override
    from recall.importers import run_importer
    from recall.io import summarise, write_dataset

    options = {}
    for text in option or []:
        keys, value = parse_override(text)
        options[".".join(keys)] = value
    dataset = run_importer(fmt, src, **options)
    written = write_dataset(dataset, out_dir)
    out.print(summarise(dataset))
    out.print(f"wrote {', '.join(str(p) for p in written.values())}")


@command(data_app, "check")
def data_check(directory: Annotated[Path, typer.Argument(help="data folder with events (+ items, users)")]):
    """Validate a data folder and print a summary; bad input exits with code 1.

    Example: recall data check data/sample
    """
    from recall.io import check_id_types, load_dataset, summarise

    dataset = load_dataset(directory)
    check_id_types(dataset)
    summary = summarise(dataset)
    table = Table(title=f"data check: {directory}", show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
    out.print(table)
    out.print("[green]ok[/]")


@command(app, "channels")
def channels():
    """List the registered channels with a one-line description.

    Example: recall channels
    """
    from recall.channels import CHANNELS

    table = Table(show_header=True)
    table.add_column("channel")
    table.add_column("description")
    for name, cls in CHANNELS.items():
        table.add_row(name, cls.description)
    out.print(table)


@command(app, "build")
def build(channel: Annotated[str, typer.Argument(help="channel name (see 'recall channels')")],
          config: ConfigOpt = None, set_: SetOpt = None, data: DataOpt = None, out_root: OutOpt = None,
          run_date: DateOpt = None):
    """Fit one channel and publish its tables into the run date.

    Example: recall build itemcf --set channels.itemcf.top_k=50
    """
    from recall.pipeline import build as build_channel

    cfg = load(config, set_, data, out_root, run_date)
    with progress_steps() as step:
        result = build_channel(cfg, channel, step)
    print_summary(result)


@command(app, "merge")
def merge(config: ConfigOpt = None, set_: SetOpt = None, out_root: OutOpt = None, run_date: DateOpt = None):
    """Merge the published channel tables of a run under the configured quotas.

    Example: recall merge --run-date 2017-12-04
    """
    from recall.pipeline import merge_published

    cfg = load(config, set_, None, out_root, run_date)
    with progress_steps() as step:
        result = merge_published(cfg, run_date, step)
    print_summary(result)


@command(app, "run")
def run(config: ConfigOpt = None, set_: SetOpt = None, data: DataOpt = None, out_root: OutOpt = None,
        run_date: DateOpt = None):
    """Build every enabled channel, merge, and publish the run atomically.

    Example: recall run --config configs/default.toml
    """
    from recall.pipeline import run as run_pipeline

    cfg = load(config, set_, data, out_root, run_date)
    with progress_steps() as step:
        result = run_pipeline(cfg, step)
    print_summary(result)


@command(app, "eval")
def evaluate(config: ConfigOpt = None, set_: SetOpt = None, data: DataOpt = None,
             json_out: Annotated[Optional[Path], typer.Option("--json", help="also write the report as JSON here")] = None):
    """Evaluate every channel, the merge and the baselines on a time split.

    Example: recall eval --data data/imported/ml-100k --set eval.test_days=14 --json eval.json
    """
    from recall.evaluate import evaluate as run_eval
    from recall.pipeline import load_data

    cfg = load(config, set_, data)
    with progress_steps() as step:
        report = run_eval(cfg, load_data(cfg), step)
    table = Table(title=(f"time split: {report['test_users']:,} test users "
                         f"({report['test_users_without_history']:,} without history), "
                         f"{report['targets']:,} targets"))
    for column in ("name", "kind", "users", "K", "Recall", "HitRate", "NDCG", "Coverage"):
        table.add_column(column, justify="left" if column in ("name", "kind", "users") else "right")
    for row in sorted(report["results"], key=lambda r: r["segment"]):
        table.add_row(row["name"], row["kind"], row["segment"], str(row["k"]), f"{row['recall']:.4f}",
                      f"{row['hit_rate']:.4f}", f"{row['ndcg']:.4f}", f"{row['coverage']:.4f}")
    out.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2))
        out.print(f"report written to {json_out}")


@command(app, "show")
def show(user: Annotated[str, typer.Argument(help="user id")], config: ConfigOpt = None, out_root: OutOpt = None,
         run_date: DateOpt = None, limit: Annotated[int, typer.Option(help="rows to show")] = 20):
    """Show a user's merged candidates with the channels that found them.

    Example: recall show 42 --limit 10
    """
    from recall.query import user_candidates

    cfg = load(config, None, None, out_root, run_date)
    frame = user_candidates(cfg.output.root, run_date, user, limit)
    out.print(frame)


@command(app, "similar")
def similar(item: Annotated[str, typer.Argument(help="item id")],
            channel: Annotated[str, typer.Option(help="channel whose i2i table to read")] = "itemcf",
            config: ConfigOpt = None, out_root: OutOpt = None, run_date: DateOpt = None,
            limit: Annotated[int, typer.Option(help="rows to show")] = 20):
    """Show an item's nearest neighbours in a channel's i2i table.

    Example: recall similar 1234 --channel itemcf
    """
    from recall.query import similar_items

    cfg = load(config, None, None, out_root, run_date)
    out.print(similar_items(cfg.output.root, run_date, channel, item, limit))


def main() -> None:
    app()
