"""The ``recall`` command line: thin commands over the library, with exit codes and logs for cron.

Exit codes: 0 success; 1 a problem the user can fix (:class:`~recall.errors.RecallError`,
or a command-line usage error), printed as one ``error: ...`` line; 2 an internal
error (any other exception, i.e. a bug), printed as one ``internal error: TYPE: MESSAGE``
line naming the file the traceback was written to. A traceback reaches the
terminal only with ``--debug``. Global options (before the command, or from the
environment): ``--quiet`` shows errors only, ``--log-format json`` writes one
JSON object per line on stderr (see :mod:`recall.logs`), ``--debug`` shows
everything, with tracebacks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import functools
import json
import logging
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recall.errors import RecallError
from recall.logs import event, setup_logging

app = typer.Typer(help="Multi-channel recall: turn an interaction log into per-user candidate tables.",
                  no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="rich")
data_app = typer.Typer(help="Create, import and check input data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
out = Console()
err = Console(stderr=True)
log = logging.getLogger("recall")

DEFAULT_CONFIG = Path("configs/default.toml")

ConfigOpt = Annotated[Optional[list[Path]], typer.Option("--config", "-c", help="TOML config; repeat to layer files, later over earlier, e.g. -c configs/default.toml -c tuned.toml (default: configs/default.toml if present)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a config value, e.g. --set channels.itemcf.top_k=50")]
DataOpt = Annotated[Optional[Path], typer.Option("--data", help="input data folder (overrides data.dir)")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", help="output root (overrides output.root)")]
DateOpt = Annotated[Optional[str], typer.Option("--run-date", help="run date YYYY-MM-DD (overrides output.run_date)")]


class LogFormat(str, enum.Enum):
    text = "text"
    json = "json"


@dataclass
class Options:
    """The global options of the current invocation."""

    quiet: bool = False
    log_format: str = "text"
    debug: bool = False


OPTIONS = Options()


@app.callback()
def global_options(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", envvar="RECALL_QUIET",
                                        help="no progress or summaries: print errors only (for cron)")] = False,
    log_format: Annotated[LogFormat, typer.Option("--log-format", envvar="RECALL_LOG_FORMAT",
                                                  help="stderr as text, or one JSON object per line "
                                                       "(ts, level, event, message, fields)")] = LogFormat.text,
    debug: Annotated[bool, typer.Option("--debug", envvar="RECALL_DEBUG",
                                        help="debug logs, and tracebacks on the terminal")] = False,
):
    """Global options go before the command: recall --quiet --log-format json run."""
    global OPTIONS
    OPTIONS = Options(quiet=quiet, log_format=log_format.value, debug=debug)
    setup_logging(OPTIONS.log_format, quiet=quiet, debug=debug)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def report_user_error(exc: RecallError) -> None:
    """Print a RecallError as ``error: ...`` (or a JSON event); exit code 1 follows."""
    if OPTIONS.debug:
        err.print(escape("".join(traceback.format_exception(exc))), highlight=False)
    if OPTIONS.log_format == "json":
        event(log, "error", str(exc), level=logging.ERROR, exit_code=1)
    else:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)


def write_traceback(exc: BaseException) -> Path | None:
    """Write the traceback of an internal error to a file in the temp folder; None if that fails."""
    try:
        with tempfile.NamedTemporaryFile("w", prefix="recall-internal-error-", suffix=".txt",
                                         delete=False) as handle:
            handle.write(f"recall internal error at {dt.datetime.now(dt.timezone.utc).isoformat()}\n"
                         f"command: {' '.join(sys.argv)}\n\n")
            handle.write("".join(traceback.format_exception(exc)))
            return Path(handle.name)
    except OSError:
        return None


def report_internal_error(exc: BaseException) -> None:
    """One line naming the exception and where its traceback went; exit code 2 follows."""
    path = write_traceback(exc)
    where = (f"traceback written to {path}" if path is not None
             else "the traceback could not be written to the temp folder; rerun with --debug")
    summary = f"{type(exc).__name__}: {_one_line(str(exc))}" if str(exc) else type(exc).__name__
    if OPTIONS.debug:
        err.print(escape("".join(traceback.format_exception(exc))), highlight=False)
    if OPTIONS.log_format == "json":
        event(log, "internal_error", f"{summary} ({where})", level=logging.ERROR, exit_code=2,
              error_type=type(exc).__name__, error=str(exc), traceback_file=str(path) if path else None)
    else:
        err.print(f"[bold red]internal error:[/] {escape(summary)} ({escape(where)}; this is a bug "
                  "in recall, please report it)", highlight=False, soft_wrap=True)


def command(group: typer.Typer, name: str | None = None):
    """Register a command: RecallError exits 1 with one line, any other exception exits 2 with one line."""

    def register(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except RecallError as exc:
                report_user_error(exc)
                raise typer.Exit(1) from None
            except (typer.Exit, typer.Abort, typer.TyperException):
                raise
            except Exception as exc:  # noqa: BLE001 - the edge of the program: a bug, reported as such
                report_internal_error(exc)
                raise typer.Exit(2) from None

        return group.command(name)(wrapper)

    return register


def say(*objects) -> None:
    """Print progress-like information (summaries, 'wrote ...'), which --quiet suppresses."""
    if not OPTIONS.quiet:
        out.print(*objects)


def load(config: list[Path] | None, overrides: list[str] | None, data: Path | None = None,
         out_root: Path | None = None, run_date: str | None = None):
    from recall.config import load_config_files

    if not config and DEFAULT_CONFIG.exists():
        config = [DEFAULT_CONFIG]
    extra = list(overrides or [])
    if data is not None:
        extra.append(f"data.dir={json.dumps(str(data))}")
    if out_root is not None:
        extra.append(f"output.root={json.dumps(str(out_root))}")
    if run_date is not None:
        extra.append(f"output.run_date={json.dumps(run_date)}")
    return load_config_files(config or [], extra)


@contextlib.contextmanager
def progress_steps():
    """A ``step(name)`` context factory: a spinner with elapsed times, a JSON event per step, or nothing."""
    if OPTIONS.quiet:
        yield lambda name: contextlib.nullcontext()
        return
    if OPTIONS.log_format == "json":
        @contextlib.contextmanager
        def logged(name: str):
            started = time.perf_counter()
            yield
            event(log, "step.done", f"{name} done", step=name, seconds=round(time.perf_counter() - started, 3))

        yield logged
        return
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
    if OPTIONS.quiet:
        return
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
    for failure in result.get("failures", []):
        out.print(f"[bold red]failed[/] (optional, left out): {escape(failure['part'])}: "
                  f"{escape(failure['error_type'])}: {escape(failure['message'])}")
    out.print(f"tables published under [bold]{result['published']}[/]")


def _cell(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def summary_table(summary: dict, title: str, skipped: list | None = None) -> Table:
    """A data summary (:func:`recall.io.summarise`) as a two-column table, behaviours one per row."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    for key, value in summary.items():
        if key == "behaviors":
            total = max(sum(value.values()), 1)
            for behavior, count in value.items():
                table.add_row(f"behavior {behavior}", f"{count:,} ({count / total:.1%})")
        elif key.endswith("coverage"):
            table.add_row(key, f"{value:.1%}")
        elif key in ("ts_min", "ts_max"):
            when = dt.datetime.fromtimestamp(value, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            table.add_row(key, f"{value} ({when} UTC)")
        else:
            table.add_row(key, _cell(value))
    for record in skipped or []:
        shown = ", ".join(map(str, record.first_lines)) + (", ..." if record.count > len(record.first_lines) else "")
        table.add_row(f"skipped {record.unit}s: {record.path.name}",
                      escape(f"{record.count:,} ({record.unit} {shown})"))
    return table


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
    say(summary_table(summarise(dataset), f"synthetic log: {out_dir}"))
    say(f"wrote {', '.join(str(p) for p in written.values())}")


@command(data_app, "import")
def data_import(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help="taobao, movielens, retailrocket, tianchi-ads or generic")],
    src: Annotated[Path, typer.Argument(help="source file or folder")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write the normalised tables (and import.json) into")],
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", help="importer option key=value, repeatable, e.g. -o on_bad_lines=skip, -o fav_threshold=4, -o user_col=uid, -o 'behavior_map={pv=\"click\"}' (README lists each importer's options)")] = None,
):
    """Import a public dataset or a generic log into the recall data contract.

    Example: recall data import movielens ../shared/data/ml-100k --out data/imported/ml-100k
    """
    from recall.config import parse_override
    from recall.importers import import_to_folder

    options = {}
    for text in option or []:
        keys, value = parse_override(text)
        options[".".join(keys)] = value
    report = import_to_folder(fmt, src, out_dir, **options)
    say(summary_table(report.summary, f"imported {fmt}: {src}", report.skipped))
    say(f"wrote {', '.join(str(p) for p in report.written.values())} and {report.metadata}")


@command(data_app, "check")
def data_check(directory: Annotated[Path, typer.Argument(help="data folder with events (+ items, users)")]):
    """Validate a data folder and print a summary and its profile; bad input exits with code 1.

    Example: recall data check data/sample
    """
    from recall.io import check_id_types, load_dataset, summarise
    from recall.profile import profile

    dataset = load_dataset(directory)
    check_id_types(dataset)
    say(summary_table(summarise(dataset), f"data check: {directory}"))
    shape = Table(title="profile (what `recall init` chooses from)", show_header=False)
    for key, value in profile(dataset).rows():
        shape.add_row(key, value)
    say(shape)
    say("[green]ok[/]")


@command(app, "init")
def init(directory: Annotated[Path, typer.Argument(help="data folder with events (+ items, users)")],
         out_path: Annotated[Path, typer.Option("--out", help="where to write the config")] = Path("config.toml")):
    """Write a starting config fitted to a data folder, one comment per choice.

    Example: recall init data/imported/ml-100k --out ml.toml; then recall tune -c ml.toml --out tuned.toml
    """
    from recall.io import check_id_types, load_dataset
    from recall.profile import profile, starting_config

    dataset = load_dataset(directory)
    check_id_types(dataset)
    out_path.write_text(starting_config(profile(dataset), str(directory)))
    say(f"config written to [bold]{out_path}[/]; next: recall tune -c {out_path} --out tuned.toml, "
        f"then recall eval -c {out_path} -c tuned.toml")


@command(app, "graph")
def graph(config: ConfigOpt = None, set_: SetOpt = None, data: DataOpt = None,
          out_path: Annotated[Optional[Path], typer.Option("--out", help="write the graph as GraphML here")] = None,
          session_gap_hours: Annotated[float, typer.Option(help="cut sessions at gaps longer than this")] = 1.0):
    """Describe the session item graph the walk channels use (PageRank, reciprocity, components); export it.

    Example: recall graph --out item_graph.graphml   (open it in Gephi or networkx)
    """
    from recall.context import TrainData
    from recall.graph import GraphParams, describe, export_graphml, item_graph
    from recall.pipeline import load_data

    cfg = load(config, set_, data)
    train = TrainData.build(load_data(cfg), triggers=cfg.triggers, seed=cfg.seed)
    built = item_graph(train, GraphParams(session_gap_hours=session_gap_hours))
    stats = describe(built, train.item_ids)
    table = Table(title="session item graph", show_header=False)
    for key, value in stats.items():
        if key != "pagerank_top":
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    table.add_row("most central (PageRank)", ", ".join(str(r["item_id"]) for r in stats["pagerank_top"]))
    say(table)
    if out_path is not None:
        say(f"GraphML written to [bold]{export_graphml(built, train.item_ids, out_path)}[/]")


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


class Engine(str, enum.Enum):
    local = "local"
    spark = "spark"


@command(app, "run")
def run(config: ConfigOpt = None, set_: SetOpt = None, data: DataOpt = None, out_root: OutOpt = None,
        run_date: DateOpt = None,
        engine: Annotated[Engine, typer.Option(help="local: this machine (polars/numpy); spark: the counting "
                                                    "channels, merge and filters as Spark jobs (needs "
                                                    "pip install '.\\[spark]' and Java 17)")] = Engine.local,
        master: Annotated[Optional[str], typer.Option(help="Spark master URL with --engine spark, e.g. local[*], "
                                                           "spark://host:7077, yarn (default: local[*])")] = None,
        spark_conf: Annotated[Optional[list[str]], typer.Option("--spark-conf", help="Spark setting key=value with "
                                                                "--engine spark; repeat, e.g. --spark-conf "
                                                                "spark.driver.memory=8g")] = None):
    """Build every enabled channel, merge, and publish the run atomically.

    Example: recall run --config configs/default.toml; on Spark: recall run --engine spark --master local[*]
    """
    cfg = load(config, set_, data, out_root, run_date)
    if engine is Engine.spark:
        from recall.spark.engine import parse_spark_conf, run_spark

        conf = parse_spark_conf(spark_conf)
        with progress_steps() as step:
            result = run_spark(cfg, step, master=master, conf=conf)
    else:
        if master or spark_conf:
            raise RecallError("--master and --spark-conf apply to the Spark engine; add --engine spark")
        from recall.pipeline import run as run_pipeline

        with progress_steps() as step:
            result = run_pipeline(cfg, step)
    print_summary(result)


@command(app, "eval")
def evaluate(config: ConfigOpt = None, set_: SetOpt = None, data: DataOpt = None,
             json_out: Annotated[Optional[Path], typer.Option("--json", help="also write the report as JSON here")] = None,
             report_dir: Annotated[Optional[Path], typer.Option("--report", help="write report.html, metrics.json and the PNG plots into this folder")] = None):
    """Evaluate every channel, the merge and the baselines on a time split.

    Example: recall eval --data data/imported/ml-100k --set eval.test_days=14 --json eval.json --report report/
    """
    from recall.evaluation import evaluate as run_eval
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
    if report_dir is not None:
        from recall.report import write_report

        paths = write_report(report, report_dir)
        out.print(f"HTML report written to [bold]{paths['html']}[/] (metrics in {paths['metrics']})")


@command(app, "tune")
def tune(config: ConfigOpt = None, set_: SetOpt = None, data: DataOpt = None,
         out_path: Annotated[Path, typer.Option("--out", help="where to write the tuned config fragment")] = Path("tuned.toml")):
    """Choose per-channel quotas on a validation window just before the evaluation split.

    Example: recall tune -c configs/default.toml --out tuned.toml; then recall eval -c configs/default.toml -c tuned.toml
    """
    from recall.pipeline import load_data
    from recall.tuning import tune as run_tune

    cfg = load(config, set_, data)
    with progress_steps() as step:
        result = run_tune(cfg, load_data(cfg), step)
    label = f"{result.metric}@{result.k}"
    table = Table(title=f"quotas by validation {label} ({result.validation_users:,} users, "
                        f"{result.evaluations} merges, {result.seconds:.1f} s)")
    for column in ("channel", "tuned", "equal", "configured", f"alone {label}"):
        table.add_column(column, justify="left" if column == "channel" else "right")
    for name, quota in result.quotas.items():
        table.add_row(name, str(quota), str(result.equal[name]), str(result.configured[name]),
                      f"{result.alone[name]:.4f}")
    table.add_row(f"[bold]merged {label}[/]", f"{result.scores['tuned']:.4f}", f"{result.scores['equal']:.4f}",
                  f"{result.scores['configured']:.4f}", "", end_section=True)
    out.print(table)
    gain = result.gain
    out.print(f"searched - configured {label}: {gain['delta']:+.4f} ± {gain['stderr']:.4f} (s.e.): "
              + ("within noise, configured quotas kept" if result.kept_prior else "searched quotas used"))
    for name, params in result.params.items():
        out.print(f"{name} settings chosen on validation: {params}")
    for segment, found in result.segments.items():
        out.print(f"{segment} users ({found['users']}): own quotas {found['quotas']} "
                  f"{found['gain']['delta']:+.4f} ± {found['gain']['stderr']:.4f}: "
                  + ("within noise, not used" if found["kept_prior"] else "used"))
    written = result.write(out_path)
    out.print(f"tuned quotas written to [bold]{written}[/]; layer them: recall eval -c <base.toml> -c {written}")


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
    """The ``recall`` entry point: command-line usage errors exit 1 (user errors), not click's 2."""
    from typer import rich_utils

    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        err.print("aborted")
        sys.exit(1)
    except typer.TyperException as exc:  # a usage error: unknown option, bad value, missing argument
        rich_utils.rich_format_error(exc)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - a bug outside any command (e.g. in option parsing)
        report_internal_error(exc)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
