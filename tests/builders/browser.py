"""Headless Chromium for the page tests: Debian's system browser driven by Playwright (no download).

Also small page helpers shared by the tests: waiting for an <img> to load at a given size,
drawing a stroke with the mouse, and saving screenshots under `artifacts/screenshots/` (git-ignored).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
CHROMIUM = Path(os.environ.get("CVAE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is not installed (apt-get install -y chromium)"
    return None


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    """The system Chromium, headless, closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Page, name: str, full_page: bool = True) -> Path:
    """Save a PNG of the page as artifacts/screenshots/<name>.png and return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def wait_for_image(
    page: Page, selector: str, width: int | None = None, height: int | None = None, timeout_ms: int = 15_000
) -> dict[str, int]:
    """Wait until the <img> has loaded (at the natural size given, if any); returns that size."""
    page.wait_for_function(
        """([sel, w, h]) => {
            const img = document.querySelector(sel);
            if (!img || !img.getAttribute("src") || !img.complete || img.naturalWidth === 0) return false;
            return (w === null || img.naturalWidth === w) && (h === null || img.naturalHeight === h);
        }""",
        arg=[selector, width, height],
        timeout=timeout_ms,
    )
    return page.eval_on_selector(selector, "img => ({width: img.naturalWidth, height: img.naturalHeight})")


def draw_stroke(page: Page, selector: str, points: list[tuple[float, float]]) -> None:
    """Press the mouse at the first point, move through the others and release; points are
    fractions (0..1) of the element's box, so the stroke is the same at any layout size."""
    element = page.locator(selector)
    element.scroll_into_view_if_needed()
    box = element.bounding_box()
    assert box is not None, f"{selector} is not visible"

    def at(fx: float, fy: float) -> tuple[float, float]:
        return box["x"] + fx * box["width"], box["y"] + fy * box["height"]

    page.mouse.move(*at(*points[0]))
    page.mouse.down()
    for fx, fy in points[1:]:
        page.mouse.move(*at(fx, fy), steps=6)
    page.mouse.up()
