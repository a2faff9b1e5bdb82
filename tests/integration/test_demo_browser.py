"""The demo page in a real browser: Debian's chromium driven by Playwright uploads an image to the VQA tab,
types a question, clicks Run and reads the answer, as a user would.

The browser is the system's /usr/bin/chromium (`apt-get install chromium`; `make test` runs
scripts/install-chromium.sh first, which installs it where it is missing); Playwright never downloads one.
Without it the test fails and says how to install it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.integration._demo_server import running_demo

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
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
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def demo_url(served_model_dir, tmp_path_factory):
    from biomedgpt.demo.backends import EngineBackend
    from biomedgpt.serve.engines import load_engine

    backend = EngineBackend(load_engine(served_model_dir, engine="torch"))
    with running_demo(backend, tmp_path_factory.mktemp("demo-examples")) as url:
        yield url


@pytest.fixture
def page():
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is absent: install Debian's chromium (bash scripts/install-chromium.sh, or"
            " apt-get install --no-install-recommends chromium) to run the browser test"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def test_vqa_in_the_browser(page, demo_url, tmp_path):
    from playwright.sync_api import expect

    from biomedgpt.demo.examples import draw_chest_slice

    image_path = tmp_path / "chest.png"
    Image.fromarray(draw_chest_slice(256)).save(image_path)

    page.goto(demo_url)
    page.get_by_role("tab", name="VQA").click()
    page.locator("#vqa-image input[type=file]").set_input_files(str(image_path))
    expect(page.locator("#vqa-preview img").first).to_be_visible()  # decoded by the API's decoder, shown
    page.locator("#vqa-field textarea").fill("is there a lesion?")
    page.locator("#vqa-submit").click()

    answer = page.locator("#vqa-answer textarea")
    expect(answer).not_to_have_value("", timeout=TIMEOUT_MS)
    expect(page.locator("#vqa-status")).to_contain_text("Done in")
    assert answer.input_value().strip() in {"yes", "no", "left lung"}
    page.screenshot(path=str(tmp_path / "demo-vqa.png"), full_page=True)
    assert (tmp_path / "demo-vqa.png").stat().st_size > 0
