"""The web page in headless Chromium (Debian's chromium + chromium-driver, via selenium) against a real
uvicorn server: upload a video, ask, the answer streams in, the accounting and the kept-token overlay appear.

scripts/setup-browser.sh installs the browser (`make test` runs it first).
"""

from __future__ import annotations

import shutil

import pytest

from serve.app import create_app
from serve.settings import Settings
from tests.serve_support import LiveServer, make_video, shared_tiny_engine

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
selenium = pytest.importorskip("selenium", reason="run scripts/setup-browser.sh")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium/chromedriver missing: run scripts/setup-browser.sh")

SCREENSHOT = "/tmp/vidsieve-serve-page.png"

# Checks every cell of every drawn frame: a kept cell has the green outline at its left edge, a dropped cell
# is darkened there. Returns a list of problems (empty = all good).
CHECK_CELLS_JS = """
const result = window.vidsieveResult;
const [T, H, W] = result.stats.grid;
const kept = new Set(result.kept.map(([t, h, w]) => `${t},${h},${w}`));
const problems = [];
let keptSeen = 0, droppedSeen = 0;
document.querySelectorAll('#overlay canvas.frame').forEach((canvas, i) => {
  const t = Math.floor(i / 2), ctx = canvas.getContext('2d');
  const cw = canvas.width / W, ch = canvas.height / H;
  for (let h = 0; h < H; h++) for (let w = 0; w < W; w++) {
    const x = Math.round(w * cw) + 1, y = Math.round(h * ch + ch / 2);
    const [r, g, b] = ctx.getImageData(x, y, 1, 1).data;
    if (kept.has(`${t},${h},${w}`)) {
      keptSeen++;
      if (!(g > 180 && r < 120)) problems.push(`frame ${i} cell ${h},${w} kept but not outlined: ${r},${g},${b}`);
    } else {
      droppedSeen++;
      if (Math.max(r, g, b) > 95) problems.push(`frame ${i} cell ${h},${w} dropped but not darkened: ${r},${g},${b}`);
    }
  }
});
return {problems: problems.slice(0, 10), keptSeen, droppedSeen, frames: document.querySelectorAll('#overlay canvas.frame').length};
"""


@pytest.fixture(scope="module")
def engine():
    return shared_tiny_engine()[0]


@pytest.fixture()
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,1400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_page_uploads_asks_and_draws_the_overlay(engine, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    video = make_video(tmp_path / "square.mp4", num_frames=16, fps=8.0, width=224, height=168)
    with LiveServer(create_app(Settings(), engine=engine)) as server:
        browser.get(server.url + "/")
        assert browser.title == "vidsieve"
        browser.find_element(By.ID, "video-file").send_keys(str(video))
        browser.find_element(By.ID, "question").send_keys("What moves?")
        browser.find_element(By.ID, "fps").send_keys("4")
        browser.find_element(By.ID, "ask").click()

        def finished(driver):
            status = driver.find_element(By.ID, "status")
            if "error" in (status.get_attribute("class") or ""):
                raise AssertionError(f"page reported an error: {status.text}")
            return driver.find_element(By.ID, "overlay").get_attribute("data-done") == "1"

        WebDriverWait(browser, 120, poll_frequency=0.2).until(finished)
        browser.save_screenshot(SCREENSHOT)

        result = browser.execute_script("return window.vidsieveResult;")
        answer = browser.find_element(By.ID, "answer").text
        assert answer.strip() == result["answer"].strip()
        assert result["stats"]["budget"] == "keep_ratio=0.25"  # the page's default
        assert result["stats"]["tokens_after"] < result["stats"]["tokens_before"]
        stats_text = browser.find_element(By.ID, "stats").text
        assert f"{result['stats']['tokens_after']} / {result['stats']['tokens_before']}" in stats_text
        check = browser.execute_script(CHECK_CELLS_JS)
        assert check["frames"] == len(result["stats"]["frame_times_s"]) >= 2
        assert check["keptSeen"] > 0 and check["droppedSeen"] > 0
        assert check["problems"] == [], check["problems"]
        logs = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert logs == [], logs
