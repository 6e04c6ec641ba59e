"""`aediff serve` in a real browser: Playwright driving Debian's chromium (Playwright's own browser download
does not work offline) through each tab, and bad input through the page. Skipped, with the reason, when
chromium or playwright is missing."""

import re
import shutil

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)"),
    pytest.mark.slow,  # a browser: `make test-full` and CI run it, `make test` leaves it out
]

TIMEOUT = 90_000  # ms for anything the page computes (generous: CI runs it beside another worker's load)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_server):
    """A fresh tab on the server; ``page.console_errors`` collects console errors and uncaught exceptions."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    tab = context.new_page()
    tab.console_errors = []
    tab.on("console", lambda message: message.type == "error" and tab.console_errors.append(message.text))
    tab.on("pageerror", lambda exc: tab.console_errors.append(str(exc)))
    tab.goto(app_server)
    tab.locator("#g-go").wait_for(timeout=TIMEOUT)
    yield tab
    context.close()


def decoded(page, selector: str) -> int:
    """Wait for the image in ``selector`` and return its natural width (0: not decoded)."""
    image = page.locator(f"{selector} img").first
    image.wait_for(timeout=TIMEOUT)
    page.wait_for_function("(el) => el.complete && el.naturalWidth > 0", arg=image.element_handle(), timeout=TIMEOUT)
    return image.evaluate("(el) => el.naturalWidth")


def choose(page, selector: str, option: str) -> None:
    page.locator(f"{selector} input").first.click()
    page.get_by_role("option", name=option, exact=True).click()


def fill(page, selector: str, text: str) -> None:
    page.locator(f"{selector} textarea, {selector} input").first.fill(text)


def open_tab(page, name: str, tries: int = 3) -> None:
    """Click the tab ``name`` until its panel shows: under load a click that lands while Gradio re-renders the
    page after an error can be lost (seen in CI: the Denoise tab's upload box never appeared)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(tries):
        page.get_by_role("tab", name=name).click()
        try:
            page.locator(f"#tab-{name.lower()}").wait_for(state="visible", timeout=TIMEOUT // tries)
            return
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise


def upload(page, path, box: str = "#d-upload", tab: str = "Denoise", tries: int = 3) -> None:
    """Put ``path`` in ``tab``'s upload box ``box``, opening the tab first. Each try waits for the box's file input
    and then for the file's name; a try that sees neither opens the tab again, and the last reloads the page
    first: under load a tab switch or a file can be lost, and the box's input can fail to appear for minutes,
    while Gradio re-renders the page (all seen in CI). The last failure shows the box's HTML."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(tries):
        if attempt == tries - 1:
            page.reload()
            page.locator("#g-go").wait_for(timeout=TIMEOUT)
        open_tab(page, tab)
        try:
            page.locator(f"{box} input[type=file]").set_input_files(str(path), timeout=TIMEOUT // tries)
            page.locator(box).get_by_text(path.name).first.wait_for(timeout=TIMEOUT // tries)
            return
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise AssertionError(f"no upload in {box}: {page.locator(box).inner_html()[:3000]}") from None


def message(page, text: str) -> None:
    """An error message with ``text`` shows on the page."""
    page.get_by_text(re.compile(re.escape(text))).first.wait_for(state="visible", timeout=TIMEOUT)


def test_each_tab_in_the_browser(page, tmp_path):
    # Generate, with a class: the trajectory streams, the grid appears
    choose(page, "#g-run", "diffusion")
    fill(page, "#g-class", "7")
    fill(page, "#g-steps", "5")
    page.locator("#g-go").click()
    assert decoded(page, "#g-grid") >= 64 and decoded(page, "#g-trajectory") >= 64
    page.locator("#g-info").get_by_text("5 steps").wait_for(timeout=TIMEOUT)

    # Denoise an uploaded PNG: every model's output, with numbers
    open_tab(page, "Denoise")
    digit = tmp_path / "digit.png"
    Image.fromarray((np.eye(16) * 255).astype(np.uint8)).save(digit)
    upload(page, digit)
    page.locator("#d-go").click()
    page.locator("#d-info").get_by_text("outputs against the clean image").wait_for(timeout=TIMEOUT)
    assert page.locator("#d-gallery img").count() >= 5
    assert decoded(page, "#d-gallery") > 0
    table = page.locator("#d-table").inner_text()
    assert re.search(r"\d+\.\d+", table) and "diffusion" in table

    # Restore the same PNG with a box hole: every model beside the controls, the diffusion trajectory
    open_tab(page, "Restore")
    upload(page, digit, "#rs-upload", "Restore")
    fill(page, "#rs-value", "3")
    fill(page, "#rs-steps", "4")
    page.locator("#rs-go").click()
    page.locator("#rs-info").get_by_text("exactly the pixels").wait_for(timeout=TIMEOUT)
    assert page.locator("#rs-gallery img").count() >= 5 and decoded(page, "#rs-trajectory") >= 96
    table = page.locator("#rs-table").inner_text()
    assert "biharmonic" in table and "ddnm" in table and re.search(r"\d+\.\d+", table)

    # Explore: the map, a click on it decodes the nearest point
    open_tab(page, "Explore")
    choose(page, "#e-run", "vae")
    page.locator("#e-go").click()
    assert decoded(page, "#e-map") > 0
    page.locator("#e-map img").first.click(position={"x": 120, "y": 120})
    assert decoded(page, "#e-point") > 0
    page.locator("#e-info").get_by_text("test image").wait_for(timeout=TIMEOUT)

    # Report: the page with its figure
    open_tab(page, "Report")
    page.locator("#r-go").click()
    frame = page.frame_locator("#r-html iframe")
    frame.get_by_text("Comparison report").wait_for(timeout=TIMEOUT)
    assert frame.locator("img[alt=bars]").evaluate("(el) => el.complete && el.naturalWidth") == 40
    assert page.console_errors == []


def test_bad_input_gives_a_message_and_the_server_keeps_serving(page, tmp_path):
    choose(page, "#g-run", "diffusion")
    fill(page, "#g-steps", "1000000")
    page.locator("#g-go").click()
    message(page, "steps must be from 1 to 200")

    open_tab(page, "Denoise")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    upload(page, notes)
    page.locator("#d-go").click()
    message(page, "not an image this page can read")

    page.reload()  # a fresh upload box
    open_tab(page, "Denoise")
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + bytes(3 * 1024 * 1024))  # over the 2 MB cap, under Gradio's own 4 MB
    upload(page, big)
    page.locator("#d-go").click()
    message(page, "capped at 2 MB")

    # still serving: a good request now works
    open_tab(page, "Generate")
    fill(page, "#g-steps", "2")
    page.locator("#g-go").click()
    assert decoded(page, "#g-grid") > 0
    assert "Traceback" not in page.content()


def test_with_no_runs_the_page_says_how_to_train_and_trains_one(browser, tmp_path, unused_port):
    from aediff.app.handlers import Catalog
    from aediff.app.page import build, launch

    catalog = Catalog.open([tmp_path])
    catalog.train_steps = 5
    port = unused_port()
    server = launch(build(catalog), "127.0.0.1", port, block=False)
    context = browser.new_context()
    try:
        tab = context.new_page()
        errors = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.goto(f"http://127.0.0.1:{port}/")
        tab.locator("#runs").get_by_text("aediff train vae --data digits").wait_for(timeout=TIMEOUT)
        tab.locator("#train").click()
        tab.locator("#runs").get_by_text("digits-vae").first.wait_for(timeout=TIMEOUT)  # listed, and offered:
        tab.locator("#g-run input").first.click()
        tab.get_by_role("option", name="digits-vae", exact=True).wait_for(timeout=TIMEOUT)
        assert errors == []
    finally:
        context.close()
        server.close()
