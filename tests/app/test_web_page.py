"""The demo page (`GET /`, app/static/) in a real headless Chromium against the real server.

Screenshots are saved under artifacts/screenshots/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.server import start_server
from model.registry import Registry
from tests.builders.browser import (
    chromium_missing_reason,
    draw_stroke,
    launch_chromium,
    screenshot,
    wait_for_image,
)

pytestmark = pytest.mark.skipif(chromium_missing_reason() is not None, reason=str(chromium_missing_reason()))

SEVEN = [(0.25, 0.2), (0.75, 0.2), (0.55, 0.5), (0.45, 0.85)]  # a stroke shaped like a 7
MAX_SEED = str(2**63 - 1)


@pytest.fixture(scope="module")
def base_url(trained_registry: Path) -> Iterator[str]:
    """A server of our own over the read-only trained registry: no other test swaps its model."""
    with start_server(trained_registry) as server:
        url = server.base_url
        yield url


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture
def page(browser, base_url: str, request: pytest.FixtureRequest):
    """A fresh page on `/`; fails the test on any uncaught JavaScript error; screenshot at the end."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{base_url}/")
    yield page
    screenshot(page, request.node.name)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _active_version(registry: Path) -> str:
    version = Registry(registry).active_version()
    assert version is not None
    return version


def _draw_a_digit(page) -> None:
    draw_stroke(page, "#draw-canvas", SEVEN)
    page.wait_for_selector("#draw-output[data-state=ready]", state="attached")


def test_typing_a_number_shows_its_png_with_model_and_timing(page, trained_registry: Path) -> None:
    text = page.locator("#write-text")
    text.fill("7")
    wait_for_image(page, "#write-image", 28, 28)
    text.fill("")
    text.press_sequentially("2026", delay=40)  # the PNG follows the typing (debounced)
    size = wait_for_image(page, "#write-image", 28 * 4, 28)
    assert size == {"width": 112, "height": 28}  # scale 1, one sample
    meta = page.locator("#write-meta")
    meta_text = meta.inner_text()
    assert f"Model {_active_version(trained_registry)}" in meta_text
    assert " ms" in meta_text and "112×28 px" in meta_text
    seed = page.locator("#write-seed").input_value()
    assert page.locator("#write-image").get_attribute("data-seed") == seed
    assert "2 0 2 6" in (page.locator("#write-image").get_attribute("alt") or "")


def test_a_seed_above_2_53_round_trips_exactly_and_reproduces(page) -> None:
    wait_for_image(page, "#write-image", 112, 28)
    page.locator("#write-seed").fill(MAX_SEED)
    page.wait_for_selector(f"#write-image[data-seed='{MAX_SEED}']", state="attached")
    first = page.locator("#write-image").get_attribute("src")
    assert f"seed {MAX_SEED}" in page.locator("#write-meta").inner_text()

    page.locator("#write-new-seed").click()
    page.wait_for_function(f"document.querySelector('#write-image').dataset.seed !== '{MAX_SEED}'")
    assert page.locator("#write-image").get_attribute("src") != first

    page.locator("#write-seed").fill(MAX_SEED)
    page.wait_for_selector(f"#write-image[data-seed='{MAX_SEED}']", state="attached")
    assert page.locator("#write-image").get_attribute("src") == first  # byte-identical PNG


def test_invalid_text_gets_an_inline_message(page) -> None:
    from playwright.sync_api import expect

    text = page.locator("#write-text")
    error = page.locator("#write-text-error")
    text.fill("20a6")
    expect(error).to_contain_text("not “a”")
    expect(text).to_have_attribute("aria-invalid", "true")
    text.fill("   ")
    expect(error).to_contain_text("at least one digit")
    text.fill("7")
    wait_for_image(page, "#write-image", 28, 28)
    expect(text).to_have_attribute("aria-invalid", "false")
    expect(error).to_be_hidden()


def test_a_drawn_stroke_shows_input_reconstruction_label_and_probabilities(page) -> None:
    _draw_a_digit(page)
    assert wait_for_image(page, "#draw-input") == {"width": 28, "height": 28}
    assert wait_for_image(page, "#draw-recon") == {"width": 28, "height": 28}
    assert page.locator("#draw-label-out").inner_text() in list("0123456789")
    bars = page.locator("#draw-probs .bar-fill")
    assert bars.count() == 10
    widths = [float(bars.nth(i).evaluate("el => parseFloat(el.style.width)")) for i in range(10)]
    assert sum(widths) == pytest.approx(100, abs=1)
    assert page.locator("#draw-probs .bar-row.top").count() == 1
    metrics = page.locator("#draw-metrics").inner_text()
    assert "ELBO" in metrics and "KL" in metrics and "nats" in metrics


def test_draw_one_for_me_is_a_keyboard_way_in(page) -> None:
    page.locator("#draw-sample").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#draw-output:is([data-state=ready], [data-state=error])", state="attached")
    assert page.locator("#draw-hint").is_hidden()  # the model's digit is on the pad
    # The test model is tiny: its digit may be too faint to read, but the page must say so, not go blank.
    if page.locator("#draw-output").get_attribute("data-state") == "ready":
        assert page.locator("#draw-label-out").inner_text() in list("0123456789")
    else:
        assert page.locator("#draw-alert").inner_text().strip()


def test_in_my_handwriting_writes_any_number_in_the_drawn_style(page) -> None:
    assert "Draw or upload a digit first" in page.locator("#style-status").inner_text()
    _draw_a_digit(page)
    label = page.locator("#draw-label-out").inner_text()
    wait_for_image(page, "#style-image", 28 * 10, 28)  # the default text, 0123456789
    page.locator("#style-text").fill("42")
    assert wait_for_image(page, "#style-image", 56, 28) == {"width": 56, "height": 28}
    assert f"style of your {label}" in page.locator("#style-meta").inner_text()


def test_the_latent_explorer_slider_changes_the_image(page) -> None:
    wait_for_image(page, "#explore-image", 28, 28)
    page.wait_for_selector("#explore-output[data-state=ready]", state="attached")
    before = page.locator("#explore-image").get_attribute("src")
    page.locator("#explore-x").focus()
    page.keyboard.press("End")  # keyboard use: the slider jumps to +3
    page.wait_for_function("document.querySelector('#explore-image').dataset.z.startsWith('3.00')")
    page.wait_for_selector("#explore-output[data-state=ready]", state="attached")
    assert page.locator("#explore-image").get_attribute("src") != before
    assert "= 3.0" in page.locator("#explore-meta").inner_text()

    # With a drawn digit the other dimensions come from its style: a full page for the screenshot.
    _draw_a_digit(page)
    wait_for_image(page, "#style-image", 280, 28)
    page.locator("#explore-from-style").check()
    page.wait_for_selector("#explore-output[data-state=ready]", state="attached")
    wait_for_image(page, "#explore-image", 28, 28)
    screenshot(page, "demo-full-page")


def test_uploading_a_file_that_is_not_an_image_shows_the_servers_message(page) -> None:
    page.locator("#draw-file").set_input_files(
        files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a digit, just words"}]
    )
    alert = page.locator("#draw-alert")
    alert.wait_for(state="visible")
    assert alert.get_attribute("role") == "alert"
    assert "cannot read that file as an image" in alert.inner_text()
    assert page.locator("#draw-output").get_attribute("data-state") == "error"


def test_the_page_fits_a_phone_screen(browser, base_url: str) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, has_touch=True, is_mobile=True)
    page = context.new_page()
    try:
        page.goto(f"{base_url}/")
        wait_for_image(page, "#write-image", 112, 28)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than a phone screen"
        canvas = page.locator("#draw-canvas").bounding_box()
        assert canvas is not None and canvas["width"] >= 250
        screenshot(page, "phone")
    finally:
        context.close()
