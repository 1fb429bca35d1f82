"""`fer serve`'s page in a real browser: headless Chromium (Debian's chromium + chromium-driver) via Selenium.

A real uvicorn server on 127.0.0.1 (a free port), in a thread, stopped at the end. The screenshot is
kept as an artifact: ``$FER_TEST_ARTIFACTS`` (default ``runs/test-artifacts``)/serve_page.png.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from fercli import Recognizer
from fercli.serve import ServeConfig, create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("FER_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "runs" / "test-artifacts")

pytestmark = [
    pytest.mark.shared,
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason="Chromium and its driver are not installed (apt-get install chromium chromium-driver; "
                              ".ci/run installs them)"),
]


@pytest.fixture(scope="module")
def server_url(mobilenet_weights: Path, tmp_path_factory):
    import uvicorn

    rec = Recognizer(detector="retinaface-mobilenet", detector_weights=mobilenet_weights, device="cpu",
                     workspace=tmp_path_factory.mktemp("page_ws"))
    server = uvicorn.Server(uvicorn.Config(create_app(ServeConfig(), rec), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not start within 30 s")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(15)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=400,900"):
        opts.add_argument(arg)  # a phone-sized viewport
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)  # explicit paths: nothing is downloaded
    yield driver
    driver.quit()


def test_page_shows_one_happy_face(server_url: str, browser, shared_dir: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server_url)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: "happiness" in d.find_element(By.ID, "model").text)  # the model card loaded
    browser.find_element(By.ID, "file").send_keys(str(shared_dir / "faces" / "astronaut.png"))
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#faces .face")))
    faces = browser.find_elements(By.CSS_SELECTOR, "#faces .face")
    assert len(faces) == 1 and faces[0].get_attribute("data-label") == "happiness"
    assert "1 face(s) found" in browser.find_element(By.ID, "status").text
    # Readable on a phone: nothing wider than the viewport.
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    # Keyboard: Tab reaches the photo picker and the webcam button.
    focusable = browser.execute_script(
        "return [...document.querySelectorAll('input, button, [tabindex]')].filter(e => e.tabIndex >= 0).map(e => e.id)")
    assert {"file", "cam", "drop"} <= set(focusable)
    # The artifact: the whole page at phone width.
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(400, min(4000, height + 150))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "serve_page.png"))
