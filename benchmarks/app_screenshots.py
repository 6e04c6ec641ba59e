"""Screenshots of each tab of `aediff serve` for docs/app.md, taken in Debian's chromium through Playwright.

Serves RUNS (and REPORT) in this process on a free port, then clicks through the tabs as a user would:
Generate (class 3 at guidance 3, 20 steps), Denoise (a clean test digit uploaded as a PNG, Gaussian noise 0.5), Explore
(the map, a click on it), Report (the comparison report), and saves one PNG per tab.

    python benchmarks/app_screenshots.py reports/compare-2m/runs --report reports/compare-2m --out docs/img

Writes OUT/app_generate.png, app_denoise.png, app_explore.png, app_report.png.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

TIMEOUT = 120_000  # ms: a 20-step grid of 16 digits on two cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_digit() -> Path:
    """A clean mnist5k test digit as a PNG file (the page adds the noise)."""
    from aediff.data import load_dataset

    image = load_dataset("mnist5k", "test").batch(np.array([7]))["images"][0, 0].numpy()
    path = Path(tempfile.mkdtemp()) / "test_digit.png"
    Image.fromarray(((image + 1) * 127.5).round().astype(np.uint8)).save(path)
    return path


def choose(page, selector: str, option: str) -> None:
    page.locator(f"{selector} input").first.click()
    page.get_by_role("option", name=option, exact=True).click()


def shown(page, selector: str) -> None:
    image = page.locator(f"{selector} img").first
    image.wait_for(timeout=TIMEOUT)
    page.wait_for_function("(el) => el.complete && el.naturalWidth > 0", arg=image.element_handle(), timeout=TIMEOUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="a folder of runs (the demo's: reports/demo/runs)")
    parser.add_argument("--report", type=Path, required=True, help="a compare report folder")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--diffusion", default="diffusion", help="the class-conditioned diffusion run's name")
    parser.add_argument("--latent", default="vae", help="the run whose latent map is shown")
    parser.add_argument("--guidance", default="3", help="the Generate tab's guidance scale")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from aediff.app.handlers import Catalog
    from aediff.app.page import build, launch

    port = free_port()
    server = launch(build(Catalog.open([args.runs], [args.report])), "127.0.0.1", port, block=False)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#g-go").wait_for(timeout=TIMEOUT)

            choose(page, "#g-run", args.diffusion)
            page.locator("#g-class textarea, #g-class input").first.fill("3")
            page.locator("#g-guidance textarea, #g-guidance input").first.fill(args.guidance)
            page.locator("#g-go").click()
            shown(page, "#g-grid")
            page.screenshot(path=args.out / "app_generate.png", full_page=True)

            page.get_by_role("tab", name="Denoise").click()
            digit = test_digit()
            page.locator("#d-upload input[type=file]").set_input_files(str(digit))
            page.locator("#d-level input").first.fill("0.5")
            page.locator("#d-go").click()
            page.locator("#d-info").get_by_text("outputs against the clean image").wait_for(timeout=TIMEOUT)
            page.screenshot(path=args.out / "app_denoise.png", full_page=True)

            page.get_by_role("tab", name="Explore").click()
            choose(page, "#e-run", args.latent)
            page.locator("#e-go").click()
            shown(page, "#e-map")
            page.locator("#e-map img").first.click(position={"x": 200, "y": 200})
            shown(page, "#e-point")
            page.screenshot(path=args.out / "app_explore.png", full_page=True)

            page.get_by_role("tab", name="Report").click()
            page.locator("#r-go").click()
            page.frame_locator("#r-html iframe").locator("h1").first.wait_for(timeout=TIMEOUT)
            page.screenshot(path=args.out / "app_report.png")
            browser.close()
    finally:
        server.close()
    print(f"screenshots -> {args.out}/app_{{generate,denoise,explore,report}}.png")


if __name__ == "__main__":
    main()
