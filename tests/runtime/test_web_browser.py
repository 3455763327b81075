"""A real browser on the page of a running ``edge-mtl run --serve``: the video tile shows
frames and the live figures change between two captures.

``EDGE_MTL_SCREENSHOT=docs/web.png`` keeps the second capture there. Runs through the playwright
package (in the dev extra) where a Chromium starts: Playwright's own (``playwright install
chromium``) or the system's (``apt install chromium``; ``chromium``, ``chromium-browser`` or
``google-chrome`` on PATH). Skipped otherwise, with the install command."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from edge_mtl.bench.camera import LoopbackCamera

INSTALL = ("no headless Chromium here: pip install playwright && playwright install chromium "
           "(or apt install chromium)")  # fmt: skip
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


# Chromium on a closed network: no background fetches (they stall its start), no sandbox as root
CHROMIUM_ARGS = ["--disable-gpu", "--no-sandbox", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def system_chromium() -> str | None:
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


def playwright_launch() -> dict | None:
    """Launch options under which Playwright starts Chromium here (its own download, else the
    system's Chromium), or None."""
    if importlib.util.find_spec("playwright") is None:
        return None
    from playwright.sync_api import sync_playwright

    system = system_chromium()
    candidates = [{}] + ([{"executable_path": system, "args": CHROMIUM_ARGS}] if system else [])
    with sync_playwright() as p:
        for options in candidates:
            try:
                p.chromium.launch(**options).close()
                return options
            except Exception:  # that browser is not there or does not start
                continue
    return None


@pytest.fixture
def browser() -> dict:
    """Playwright's launch options for a Chromium that starts here; skips without one (a bare
    ``chromium --headless --screenshot`` cannot wait for an endless MJPEG stream: its virtual
    time stands still while a request is open)."""
    options = playwright_launch()
    if options is None:
        pytest.skip(INSTALL)
    return options


@pytest.fixture
def served(models, kit, tmp_path: Path):
    """A running ``edge-mtl run --serve`` on a looped clip: yields the page's URL."""
    video = kit.write_video(tmp_path / "drive.mp4", kit.make_frames(60, 96, 160))
    with LoopbackCamera(str(video), fps=15) as camera:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_mtl.cli", "run", "--model", str(models["dense"]),
             "--provider", "cpu", "--source", f"drive={camera.url}", "--no-save",
             "--serve", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            while "live view on " not in (line := proc.stdout.readline()):
                assert line, "edge-mtl run ended before serving"
            url = line.split("live view on ", 1)[1].split()[0]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with urllib.request.urlopen(url + "api/status", timeout=5) as r:
                    streams = json.load(r)["streams"]  # empty until the stream's sink exists
                if streams and streams[0]["frames"] > 0:
                    break
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_page_shows_the_video_and_changing_figures(browser, served, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(**browser)
        # the page's CSP forbids eval; Playwright's wait_for_function needs it
        page = chromium.new_page(viewport={"width": 1280, "height": 720}, bypass_csp=True)
        page.goto(served)
        page.wait_for_selector("section.tile .record table", timeout=20_000)
        page.wait_for_function(
            "document.querySelector('section.tile img').naturalWidth > 0", timeout=20_000
        )
        first = page.inner_text("section.tile .figs")
        page.screenshot(path=str(tmp_path / "first.png"))
        time.sleep(1.5)
        second = page.inner_text("section.tile .figs")
        page.screenshot(path=str(tmp_path / "second.png"))
        chromium.close()
    assert "drive" in first and "FPS" in first and "weather" in first
    assert first != second  # the frame number, age and answers moved on
    assert (tmp_path / "first.png").read_bytes() != (tmp_path / "second.png").read_bytes()
    if keep := os.environ.get("EDGE_MTL_SCREENSHOT"):  # e.g. docs/web.png for the README
        shutil.copyfile(tmp_path / "second.png", keep)
