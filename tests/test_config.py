"""Tests for recall.config: the shipped default, per-field error paths, overrides, quotas."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recall.channels import CHANNELS
from recall.channels.itemcf import ItemCFParams
from recall.cli import app
from recall.config import Config, load_config, parse_override
from recall.errors import RecallError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TOML = REPO / "configs" / "default.toml"
RECALL_EXE = Path(sys.executable).parent / "recall"

runner = CliRunner()


def write_config(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path | None, overrides: list[str] | None = None) -> str:
    with pytest.raises(RecallError) as info:
        load_config(path, overrides)
    return str(info.value)


# --------------------------------------------------------------------------------------
# The shipped default
# --------------------------------------------------------------------------------------

def _leaves(node: dict, prefix: tuple = ()):
    for key, value in node.items():
        if isinstance(value, dict) and key != "behavior_weights":
            yield from _leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def test_default_config_loads_and_every_key_takes_effect():
    cfg = load_config(DEFAULT_TOML)
    assert isinstance(cfg, Config)
    raw = tomllib.loads(DEFAULT_TOML.read_text())
    # Every channel section is typed by its channel's own parameter model.
    assert set(cfg.channels) == set(raw["channels"]) and "itemcf" in cfg.channels
    for name, params in cfg.channels.items():
        assert type(params) is CHANNELS[name].Params
    assert isinstance(cfg.channels["itemcf"], ItemCFParams)
    assert cfg.enabled_channels() == [n for n, sec in raw["channels"].items() if sec.get("enabled", True)]
    assert set(cfg.quotas()) == set(cfg.enabled_channels())
    assert all(q >= 0 for q in cfg.quotas().values())

    # Every value written in the file is the value in the typed config.
    dumped = cfg.model_dump()
    for path, value in _leaves(raw):
        node = dumped
        for key in path:
            node = node[key]
        if value == float("inf"):
            assert node is None, path  # TOML has no null: inf spells "no window / no decay"
            continue
        assert (str(node) if isinstance(node, Path) else node) == value, path


def test_no_config_file_means_defaults():
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.channels == {} and cfg.quotas() == {}


# --------------------------------------------------------------------------------------
# Errors name the field path
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, fragments", [
    ("candidates_per_user = -1", ["candidates_per_user:", "greater than or equal to 1"]),
    ("seed = 'abc'", ["seed:", "valid integer"]),
    ("sed = 3", ["sed:", "Extra inputs are not permitted"]),
    ("[output]\nkeep_runs = 0", ["output.keep_runs:"]),
    ("[output]\nrun_date = '2024-13-01'", ["output.run_date:", "month must be in 1..12"]),
    ("[eval]\nks = 'ten'", ["eval.ks:"]),
    ("[triggers]\nhalf_life_days = 0", ["triggers.half_life_days:"]),
    ("[triggers]\nbehavior_weights = { pv = 1.0, click = 1.0 }",
     ["triggers.behavior_weights:", "unknown behaviour(s) ['pv']", "allowed: impression, click"]),
    ("[channels.itemcf]\ntop_k = 0", ["channels.itemcf.top_k:", "greater than or equal to 1"]),
    ("[channels.itemcf]\ntopk = 5", ["channels.itemcf.topk:", "Extra inputs are not permitted"]),
    ("[channels.itemcf]\nalpha = 2.0", ["channels.itemcf.alpha:", "less than or equal to 1"]),
    ("[channels.itemcf]\nbehaviors = ['pv']", ["channels.itemcf.behaviors:", "non-empty subset"]),
    ("[channels.itemcf]\nquota = 5\nshare = 0.5", ["channels.itemcf:", "either quota", "or share", "not both"]),
    ("[channels.itemcf]\nshare = 1.5", ["channels.itemcf.share:"]),
    ("[channels.nosuch]\nenabled = true",
     ["channels.nosuch:", "unknown channel 'nosuch'", f"valid channels: {', '.join(sorted(CHANNELS))}"]),
    ("[channels]\nitemcf = 3", ["channels.itemcf:", "valid dictionary"]),
    ("channels = 3", ["channels:", "valid dictionary"]),
])
def test_errors_name_the_field_path(text: str, fragments: list[str], tmp_path: Path):
    path = write_config(tmp_path, text)
    message = config_error(path)
    assert message.startswith(f"invalid configuration in {path}:")
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    # No pydantic internals: no "(top level)" placeholder and no "Value error," prefix.
    assert "(top level)" not in message and "Value error" not in message


def _error_paths(message: str) -> list[str]:
    return sorted(line.strip().split(":")[0] for line in message.splitlines()[1:])


def test_all_errors_reported_one_per_line(tmp_path: Path):
    path = write_config(tmp_path, "candidates_per_user = 0\nseed = 'x'\n[eval]\ntest_days = 0\n")
    message = config_error(path)
    assert message.splitlines()[0] == f"invalid configuration in {path}:"
    assert _error_paths(message) == ["candidates_per_user", "eval.test_days", "seed"]

    path = write_config(tmp_path, "[channels.itemcf]\ntop_k = 0\nalpha = 3\n[channels.nosuch]\n")
    assert _error_paths(config_error(path)) == ["channels.itemcf.alpha", "channels.itemcf.top_k",
                                                "channels.nosuch"]


def test_channel_errors_wait_for_the_other_fields(tmp_path: Path):
    # Known limitation: channel sections are checked by a model-level validator, which
    # pydantic runs only when the plain fields are valid, so a bad channel shows up
    # once the other errors are fixed (never silently accepted).
    path = write_config(tmp_path, "candidates_per_user = 0\n[channels.itemcf]\ntop_k = 0\n")
    assert _error_paths(config_error(path)) == ["candidates_per_user"]
    path = write_config(tmp_path, "candidates_per_user = 1\n[channels.itemcf]\ntop_k = 0\n")
    assert _error_paths(config_error(path)) == ["channels.itemcf.top_k"]


def test_invalid_toml_names_the_file(tmp_path: Path):
    path = write_config(tmp_path, "seed = 1\ncandidates_per_user = = 3\n")
    message = config_error(path)
    assert f"config file '{path}' is not valid TOML" in message
    assert "line 2" in message


def test_missing_config_file(tmp_path: Path):
    path = tmp_path / "nope.toml"
    message = config_error(path)
    assert f"config file '{path}' does not exist" in message
    assert "configs/default.toml" in message


def test_unreadable_config_files(tmp_path: Path):
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    assert f"cannot read config file '{folder}'" in config_error(folder)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe seed = 1")
    assert f"config file '{binary}' is not UTF-8" in config_error(binary)


def test_unquoted_toml_date_is_a_run_date(tmp_path: Path):
    path = write_config(tmp_path, "[output]\nrun_date = 2024-01-02\n")
    assert load_config(path).output.run_date == "2024-01-02"


# --------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------

def test_overrides_take_effect_and_are_typed():
    base = load_config(DEFAULT_TOML)
    cfg = load_config(DEFAULT_TOML, ["channels.itemcf.top_k=7", "output.root=elsewhere", "seed=3"])
    assert cfg.channels["itemcf"].top_k == 7 and type(cfg.channels["itemcf"].top_k) is int
    assert cfg.output.root == Path("elsewhere") and isinstance(cfg.output.root, Path)
    assert cfg.seed == 3 and type(cfg.seed) is int
    # Everything else is as in the file.
    assert cfg.channels["itemcf"].model_dump(exclude={"top_k"}) == base.channels["itemcf"].model_dump(exclude={"top_k"})
    assert cfg.model_dump(exclude={"seed", "output", "channels"}) == base.model_dump(exclude={"seed", "output", "channels"})


@pytest.mark.parametrize("override, get, expected", [
    ("triggers.half_life_days=3", lambda c: c.triggers.half_life_days, 3.0),
    ("eval.ks=[5, 10]", lambda c: c.eval.ks, [5, 10]),
    ("data.dir=data/x y", lambda c: c.data.dir, Path("data/x y")),  # bare words are strings
    ('output.run_date="2024-01-02"', lambda c: c.output.run_date, "2024-01-02"),
    ("output.run_date=2024-01-02", lambda c: c.output.run_date, "2024-01-02"),  # a TOML date
    ("channels.itemcf.enabled=false", lambda c: "itemcf" in c.enabled_channels(), False),
    ("channels.itemcf.window_days=3.5", lambda c: c.channels["itemcf"].window_days, 3.5),
    (" seed = 5 ", lambda c: c.seed, 5),
])
def test_override_values_are_toml(override: str, get, expected):
    assert get(load_config(DEFAULT_TOML, [override])) == expected


def test_override_creates_sections_on_defaults():
    cfg = load_config(None, ["channels.itemcf.top_k=7"])
    assert cfg.enabled_channels() == ["itemcf"] and cfg.channels["itemcf"].top_k == 7


def test_later_override_wins():
    assert load_config(None, ["seed=1", "seed=2"]).seed == 2


@pytest.mark.parametrize("override, fragments", [
    ("seed", ["override 'seed' must look like section.key=value"]),
    ("=3", ["override '=3' has an empty key"]),
    ("channels.itemcf..top_k=3", ["has an empty key"]),
    ("seed.x=3", ["override 'seed.x=3': 'seed' is not a section"]),
    ("channels.itemcf.top_k=abc", ["channels.itemcf.top_k:", "valid integer"]),
    ("channels.itemcf.topk=3", ["channels.itemcf.topk:", "Extra inputs"]),
    ("seed=3.5", ["seed:", "fractional part"]),
    ("channels.nosuch.top_k=3", ["channels.nosuch:", "unknown channel"]),
])
def test_malformed_override_raises_recall_error(override: str, fragments: list[str]):
    message = config_error(DEFAULT_TOML, [override])
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_parse_override():
    assert parse_override("a.b.c=1") == (["a", "b", "c"], 1)
    assert parse_override("a=x=y") == (["a"], "x=y")  # only the first '=' splits
    assert parse_override("a='quoted'") == (["a"], "quoted")


# --------------------------------------------------------------------------------------
# quota vs share
# --------------------------------------------------------------------------------------

def test_quota_and_share_together_is_an_error(tmp_path: Path):
    path = write_config(tmp_path, "[channels.itemcf]\nquota = 10\nshare = 0.5\n")
    message = config_error(path)
    assert "channels.itemcf: give either quota (a count) or share (a fraction), not both" in message


def test_quota_override_on_top_of_a_share_is_an_error(tmp_path: Path):
    # A TOML override cannot unset a key, so a channel whose file sets share (as
    # default.toml does for itemcf) cannot be switched to a quota with --set alone.
    path = write_config(tmp_path, "[channels.itemcf]\nshare = 1.0\n")
    assert "not both" in config_error(path, ["channels.itemcf.quota=5"])


@pytest.mark.parametrize("section, budget, expected", [
    ("share = 0.5", 50, 25),
    ("share = 1.0", 50, 50),
    ("share = 0.001", 50, 1),  # a share never rounds to zero slots
    ("quota = 7", 50, 7),
    ("quota = 0", 50, 0),
    ("", 30, 30),  # neither: the whole budget
])
def test_share_resolves_against_candidates_per_user(section: str, budget: int, expected: int, tmp_path: Path):
    path = write_config(tmp_path, f"candidates_per_user = {budget}\n[channels.itemcf]\n{section}\n")
    cfg = load_config(path)
    assert cfg.quotas() == {"itemcf": expected}
    # The budget can be overridden and the share follows it.
    if section.startswith("share"):
        share = cfg.channels["itemcf"].share
        assert load_config(path, ["candidates_per_user=400"]).quotas() == {"itemcf": max(1, round(share * 400))}


def test_disabled_channel_has_no_quota(tmp_path: Path):
    path = write_config(tmp_path, "[channels.itemcf]\nenabled = false\nquota = 5\n")
    assert load_config(path).quotas() == {}


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------

def test_cli_run_with_bad_config_exits_1_with_field_path(tmp_path: Path):
    path = write_config(tmp_path, "[channels.itemcf]\ntop_k = 0\n", "BAD.toml")
    result = runner.invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert type(result.exception) is SystemExit, repr(result.exception)
    assert result.stderr.startswith("error: invalid configuration in ")
    assert "channels.itemcf.top_k" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("args, fragment", [
    (["run", "--set", "channels.itemcf.top_k=0"], "channels.itemcf.top_k"),
    (["run", "--set", "seed"], "must look like section.key=value"),
    (["run", "--config", "missing.toml"], "does not exist"),
    (["build", "itemcf", "--set", "candidates_per_user=-1"], "candidates_per_user"),
])
def test_cli_config_errors(args: list[str], fragment: str, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/default.toml here: the defaults are used
    result = runner.invoke(app, args)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert type(result.exception) is SystemExit, repr(result.exception)
    assert result.stderr.startswith("error: ") and fragment in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_subprocess_bad_config_has_no_traceback(tmp_path: Path):
    path = write_config(tmp_path, "[channels.itemcf]\ntopk = 5\n", "BAD.toml")
    proc = subprocess.run([str(RECALL_EXE), "run", "--config", str(path)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: invalid configuration in ")
    assert "channels.itemcf.topk: Extra inputs are not permitted" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_the_documented_spark_section_is_accepted_and_used():
    from recall.spark.engine import settings_of

    cfg = Config.model_validate({"spark": {"single_file": True, "master": "local[2]", "driver_memory": "2g"}})
    settings = settings_of(cfg, conf={"spark.ui.enabled": "false"})
    assert settings.single_file and settings.master == "local[2]" and settings.driver_memory == "2g"
    assert settings.conf == {"spark.ui.enabled": "false"}
    with pytest.raises(Exception, match="spark"):
        Config.model_validate({"spark": {"no_such_key": 1}})


def test_sections_sit_at_the_bottom_every_section_model_in_them():
    """sections.py imports nothing of recall but schema and errors (anywhere in the file); the section
    models of filters, analysis (tune, segments, ALS) and the Spark settings are defined in it, and
    recall.config re-exports them next to Config."""
    import ast
    from pathlib import Path

    import recall.config as config
    import recall.sections as sections

    tree = ast.parse(Path(sections.__file__).read_text())
    found = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("recall")}
    found |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if a.name.startswith("recall")}
    assert found <= {"recall", "recall.errors"}
    for name in ("FiltersConfig", "PurchaseFilterConfig", "TuneConfig", "SegmentsConfig", "ALSConfig",
                 "SparkSettings", "MergeConfig", "EvalConfig", "TriggerConfig"):
        assert getattr(sections, name).__module__ == "recall.sections", name
        assert getattr(config, name) is getattr(sections, name), name
