"""The evaluation report: ``report.html`` (self-contained), ``metrics.json`` and the PNG plots.

:func:`write_report` takes the dict of :func:`recall.evaluation.evaluate` and writes,
into one folder:

- ``metrics.json``: that dict, as is;
- ``recall_curves.png``: Recall@K for K = 1..max K, per channel, the merges and the baselines;
- ``overlap.png``: the channels' pairwise overlap (Jaccard of top-K sets) as a heat map;
- ``quotas.png``: the quota allocation (configured vs equal) and the slots each channel's
  items really took in the merged lists (back-fill moves slots to channels that have items);
- ``segments.png``: Recall@K by user segment (cold, light, heavy) and by target novelty;
- ``report.html``: all of it with the tables, the PNGs embedded as base64 data URIs,
  so the one file opens offline and can be mailed around.

Plots use matplotlib's Agg backend (no display needed), imported only here.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from recall.analysis import ITEM_SEGMENTS, USER_SEGMENTS

IMAGES = ("recall_curves", "overlap", "quotas", "segments")
MERGES = ("merged", "merged_equal", "merged_unfiltered")
KIND_ORDER = {"merged": 0, "channel": 1, "baseline": 2}
CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em;
       margin-top: 1.8em; }
p.note { color: #555; font-size: 0.92em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.82em; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; } td.name, th.name { text-align: left; }
tr.merged td { font-weight: 600; } tr.baseline td { color: #555; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 1.2em; font-size: 0.92em; }
dl.facts dt { color: #555; } dl.facts dd { margin: 0; }
"""


def fmt(value: float | int | None, digits: int = 4) -> str:
    """How numbers appear in the report's tables (the tests parse them back)."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def analysis_k(report: dict) -> int:
    """The K the single-K views use: the budget if it is one of the evaluated K, else the largest K."""
    ks = report["ks"]
    return report["budget"] if report.get("budget") in ks else max(ks)


def result_table(report: dict, segment: str = "all", rows_key: str = "results") -> dict:
    """``{name: {"kind": kind, k: {metric: value}}}`` for one segment."""
    table: dict = {}
    for row in report[rows_key]:
        if row["segment"] != segment:
            continue
        entry = table.setdefault(row["name"], {"kind": row["kind"]})
        entry[row["k"]] = row
    return table


def ordered_names(table: dict) -> list[str]:
    """Merges first, then channels, then baselines, each in report order."""
    return sorted(table, key=lambda n: KIND_ORDER.get(table[n]["kind"], 3))


def best_channel(report: dict, k: int, metric: str = "recall") -> tuple[str, float] | None:
    """The single channel with the best metric@K on all test users."""
    table = result_table(report)
    scores = [(table[n][k][metric], n) for n in table if table[n]["kind"] == "channel" and k in table[n]]
    if not scores:
        return None
    value, name = max(scores)
    return name, value


# --- plots ------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_recall_curves(report: dict, path: Path) -> Path:
    plt = _pyplot()
    table = result_table(report)
    fig, ax = plt.subplots(figsize=(9, 5.2), dpi=110)
    ks = report["ks"]
    names = [n for n in ordered_names(table) if n in report["curves"] and n != "merged_unfiltered"]
    others = [n for n in names if table[n]["kind"] != "merged"]
    # Merges in black and grey; channels and baselines each get their own colour (tab20 past ten lines).
    palette = plt.get_cmap("tab10" if len(others) <= 9 else "tab20")
    greys = {7} if palette.N == 10 else {14, 15}  # grey is taken by the equal-quota merge
    hues = [palette(i) for i in range(palette.N) if i not in greys]
    colours = {n: hues[i % len(hues)] for i, n in enumerate(others)}
    colours.update(merged="#111111", merged_equal="#888888")
    for name in names:
        curve = report["curves"][name]
        kind = table[name]["kind"]
        style = {"merged": dict(lw=2.6, ls="-"), "channel": dict(lw=1.3, ls="-"),
                 "baseline": dict(lw=1.6, ls=":")}[kind]
        if name == "merged_equal":
            style = dict(lw=1.8, ls="--")
        x = list(range(1, len(curve) + 1))
        line, = ax.plot(x, curve, label=name, color=colours.get(name, "#444444"), **style)
        ax.plot([k for k in ks if k <= len(curve)], [curve[k - 1] for k in ks if k <= len(curve)], "o",
                color=line.get_color(), ms=3.5)
    for k in ks:
        ax.axvline(k, color="#ddd", lw=0.8, zorder=0)
    ax.set_xlabel("K (candidates per user)")
    ax.set_ylabel("Recall@K")
    ax.set_title("Recall@K on the test window, all test users")
    ax.set_xlim(0, max(ks))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, ncol=2, frameon=False)
    return _save(fig, path)


def plot_overlap(report: dict, path: Path) -> Path:
    plt = _pyplot()
    k = analysis_k(report)
    names = report["analysis"]["channels"]
    matrix = report["analysis"]["overlap"].get(str(k), [])
    size = max(3.5, 0.6 * len(names) + 1.8)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
    if names:
        image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
        ax.set_yticks(range(len(names)), names)
        for i in range(len(names)):
            for j in range(len(names)):
                value = matrix[i][j]
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if value > 0.6 else "#222")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="mean Jaccard")
    ax.set_title(f"Channel overlap of top-{k} sets")
    return _save(fig, path)


def plot_quotas(report: dict, path: Path) -> Path:
    plt = _pyplot()
    import numpy as np

    names = report["channels"]
    series = [("configured quota", report["quotas"]["configured"]), ("equal quota", report["quotas"]["equal"]),
              ("slots taken (merged)", report["slots"].get("merged", {}))]
    fig, ax = plt.subplots(figsize=(9, 0.55 * max(len(names), 2) + 1.6), dpi=110)
    y = np.arange(len(names))
    height = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        ax.barh(y + (i - 1) * height, [values.get(n, 0) for n in names], height=height, label=label)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel(f"slots per user (budget {report['budget']})")
    ax.set_title("Quota allocation and the slots each channel's items took")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_segments(report: dict, path: Path) -> Path:
    plt = _pyplot()
    import numpy as np

    k = analysis_k(report)
    segments = [s for s in (*USER_SEGMENTS, *ITEM_SEGMENTS) if report["segment_users"].get(s)]
    best = best_channel(report, k)
    names = [n for n in ("merged", "merged_equal", best[0] if best else None, "popularity", "implicit_als")
             if n is not None]
    values = {n: [_segment_value(report, n, s, k) for s in segments] for n in names}
    fig, ax = plt.subplots(figsize=(9, 4.4), dpi=110)
    x = np.arange(len(segments))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        label = f"{name} (best channel)" if best and name == best[0] else name
        ax.bar(x + (i - (len(names) - 1) / 2) * width, values[name], width=width, label=label)
    ax.set_xticks(x, [f"{s}\n({report['segment_users'][s]} users)" for s in segments], fontsize=8)
    ax.set_ylabel(f"Recall@{k}")
    ax.set_title(f"Recall@{k} by user segment and by target novelty", pad=26)
    ax.legend(fontsize=8, frameon=False, ncol=len(names), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _segment_value(report: dict, name: str, segment: str, k: int, metric: str = "recall") -> float:
    for row in report["segment_results"]:
        if row["name"] == name and row["segment"] == segment and row["k"] == k:
            return row[metric]
    return 0.0


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    fig.clf()
    _pyplot().close(fig)
    return path


# --- HTML -------------------------------------------------------------------------------------------

def _e(text) -> str:
    return html.escape(str(text))


def _cell(value, **data) -> str:
    attrs = "".join(f' data-{key}="{_e(v)}"' for key, v in data.items())
    return f"<td{attrs}>{fmt(value)}</td>"


def _image(name: str, png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img id="img-{name}" alt="{_e(alt)}" src="data:image/png;base64,{encoded}">'


def metrics_table(report: dict, segment: str) -> str:
    """Recall and NDCG at every K, HitRate and Coverage at the largest K (all of them are in metrics.json)."""
    ks = report["ks"]
    kmax = max(ks)
    columns = [(metric, k) for metric in ("recall", "ndcg") for k in ks] + [("hit_rate", kmax), ("coverage", kmax)]
    labels = {"recall": "Recall", "ndcg": "NDCG", "hit_rate": "HitRate", "coverage": "Coverage"}
    head = "".join(f"<th>{labels[metric]}@{k}</th>" for metric, k in columns)
    table = result_table(report, segment)
    rows = []
    for name in ordered_names(table):
        entry = table[name]
        cells = "".join(_cell(entry[k][metric], name=name, k=k, metric=metric) for metric, k in columns)
        rows.append(f'<tr class="{_e(entry["kind"])}"><td class="name">{_e(name)}</td>'
                    f'<td class="name">{_e(entry["kind"])}</td>{cells}</tr>')
    return (f'<table id="metrics-{_e(segment)}"><thead><tr><th class="name">name</th><th class="name">kind</th>'
            f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def headline_table(report: dict) -> str:
    """Per K: the merges, the best channel, the best baseline (every baseline is topped up with
    popularity, as served), merged / best baseline and the paired difference with its s.e."""
    table = result_table(report)
    heads = report.get("headline", {}).get("all", {})
    rows = []
    for k in report["ks"]:
        best = best_channel(report, k)
        head = heads.get(str(k))
        cells = [f'<td class="name">{k}</td>']
        for name in ("merged", "merged_equal"):
            cells.append(_cell(table[name][k]["recall"], name=name, k=k, metric="recall") if name in table
                         else "<td>-</td>")
        cells.append(_cell(best[1], name=best[0], k=k, metric="recall") if best else "<td>-</td>")
        cells.append(f'<td class="name">{_e(best[0]) if best else "-"}</td>')
        if head:
            name = head["best_baseline"]
            cells.append(_cell(table[name][k]["recall"], name=name, k=k, metric="recall"))
            cells.append(f'<td class="name">{_e(name)}</td><td>{fmt(head["ratio"])}</td>'
                         f"<td>{fmt(head['delta'])} ± {fmt(head['stderr'])}</td>")
        else:
            cells.append("<td>-</td>" * 4)
        for name in ("popularity", "implicit_als"):
            cells.append(_cell(table[name][k]["recall"], name=name, k=k, metric="recall") if name in table
                         else "<td>-</td>")
        comparison = report["analysis"].get("merged_vs_equal", {}).get(str(k))
        cells.append(f"<td>{fmt(comparison['delta'])} ± {fmt(comparison['stderr'])}</td>" if comparison
                     else "<td>-</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return ('<table id="headline"><thead><tr><th class="name">K</th><th>merged</th><th>merged, equal quotas</th>'
            '<th>best channel</th><th class="name">which</th><th>best baseline</th><th class="name">which</th>'
            "<th>merged / best baseline</th><th>merged − best baseline (± s.e.)</th>"
            "<th>popularity</th><th>ALS</th>"
            "<th>merged − equal (± s.e.)</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def quota_table(report: dict) -> str:
    k = analysis_k(report)
    quotas = report["quotas"]
    unique = report["analysis"]["unique_hits"].get(str(k), {})
    gain = report["analysis"]["marginal_gain"]
    rows = []
    for name in report["channels"]:
        rows.append(
            f'<tr><td class="name">{_e(name)}</td>'
            + _cell(quotas["configured"].get(name), name=name, column="configured")
            + _cell(quotas["equal"].get(name), name=name, column="equal")
            + _cell(report["slots"].get("merged", {}).get(name), name=name, column="slots_merged")
            + _cell(report["slots"].get("merged_equal", {}).get(name), name=name, column="slots_equal")
            + _cell(unique.get(name, {}).get("hits"), name=name, column="hits")
            + _cell(unique.get(name, {}).get("unique_hits"), name=name, column="unique_hits")
            + _cell(gain.get(name, {}).get(str(k), {}).get("recall"), name=name, column="marginal_gain")
            + "</tr>")
    return ('<table id="quotas"><thead><tr><th class="name">channel</th><th>configured quota</th>'
            "<th>equal quota</th><th>slots taken (merged)</th><th>slots taken (equal)</th>"
            f"<th>hits@{k}</th><th>unique hits@{k}</th><th>marginal gain Recall@{k}</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def overlap_table(report: dict) -> str:
    k = analysis_k(report)
    names = report["analysis"]["channels"]
    matrix = report["analysis"]["overlap"].get(str(k), [])
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    rows = "".join(f'<tr><td class="name">{_e(a)}</td>'
                   + "".join(_cell(matrix[i][j], row=a, column=b) for j, b in enumerate(names)) + "</tr>"
                   for i, a in enumerate(names))
    return f'<table id="overlap"><thead><tr><th class="name">top-{k}</th>{head}</tr></thead><tbody>{rows}</tbody></table>'


def per_k_table(report: dict, table_id: str, values) -> str:
    ks = report["ks"]
    head = "".join(f"<th>@{k}</th>" for k in ks)
    rows = "".join(f'<tr><td class="name">{_e(n)}</td>'
                   + "".join(_cell(values(n, k), name=n, k=k) for k in ks) + "</tr>"
                   for n in report["channels"])
    return f'<table id="{table_id}"><thead><tr><th class="name">channel</th>{head}</tr></thead><tbody>{rows}</tbody></table>'


def segment_table(report: dict, table_id: str, segments: tuple[str, ...]) -> str:
    k = analysis_k(report)
    present = [s for s in segments if report["segment_users"].get(s)]
    table = result_table(report)
    head = "".join(f"<th>{_e(s)}<br><small>{report['segment_users'][s]:,} users, "
                   f"{report['segment_targets'][s]:,} targets</small></th>" for s in present)
    rows = []
    for name in ordered_names(table):
        cells = "".join(_cell(_segment_value(report, name, s, k), name=name, segment=s, k=k) for s in present)
        rows.append(f'<tr class="{_e(table[name]["kind"])}"><td class="name">{_e(name)}</td>{cells}</tr>')
    return (f'<table id="{table_id}"><thead><tr><th class="name">Recall@{k}</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def render_html(report: dict, images: dict[str, bytes], title: str = "recall: evaluation report") -> str:
    """The report page; ``images`` maps each name of :data:`IMAGES` to PNG bytes."""
    import datetime as dt

    k = analysis_k(report)
    split = dt.datetime.fromtimestamp(report["split_ts"], tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    facts = {
        "data": report.get("data", "-"),
        "split T": f"{split} (ts {report['split_ts']}); test window {report['test_days']} days",
        "training events": fmt(report["train_events"]),
        "test users": f"{fmt(report['test_users'])} ({fmt(report['test_users_without_history'])} without history)",
        "targets": fmt(report["targets"]),
        "catalogue items": fmt(report["catalogue_items"]),
        "budget": f"{report['budget']} candidates per user",
        "channels": ", ".join(report["channels"]) or "-",
    }
    unique = per_k_table(report, "unique-hits", lambda n, kk: report["analysis"]["unique_hits"]
                         .get(str(kk), {}).get(n, {}).get("unique_hits"))
    gains = per_k_table(report, "marginal-gain", lambda n, kk: report["analysis"]["marginal_gain"]
                        .get(n, {}).get(str(kk), {}).get("recall"))
    body = f"""
<h1>{_e(title)}</h1>
<p class="note">Time-split evaluation: every channel, the merge and the baselines trained on the same events
before T and scored on the same test users and targets. Generated by <code>recall eval --report</code>;
the numbers are in <code>metrics.json</code> beside this file.</p>
<dl class="facts">{''.join(f'<dt>{_e(key)}</dt><dd>{_e(value)}</dd>' for key, value in facts.items())}</dl>

<section id="headline-section"><h2>Merged vs best channel vs baselines</h2>
<p class="note">Recall@K on all test users. <em>merged</em> uses the configured quotas (tuned ones when a
<code>recall tune</code> fragment is layered on the config), <em>merged, equal quotas</em> splits the budget evenly;
the last column is their paired difference with its standard error over users (a gap under about two
standard errors is noise).</p>
{headline_table(report)}</section>

<section id="curves"><h2>Recall@K curves</h2>
{_image("recall_curves", images["recall_curves"], "Recall@K curves per channel, merged and baselines")}
<h3>All test users</h3>{metrics_table(report, "all")}
<h3>Warm test users (with training history)</h3>{metrics_table(report, "warm")}</section>

<section id="quota-section"><h2>Quota allocation</h2>
<p class="note">Configured slots per user, the equal split, and the slots each channel's items actually took in
the merged lists (a channel short of candidates leaves its slots to the others). Unique hits: test targets in a
channel's top {k} that no other channel has in its top {k}. Marginal gain: merged Recall@{k} with all channels
minus without the channel (the other quotas scaled back up to the budget).</p>
{_image("quotas", images["quotas"], "Quota allocation")}
{quota_table(report)}</section>

<section id="overlap-section"><h2>Channel overlap</h2>
<p class="note">Jaccard index of two channels' top-{k} candidate sets, averaged over test users.</p>
{_image("overlap", images["overlap"], "Channel overlap heat map")}
{overlap_table(report)}
<h3>Unique hits by K</h3>{unique}
<h3>Marginal gain (merged Recall) by K</h3>{gains}</section>

<section id="segments-section"><h2>Segments</h2>
<p class="note">Users by training history (cold / light / heavy, thresholds in <code>[eval.segments]</code>) and
targets by novelty: <em>new_items</em> the user had not engaged with before T, <em>repeat_items</em> they had
(only re-recommending channels such as retargeting can hit those; the main tables count new items only when
<code>eval.exclude_seen_targets</code> is on).</p>
{_image("segments", images["segments"], "Recall by segment")}
<h3>Users by history</h3>{segment_table(report, "segments-users", USER_SEGMENTS)}
<h3>Targets by novelty</h3>{segment_table(report, "segments-items", ITEM_SEGMENTS)}</section>
"""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")


def write_report(report: dict, out_dir: str | Path, title: str = "recall: evaluation report") -> dict[str, Path]:
    """Write ``metrics.json``, the PNGs and ``report.html`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out_dir / "metrics.json"}
    paths["metrics"].write_text(json.dumps(report, indent=2))
    plotters = {"recall_curves": plot_recall_curves, "overlap": plot_overlap, "quotas": plot_quotas,
                "segments": plot_segments}
    for name in IMAGES:
        paths[name] = plotters[name](report, out_dir / f"{name}.png")
    images = {name: paths[name].read_bytes() for name in IMAGES}
    paths["html"] = out_dir / "report.html"
    paths["html"].write_text(render_html(report, images, title))
    return paths
