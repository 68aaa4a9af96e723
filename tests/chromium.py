"""Helpers the tests own (not shipped in the library): rendering the HTML report in headless Chromium."""

from __future__ import annotations

from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    """Path of a Chromium-family browser on PATH, or None."""
    import shutil

    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def screenshot(html_path: str | Path, png_path: str | Path, width: int = 1280, height: int = 2400,
               timeout: float = 120.0) -> Path:
    """Render a report page in headless Chromium to a PNG (offline: no network, a throwaway profile)."""
    import subprocess
    import tempfile

    browser = find_chromium()
    if browser is None:
        raise RuntimeError("no Chromium found on PATH; install it (Debian: apt-get install chromium) "
                          "or open report.html in any browser")
    png_path = Path(png_path).resolve()
    with tempfile.TemporaryDirectory(prefix="recall-chromium-") as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                   f"--user-data-dir={profile}", f"--window-size={width},{height}",
                   f"--screenshot={png_path}", Path(html_path).resolve().as_uri()]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0 or not png_path.exists():
        raise RuntimeError(f"Chromium could not render {html_path} (exit {done.returncode}): "
                          f"{done.stderr.strip()[-500:]}")
    return png_path
