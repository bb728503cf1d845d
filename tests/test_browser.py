"""app.py in a real browser: extract, see the Layers chart, chat — with screenshots for the README.

Headless Debian Chromium through Playwright, against the app launched in-process. Also checks that the page
requests nothing beyond the local server (no web fonts, CDN or analytics).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a browser against the launched app on the bundled model

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        f"{CHROMIUM} is missing (apt-get install -y chromium); Playwright cannot download browsers here",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api")
app = pytest.importorskip("app")

ROOT = Path(__file__).resolve().parent.parent
# Screenshots are test artifacts; UPDATE_SCREENSHOTS=1 also refreshes the README's copies in docs/screenshots.
SHOT_DIRS = [ROOT / "test-artifacts"] + (
    [ROOT / "docs" / "screenshots"] if os.environ.get("UPDATE_SCREENSHOTS") else []
)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
NAME = f"test-browser-{os.getpid()}"  # unique: other runs may share vectors/


@pytest.fixture(scope="module")
def url(app_url):
    yield app_url  # conftest.app_url: the app launched in-process for this module
    for path in app.CATALOG.folder.glob(f"{NAME}*"):  # the vectors this test extracted
        path.unlink()


@pytest.fixture(scope="module")
def page(url):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(120_000)
        page.outside = []  # requests to anything but the local server
        page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else page.outside.append(r.url))
        page.goto(url)
        yield page
        browser.close()


def shot(page, name: str) -> None:
    for folder in SHOT_DIRS:
        folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOT_DIRS[0] / name), full_page=True)
    for folder in SHOT_DIRS[1:]:
        shutil.copy(SHOT_DIRS[0] / name, folder / name)


SHIPPED = "smollm2-135m-instruct_gal_en.pt"


def select_vector(page, label: str) -> None:
    """Pick a file in the vector dropdown by its label."""
    page.locator("#vector-dd input").first.click()
    page.get_by_role("option", name=label).first.click()


def fill(page, elem_id: str, value: str) -> None:
    """Type into the input of a Gradio component found by elem_id, then leave it so the value is committed."""
    box = page.locator(f"#{elem_id} input:not([type=range]), #{elem_id} textarea").first
    box.fill(value)
    box.press("Tab")


def test_extract_layers_chat(page):
    page.get_by_text("ギャル steering studio").wait_for()
    page.get_by_text("SmolLM2-135M-Instruct").first.wait_for()  # the page load filled the model status

    # Extract: bundled English data, a few pairs, a narrow layer band
    page.get_by_label("同梱 英語 / bundled en").check()
    fill(page, "max-pairs", "6")
    fill(page, "extract-layers", "8-12")
    fill(page, "extract-name", NAME)
    page.locator("#extract-btn").click()
    page.locator("#extract-status").get_by_text("saved").wait_for()
    page.locator("#extract-table").get_by_text("12 ★").first.wait_for(state="attached")  # suggested layer marked
    shot(page, "extract.png")

    # Layers: the plotly chart of the new vector
    page.get_by_role("tab", name="レイヤー / Layers").click()
    page.locator("#layers-plot .js-plotly-plot").wait_for()
    page.locator("#layers-plot .js-plotly-plot .bars").first.wait_for()
    shot(page, "layers.png")

    # Chat with the shipped English vector: picking it fills in its recommended setting
    page.get_by_role("tab", name="チャット / Chat").click()
    select_vector(page, SHIPPED)
    expect = sync_api.expect
    expect(page.locator("#chat-layers textarea, #chat-layers input").first).to_have_value("12-16")
    expect(page.locator("#strength input[type=number]").first).to_have_value("4")
    fill(page, "max-new", "40")
    fill(page, "chat-msg", "What should I wear to a summer festival?")
    page.locator("#send-btn").click()
    for bot in ("plain-bot", "steered-bot"):
        page.locator(f"#{bot} .message.bot, #{bot} [data-testid='bot']").first.wait_for()
    page.get_by_text("style", exact=False).first.wait_for()
    page.wait_for_function("() => !document.querySelector('.generating, .pending')", timeout=120_000)
    shot(page, "chat.png")

    # Sweep: a tiny grid on the new vector (its layer options were filled in from its suggested layer)
    select_vector(page, f"{NAME}.pt")
    page.get_by_role("tab", name="スイープ / Sweep").click()
    expect(page.locator("#sweep-layers textarea, #sweep-layers input").first).to_have_value("8-10 10-12")
    fill(page, "sweep-strengths", "0,2,4")
    fill(page, "sweep-prompts", "2")
    fill(page, "sweep-tokens", "12")
    page.locator("#sweep-btn").click()
    for plot in ("sweep-markers", "sweep-broken"):
        page.locator(f"#{plot} .js-plotly-plot .heatmaplayer, #{plot} .js-plotly-plot .hm").first.wait_for()
    page.locator("#sweep-table").get_by_text("10-12 @ 4").first.wait_for(state="attached")
    page.locator("#sweep-best").get_by_text("recommend", exact=False).first.wait_for()
    page.wait_for_function("() => !document.querySelector('.generating, .pending')", timeout=120_000)
    shot(page, "sweep.png")

    # Pick a cell and send it to the Chat tab
    page.locator("#sweep-table").get_by_text("10-12 @ 4").first.click()
    page.locator("#apply-pick-btn").click()
    expect(page.locator("#chat-layers textarea, #chat-layers input").first).to_have_value("10-12")
    expect(page.locator("#strength input[type=number]").first).to_have_value("4")
    expect(page.get_by_role("tab", name="チャット / Chat")).to_have_attribute("aria-selected", "true")

    assert page.outside == [], f"the page requested outside resources: {page.outside[:5]}"
