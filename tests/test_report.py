"""The HTML report: parsed back with the standard library and checked against metrics.json."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

import numpy as np
import polars as pl
import pytest

from recall.config import Config
from recall.evaluation import evaluate
from recall.io import Dataset
from recall.report import analysis_k, fmt, write_report
from tests.chromium import find_chromium, screenshot
from tests.conftest import random_log

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTIONS = {"headline-section", "curves", "quota-section", "overlap-section", "segments-section"}
TABLES = {"headline", "metrics-all", "metrics-warm", "quotas", "overlap", "unique-hits", "marginal-gain",
          "segments-users", "segments-items"}


class Page(HTMLParser):
    """Sections, tables (cells with their data-* attributes and text), images and external references."""

    def __init__(self):
        super().__init__()
        self.sections, self.images, self.external = set(), {}, []
        self.tables: dict[str, list[dict]] = {}
        self._table = self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs and not attrs[key].startswith(("data:", "#")):
                self.external.append(attrs[key])
        if tag == "section":
            self.sections.add(attrs.get("id"))
        elif tag == "table":
            self._table = attrs.get("id")
            self.tables[self._table] = []
        elif tag == "td" and self._table is not None:
            self._cell = {k[5:]: v for k, v in attrs.items() if k.startswith("data-")} | {"text": ""}
        elif tag == "img":
            self.images[attrs.get("id")] = attrs.get("src", "")
        elif tag in ("script", "link", "iframe"):
            self.external.append(tag)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.tables[self._table].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._table = None


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    rng = np.random.default_rng(3)
    events = random_log(5, n_events=1500, n_users=40, n_items=30, days=10)
    users = pl.DataFrame({"user_id": np.arange(45), "gender": rng.choice(["F", "M"], 45)})
    items = pl.DataFrame({"item_id": np.arange(30) * 10, "category_id": rng.integers(0, 3, 30)})
    cfg = Config.model_validate({
        "candidates_per_user": 8,
        "channels": {"itemcf": {"quota": 4}, "usercf": {"quota": 3}, "retarget": {"quota": 1, "strict": True},
                     "crowd": {"quota": 1, "min_support": 1, "min_users": 1, "attributes": ["gender"]}},
        "filters": {"reserve": 2}, "eval": {"test_days": 2.0, "ks": [2, 5, 8]}})
    report = evaluate(cfg, Dataset(events, items, users))
    out = tmp_path_factory.mktemp("report")
    paths = write_report(report, out)
    page = Page()
    page.feed(paths["html"].read_text())
    return report, paths, page


def values(page: Page, table: str) -> list[dict]:
    """The cells of a table that hold a number (they carry data-* attributes saying which)."""
    return [cell for cell in page.tables[table] if len(cell) > 1]


def number(text: str) -> float:
    return float(text.replace(",", ""))


def test_files_and_metrics_json(written):
    report, paths, _ = written
    assert {p.name for p in paths["html"].parent.iterdir()} >= {
        "report.html", "metrics.json", "recall_curves.png", "overlap.png", "quotas.png", "segments.png"}
    assert json.loads(paths["metrics"].read_text()) == json.loads(json.dumps(report))


def test_page_has_every_section_and_table_and_nothing_external(written):
    _, _, page = written
    assert SECTIONS <= page.sections
    assert TABLES <= set(page.tables)
    assert all(page.tables[t] for t in TABLES)
    assert page.external == []


def test_images_are_embedded_pngs_equal_to_the_files(written):
    _, paths, page = written
    assert set(page.images) == {"img-recall_curves", "img-overlap", "img-quotas", "img-segments"}
    for image_id, src in page.images.items():
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        png = base64.b64decode(src[len(prefix):], validate=True)
        assert png.startswith(PNG_SIGNATURE)
        assert png == paths[image_id.removeprefix("img-")].read_bytes()


def test_metric_tables_show_the_numbers_of_metrics_json(written):
    _, paths, page = written
    saved = json.loads(paths["metrics"].read_text())
    for segment in ("all", "warm"):
        rows = {(r["name"], r["k"]): r for r in saved["results"] if r["segment"] == segment}
        cells = values(page, f"metrics-{segment}")
        names = {c["name"] for c in cells}
        assert names == {name for name, _ in rows}
        for cell in cells:
            expected = rows[(cell["name"], int(cell["k"]))][cell["metric"]]
            assert cell["text"] == fmt(expected)
            assert number(cell["text"]) == pytest.approx(expected, abs=5e-5)


def test_analysis_tables_show_the_numbers_of_metrics_json(written):
    _, paths, page = written
    saved = json.loads(paths["metrics"].read_text())
    k = analysis_k(saved)
    names = saved["analysis"]["channels"]
    overlap = saved["analysis"]["overlap"][str(k)]
    cells = values(page, "overlap")
    assert len(cells) == len(names) ** 2
    for cell in cells:
        assert number(cell["text"]) == pytest.approx(overlap[names.index(cell["row"])][names.index(cell["column"])],
                                                     abs=5e-5)
    quota_columns = {"configured": saved["quotas"]["configured"], "equal": saved["quotas"]["equal"]}
    for cell in values(page, "quotas"):
        if cell["column"] in quota_columns:
            assert int(number(cell["text"])) == quota_columns[cell["column"]][cell["name"]]
        elif cell["column"] == "unique_hits":
            assert int(number(cell["text"])) == saved["analysis"]["unique_hits"][str(k)][cell["name"]]["unique_hits"]
        elif cell["column"] == "marginal_gain":
            assert number(cell["text"]) == pytest.approx(
                saved["analysis"]["marginal_gain"][cell["name"]][str(k)]["recall"], abs=5e-5)
    for cell in values(page, "marginal-gain"):
        assert number(cell["text"]) == pytest.approx(
            saved["analysis"]["marginal_gain"][cell["name"]][cell["k"]]["recall"], abs=5e-5)


def test_segment_tables_show_the_numbers_of_metrics_json(written):
    _, paths, page = written
    saved = json.loads(paths["metrics"].read_text())
    rows = {(r["name"], r["segment"], r["k"]): r["recall"] for r in saved["segment_results"]}
    seen = set()
    for table in ("segments-users", "segments-items"):
        for cell in values(page, table):
            seen.add(cell["segment"])
            expected = rows.get((cell["name"], cell["segment"], int(cell["k"])), 0.0)
            assert number(cell["text"]) == pytest.approx(expected, abs=5e-5)
    assert seen == {s for s, n in saved["segment_users"].items() if n and s not in ("all", "warm")}


def test_headline_compares_merged_best_channel_and_als(written):
    report, _, page = written
    rows = {(r["name"], r["k"]): r["recall"] for r in report["results"] if r["segment"] == "all"}
    cells = values(page, "headline")
    for k in report["ks"]:
        best = max((v, n) for (n, kk), v in rows.items() if kk == k and n in report["channels"])
        for name in ("merged", "merged_equal", "implicit_als", best[1]):
            hit = [c for c in cells if c.get("name") == name and c.get("k") == str(k)]
            assert hit and number(hit[0]["text"]) == pytest.approx(rows[(name, k)], abs=5e-5)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(written, tmp_path):
    if find_chromium() is None:
        pytest.skip("Chromium is not installed (Debian: apt-get update && apt-get install -y chromium)")
    _, paths, _ = written
    shot = screenshot(paths["html"], tmp_path / "shot.png", width=1200, height=1800)
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1200, 1800)
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    # A rendered page, not a blank one: dark text and plot lines on a light background.
    assert pixels.mean() > 200 and (pixels < 100).mean() > 0.005


def test_a_report_without_channels_still_renders(tmp_path):
    events = random_log(5, n_events=800, n_users=30, n_items=20, days=10)
    cfg = Config.model_validate({"candidates_per_user": 5, "eval": {"test_days": 2.0, "ks": [2, 5]}})
    paths = write_report(evaluate(cfg, Dataset(events)), tmp_path)
    page = Page()
    page.feed(paths["html"].read_text())
    assert SECTIONS <= page.sections and values(page, "metrics-all")
