"""A real browser on the page of a running ``edge-mtl run --serve``: the video tile shows
frames and the live figures change between two captures.

``EDGE_MTL_SCREENSHOT=docs/web.png`` keeps the second capture there. Runs where headless
Chromium exists: Playwright's (``pip install playwright && playwright
install chromium``) or the system's (``apt install chromium``; ``chromium``,
``chromium-browser`` or ``google-chrome`` on PATH). Skipped otherwise, with that command."""

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


def playwright_chromium() -> bool:
    if importlib.util.find_spec("playwright") is None:
        return False
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as p:
            p.chromium.launch().close()
        return True
    except Exception:  # installed without its browser
        return False


def system_chromium() -> str | None:
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


@pytest.fixture
def browser() -> str:
    """``"playwright"`` or the path of the system's Chromium; skips without either."""
    if playwright_chromium():
        return "playwright"
    chromium = system_chromium()
    if chromium is None:
        pytest.skip(INSTALL)
    return chromium


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
                    if json.load(r)["streams"][0]["frames"] > 0:
                        break
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_page_shows_the_video_and_changing_figures(browser, served, tmp_path: Path):
    if browser == "playwright":
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch()
            page = browser.new_page(viewport={"width": 1280, "height": 720})
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
            browser.close()
        assert "drive" in first and "FPS" in first and "weather" in first
        assert first != second  # the frame number, age and answers moved on
        assert (tmp_path / "first.png").read_bytes() != (tmp_path / "second.png").read_bytes()
        if keep := os.environ.get("EDGE_MTL_SCREENSHOT"):  # e.g. docs/web.png for the README
            shutil.copyfile(tmp_path / "second.png", keep)
        return
    chromium = browser
    doms = []
    for budget in (3000, 6000):
        out = subprocess.run(
            [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--dump-dom",
             f"--virtual-time-budget={budget}", served],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        doms.append(out.stdout)
    shot = tmp_path / "page.png"
    subprocess.run(
        [chromium, "--headless", "--disable-gpu", "--no-sandbox", f"--screenshot={shot}",
         "--window-size=1280,720", "--virtual-time-budget=3000", served],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert 'data-stream="drive"' in doms[0] and "FPS" in doms[0] and "weather" in doms[0]
    assert doms[0] != doms[1]
    assert shot.stat().st_size > 10_000
