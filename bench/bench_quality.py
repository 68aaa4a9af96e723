"""Recall quality as a new user gets it: `recall init`, then `recall tune`, then `recall eval`, no hand settings.

Per dataset and protocol: the starting config that `recall init` writes for the data
(recall/profile.py), quotas and hot-list settings chosen by `recall tune` on validation
windows before the split, then the evaluation on the test users: every channel, the
merge under the init quotas (``merged_init``), under the tuned quotas for everybody
(``merged_tuned``), with per-segment quotas where tune kept them (``merged``), under equal
quotas, and every baseline (each topped up with popularity, as served).
Nothing after the split reaches a channel or a baseline (recall/split.py).

Datasets: ml-100k and the Taobao 84k log from ../shared/data (imported into
bench/out/, never into the repository; skipped with a note when absent) and the
bundled sample. With ``--write`` the table replaces the quality section of BENCHMARKS.md.

    python bench/bench_quality.py --write
    python bench/bench_quality.py --datasets sample --protocols time --channels fast
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
OUT = HERE / "out"
SHARED = REPO.parent / "shared" / "data"
KS = (50, 100, 200)
FAST = ("itemcf", "usercf", "ranki2i", "association", "crowd", "interest", "retarget", "swing", "ease", "als")
LEARNED = ("youtubednn", "mind")  # off in `recall init` configs (minutes of CPU); "+learned" turns them on
START, END = "<!-- quality:start -->", "<!-- quality:end -->"


def datasets() -> dict[str, tuple[str, Path, dict]]:
    """name -> (importer, source, importer options); the sample needs no import."""
    return {"ml-100k": ("movielens", SHARED / "ml-100k", {}),
            "taobao-84k": ("taobao", SHARED / "taobao-userbehavior-84k", {"on_bad_lines": "skip"}),
            "sample": ("", REPO / "data" / "sample", {})}


def prepared(name: str) -> Path | None:
    from recall.importers import run_importer
    from recall.io import write_dataset

    fmt, source, options = datasets()[name]
    if not fmt:
        return source
    if not source.exists():
        print(f"skip {name}: {source} is absent")
        return None
    target = OUT / "quality" / name
    if not (target / "events.parquet").exists():
        write_dataset(run_importer(fmt, source, **options), target)
    return target


def run_one(name: str, folder: Path, protocol: str, channels: str) -> dict:
    from recall.config import Config
    from recall.evaluation import evaluate, with_quotas
    from recall.io import load_dataset
    from recall.profile import profile, starting_config
    from recall.tuning import tune

    data = load_dataset(folder)
    raw = tomllib.loads(starting_config(profile(data), str(folder)))
    raw["eval"] = {**raw.get("eval", {}), "protocol": protocol, "ks": list(KS)}
    base = channels.removesuffix("+learned")
    if base == "fast":
        for section in set(raw["channels"]) - set(FAST) - set(LEARNED):
            raw["channels"][section]["enabled"] = False
    for section in LEARNED:
        raw["channels"].setdefault(section, {})["enabled"] = channels.endswith("+learned")
    cfg = Config.model_validate(raw)
    started = time.perf_counter()
    tuned = tune(cfg, data)
    tune_seconds = time.perf_counter() - started
    settled = dict(cfg.channels)
    for channel, params in tuned.params.items():
        settled[channel] = settled[channel].model_copy(update=params)
    final = with_quotas(cfg.model_copy(update={"channels": settled}), tuned.quotas)
    used = {s: f["quotas"] for s, f in tuned.segments.items() if not f["kept_prior"]}
    final = final.model_copy(update={"merge": final.merge.model_copy(update={"segment_quotas": used})})
    started = time.perf_counter()
    # merged: tuned quotas (per segment where tune kept them); merged_tuned: one set for everybody.
    report = evaluate(final, data, other_quotas={"merged_init": tuned.configured, "merged_tuned": tuned.quotas})
    return {"dataset": name, "protocol": protocol, "channels": channels, "tune": tuned.to_dict(),
            "tune_seconds": round(tune_seconds, 1), "eval_seconds": round(time.perf_counter() - started, 1),
            "test_users": report["test_users"], "cold_users": report["test_users_without_history"],
            "targets": report["targets"], "warm_users": report["segment_users"].get("warm", 0),
            "segment_users": report["segment_users"],
            "results": [r for r in report["results"] if r["k"] in KS], "headline": report["headline"],
            "segment_results": [r for r in report["segment_results"]
                                if r["k"] == max(KS) and r["segment"] in ("cold", "light", "heavy")],
            "budget_filled": report["budget_filled"]}


def markdown(runs: list[dict]) -> str:
    lines = []
    for run in runs:
        head = run["headline"]
        lines += ["", f"**{run['dataset']}, {run['protocol']} protocol** ({run['channels']} channels; "
                  f"`{run.get('command', 'python bench/bench_quality.py')}`): "
                  f"{run['test_users']} test users ({run['warm_users']} warm, {run['cold_users']} without "
                  f"history), {run['targets']} targets; merged lists hold {run['budget_filled']['mean_length']:.0f} "
                  f"candidates per user on average ({run['budget_filled']['full_share']:.0%} of users get the full "
                  f"budget); tune {run['tune_seconds']} s, eval {run['eval_seconds']} s; "
                  f"tuned quotas {_quotas(run['tune'])}"
                  + (" (gain within noise: init quotas kept)" if run["tune"]["kept_prior"] else "")
                  + f"; hot list {run['tune']['params'].get('crowd', {})}"
                  + "".join(f"; {seg} users' own quotas {_quotas(found)}"
                            + (" (within noise: not used)" if found["kept_prior"] else "")
                            for seg, found in run["tune"]["segments"].items()) + ".", ""]
        for segment in ("all", "warm"):
            h = head.get(segment, {}).get("200")
            if h:
                verdict = "meets" if h["ratio"] >= (1.10 if segment == "all" else 1.0) else "misses"
                lines.append(f"- {segment} users, R@200: merged {h['merged']:.4f} vs best baseline "
                             f"{h['best_baseline']} {h['baseline']:.4f}: ratio {h['ratio']:.3f}, paired difference "
                             f"{h['delta']:+.4f} ± {h['stderr']:.4f} ({verdict} the target "
                             f"{'1.10x' if segment == 'all' else '1.00x'})")
        lines += ["", "| method | kind | R@50 all | R@100 all | R@200 all | R@50 warm | R@100 warm | R@200 warm |",
                  "|---|---|---|---|---|---|---|---|"]
        table: dict[str, dict] = {}
        for r in run["results"]:
            table.setdefault((r["name"], r["kind"]), {})[(r["segment"], r["k"])] = r["recall"]
        order = sorted(table, key=lambda nk: (["merged", "baseline", "channel"].index(nk[1]),
                                              -table[nk].get(("all", 200), 0)))
        for name, kind in order:
            cells = [f"{table[(name, kind)].get((seg, k), float('nan')):.4f}" for seg in ("all", "warm") for k in KS]
            lines.append(f"| {name} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _quotas(result: dict) -> str:
    return ", ".join(f"{n} {q}" for n, q in result["quotas"].items() if q)


def write_section(text: str) -> None:
    path = REPO / "BENCHMARKS.md"
    body = path.read_text()
    section = f"{START}\n{text}\n{END}"
    if START in body:
        body = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: section, body, flags=re.S)
    else:
        body += "\n" + section + "\n"
    path.write_text(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="ml-100k,taobao-84k,sample")
    parser.add_argument("--protocols", default="time,user")
    parser.add_argument("--channels", default="all", choices=["all", "fast", "all+learned", "fast+learned"],
                        help=f"all: every channel recall init enables; fast: {', '.join(FAST)}; +learned: "
                             f"also {', '.join(LEARNED)} (stored in quality-learned.json, never --write)")
    parser.add_argument("--write", action="store_true", help="replace the quality section of BENCHMARKS.md")
    parser.add_argument("--render", action="store_true", help="run nothing: write the stored runs (with --write)")
    args = parser.parse_args()
    runs = []
    for name in [] if args.render else args.datasets.split(","):
        folder = prepared(name)
        if folder is None:
            continue
        for protocol in args.protocols.split(","):
            print(f"{name} / {protocol} ...", flush=True)
            runs.append(run_one(name, folder, protocol, args.channels))
            print(markdown(runs[-1:]), flush=True)
    # Runs accumulate in quality.json by (dataset, protocol): one invocation per dataset is fine.
    OUT.mkdir(parents=True, exist_ok=True)
    store = OUT / ("quality-learned.json" if args.channels.endswith("+learned") else "quality.json")
    stored = {(r["dataset"], r["protocol"]): r for r in (json.loads(store.read_text()) if store.exists() else [])}
    command = "python bench/bench_quality.py " + " ".join(a for a in sys.argv[1:] if a != "--write")
    stored.update({(r["dataset"], r["protocol"]): {**r, "command": command.strip()} for r in runs})
    ordered = [stored[key] for key in sorted(stored, key=lambda k: (list(datasets()).index(k[0])
                                                                      if k[0] in datasets() else 99, k[1]))]
    store.write_text(json.dumps(ordered, indent=1, default=str))
    if args.write and not args.channels.endswith("+learned"):
        write_section(markdown(ordered))


if __name__ == "__main__":
    main()
