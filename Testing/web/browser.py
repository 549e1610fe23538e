"""Test helpers: start the web app on a free port, drive Debian's Chromium with Selenium, read view pixels.

Chromium runs headless with no network features (the test machines have no network) and a fresh profile.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TOKEN = "browser-test-token"
"""The access token the tests start the web app with (and send with every request)."""
DEMO_SIZE = 64
"""Edge of the synthetic sample case in the tests (voxels): small, so that a segmentation takes seconds."""

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1440,900")
SERVER_START_TIMEOUT_S = 120


def chromiumPaths() -> tuple[str | None, str | None]:
    """Chromium and its WebDriver (Debian packages ``chromium`` and ``chromium-driver``)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    return browser, shutil.which("chromedriver")


class WebServer:
    """``python -m GLIMSSegmenterWeb`` in a child process on a free port; :meth:`stop` ends it.

    Args:
        logPath: where the server's output goes.
        arguments: extra command-line arguments.
        env: extra environment variables.
    """

    def __init__(self, logPath: Path, arguments: list[str], env: dict[str, str] | None = None) -> None:
        self.logPath = logPath
        environment = {**os.environ, **(env or {})}
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), str(REPO / "GLIMSSegmenter"), *filter(None, [environment.get("PYTHONPATH")])])
        self._log = open(logPath, "w")
        self.started = time.monotonic()
        self.process = subprocess.Popen([sys.executable, "-m", "GLIMSSegmenterWeb", "--port", "0", *arguments],
                                        stdout=self._log, stderr=subprocess.STDOUT, env=environment,
                                        cwd=REPO, start_new_session=True)
        self.url = self._waitForUrl()

    def _waitForUrl(self) -> str:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.logPath.read_text(errors="replace")
            found = re.search(r"open (http://\S+)", text)
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                raise RuntimeError(f"the web app exited with {self.process.returncode}:\n{text[-3000:]}")
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"the web app did not start within {SERVER_START_TIMEOUT_S} s")

    def log(self) -> str:
        return self.logPath.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def startChromium(downloadFolder: Path, profileFolder: Path):
    """A Selenium WebDriver on headless Chromium that saves downloads into ``downloadFolder``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromiumPaths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profileFolder}")
    options.add_experimental_option("prefs", {"download.default_directory": str(downloadFolder),
                                              "download.prompt_for_download": False})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloadFolder)})
    return chrome


def waitFor(condition, timeout: float, what: str, interval: float = 0.2):
    """Call ``condition`` until it returns something true (returned); TimeoutError naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except Exception as err:  # the page is still changing (stale element, not yet rendered...)
            last = err
        else:
            if last:
                return last
        time.sleep(interval)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}; last: {last!r}")


def viewImages(driver) -> list:
    """The streamed view images that have arrived (``<img>`` wider than 50 px), largest first."""
    images = [img for img in driver.find_elements("css selector", "img")
              if (driver.execute_script("return arguments[0].naturalWidth", img) or 0) > 50]
    return sorted(images, key=lambda img: -img.size["width"] * img.size["height"])


def elementPixels(element) -> np.ndarray:
    """The element as it is shown, (height, width, 3) uint8."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB"))


def changedFraction(before: np.ndarray, after: np.ndarray, threshold: int = 40) -> float:
    """Share of pixels whose largest channel difference exceeds ``threshold`` (same-size images)."""
    height = min(before.shape[0], after.shape[0])
    width = min(before.shape[1], after.shape[1])
    difference = np.abs(before[:height, :width].astype(int) - after[:height, :width].astype(int)).max(axis=2)
    return float((difference > threshold).mean())
