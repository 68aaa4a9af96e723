"""The full pipeline (`recall run`, every default channel + merge + filters + publish) at 1M, 5M, 20M events.

Each size is a synthetic log made by `recall data synth` (cached under bench/out/).
Each run is a fresh `recall run` process; its manifest gives every stage's wall time
and peak resident memory (recall/meter.py), and `wait4` gives the process's exact
peak RSS. Shards are chosen so a shard holds at most `--users-per-shard` users.

`--users-growth` runs the second experiment of issue 6: the same events, the same
catalogue, 10x the users (each user of the 1M log split into 10 users by event
order, demographics copied), unsharded and with a fixed shard size; the per-user
stages' peak memory is what must stay bounded.

    python bench/bench_pipeline.py --sizes 1M,5M,20M --users-growth
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
RECALL = Path(sys.executable).with_name("recall")
# events ~ 94-98 per user over 14 days with these shapes (see recall/synth.py)
SIZES = {"1M": (10_000, 5_000), "5M": (50_000, 20_000), "20M": (200_000, 50_000)}
DAYS, SEED = 14, 0
PER_USER_STAGES = ("recommend", "merge and filter", "write candidates")


def synth_dir(users: int, items: int) -> Path:
    path = OUT / f"synth-u{users}-i{items}-d{DAYS}-s{SEED}"
    if not (path / "events.parquet").exists():
        subprocess.run([str(RECALL), "--quiet", "data", "synth", "--out", str(path), "--users", str(users),
                        "--items", str(items), "--days", str(DAYS), "--seed", str(SEED)], check=True)
    return path


def users_10x(source: Path) -> Path:
    """The same events and items with each user split into 10 users (by event order)."""
    import polars as pl

    path = OUT / f"{source.name}-users10x"
    if (path / "events.parquet").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    events = pl.read_parquet(source / "events.parquet")
    part = (pl.int_range(pl.len()).over("user_id") % 10).cast(pl.Int64)
    events = events.sort("user_id", "ts").with_columns((pl.col("user_id") * 10 + part).alias("user_id"))
    events.write_parquet(path / "events.parquet")
    shutil.copy(source / "items.parquet", path / "items.parquet")
    users = pl.read_parquet(source / "users.parquet")
    users = (users.join(pl.DataFrame({"part": list(range(10))}, schema={"part": pl.Int64}), how="cross")
             .with_columns((pl.col("user_id") * 10 + pl.col("part")).alias("user_id")).drop("part"))
    users.write_parquet(path / "users.parquet")
    return path


def run_pipeline(data: Path, out: Path, shards: int, extra: list[str]) -> dict:
    """One `recall run` process: wall time, exact peak RSS, and the manifest's stages."""
    shutil.rmtree(out, ignore_errors=True)
    argv = [str(RECALL), "--quiet", "run", "-c", str(REPO / "configs" / "default.toml"), "--data", str(data),
            "--out", str(out), "--set", f"run.shards={shards}"]
    for item in extra:
        argv += ["--set", item]
    started = time.perf_counter()
    proc = subprocess.Popen(argv)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"recall run failed on {data} (exit {os.waitstatus_to_exitcode(status)})")
    manifest = json.loads((out / "latest" / "manifest.json").read_text())
    per_user = [row for name, row in manifest["stages"].items() if name.startswith(PER_USER_STAGES)]
    # Memory the per-user stages add on top of the loaded log and the fitted models.
    before = min(row["start_rss_mib"] for row in per_user)
    per_user_growth = max(row["peak_rss_mib"] for row in per_user) - before
    return {"data": str(data), "shards": shards, "seconds": round(seconds, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "per_user_peak_rss_mib": max(row["peak_rss_mib"] for row in per_user),
            "rss_before_per_user_mib": before, "per_user_added_mib": round(per_user_growth, 1),
            "stages": manifest["stages"], "tables": manifest["tables"],
            "events": events_count(data)}


def events_count(data: Path) -> int:
    import polars as pl

    return pl.scan_parquet(data / "events.parquet").select(pl.len()).collect().item()


def stage_table(results: dict[str, dict]) -> str:
    """Markdown: one row per stage (channels' fit and recommend folded per channel), one column per size."""
    names = list(dict.fromkeys(name for r in results.values() for name in r["stages"]))
    head = "| stage | " + " | ".join(f"{k}: s / peak MiB" for k in results) + " |"
    lines = [head, "|---|" + "---:|" * len(results)]
    for name in names:
        cells = []
        for r in results.values():
            row = r["stages"].get(name)
            cpu = "" if row is None or "cpu_seconds" not in row else f" (CPU {row['cpu_seconds']:.1f})"
            cells.append("-" if row is None else f"{row['seconds']:.1f}{cpu} / {row['peak_rss_mib']:,.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| **whole run (process)** | " + " | ".join(
        f"**{r['seconds']:.0f} / {r['peak_rss_mib']:,.0f}**" for r in results.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1M,5M,20M", help="comma list of 1M, 5M, 20M")
    parser.add_argument("--users-per-shard", type=int, default=25_000)
    parser.add_argument("--users-growth", action="store_true", help="also run the 10x-users experiment")
    parser.add_argument("--set", action="append", default=[], help="config overrides for every run")
    parser.add_argument("--json", type=Path, default=OUT / "pipeline.json", help="where the results go")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; recall: {RECALL}", file=sys.stderr)
    results = {}
    for size in [s for s in args.sizes.split(",") if s]:
        users, items = SIZES[size]
        data = synth_dir(users, items)
        shards = max(1, math.ceil(users / args.users_per_shard))
        print(f"{size}: {data.name}, {shards} shard(s) ...", file=sys.stderr)
        results[size] = run_pipeline(data, OUT / f"pipeline-{size}", shards, args.set)
        print(f"{size}: {results[size]['seconds']} s, peak {results[size]['peak_rss_mib']} MiB", file=sys.stderr)
    growth = {}
    if args.users_growth:
        base = synth_dir(*SIZES["1M"])
        grown = users_10x(base)
        counting = ["channels.item2vec.enabled=false", "channels.deepwalk.enabled=false",
                    "channels.node2vec.enabled=false", "channels.eges.enabled=false", "channels.ges.enabled=false"]
        for label, data, shards in (("10k users", base, 1), ("100k users, unsharded", grown, 1),
                                    ("100k users, 10 shards of 10k", grown, 10)):
            print(f"users growth: {label} ...", file=sys.stderr)
            growth[label] = run_pipeline(data, OUT / "pipeline-growth", shards, [*counting, *args.set])
    args.json.write_text(json.dumps({"sizes": results, "users_growth": growth}, indent=2))
    print(f"## cores: {os.cpu_count()}; overrides: {' '.join(args.set) or 'none'}\n")
    if results:
        print("| size | events | users | shards | wall s | peak RSS MiB |\n|---|---:|---:|---:|---:|---:|")
        for size, r in results.items():
            print(f"| {size} | {r['events']:,} | {SIZES[size][0]:,} | {r['shards']} | {r['seconds']:.0f} | "
                  f"{r['peak_rss_mib']:,.0f} |")
        print()
        print(stage_table(results))
    if growth:
        print("\n| users growth (same 1M events, counting channels) | wall s | peak RSS MiB | RSS after fitting MiB "
              "| added by per-user stages MiB |")
        print("|---|---:|---:|---:|---:|")
        for label, r in growth.items():
            print(f"| {label} | {r['seconds']:.0f} | {r['peak_rss_mib']:,.0f} | {r['rss_before_per_user_mib']:,.0f} "
                  f"| {r['per_user_added_mib']:,.0f} |")


if __name__ == "__main__":
    main()
