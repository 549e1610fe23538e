"""Fixtures of the browser tests: the web app on a free port (with an access token) and a headless Chromium.

The tests need Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package. Without them they skip,
except in CI (``CI=true``), where they fail: CI must run them.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from browser import DEMO_SIZE, TOKEN

HERE = Path(__file__).resolve().parent



def _missing() -> str:
    from browser import chromiumPaths

    browser, driver = chromiumPaths()
    if browser is None or driver is None:
        return "Debian's chromium and chromium-driver are not installed"
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed"
    if importlib.util.find_spec("trame_slicer") is None:
        return "trame-slicer is not installed"
    return ""


@pytest.fixture(scope="session")
def browser_available():
    problem = _missing()
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the browser tests must run in CI: {problem}")
        pytest.skip(problem)


@pytest.fixture(scope="module")
def web_home(tmp_path_factory, browser_available) -> Path:
    """A glims user folder with the tiny BraTS model, a copy whose weights file is damaged, and one stored
    training case (so that one more case, added in the browser, allows fine-tuning)."""
    from glims.casestore import add_case
    from glims.synth import MODALITIES, generate_case, write_case
    from tiny_models import register_tiny_model

    home = tmp_path_factory.mktemp("web_home")
    register_tiny_model(home, "brats")
    broken = register_tiny_model(home, "brats", model_id="tiny-broken", seed=1)
    broken.weights[0].path.write_bytes(b"damaged weights")  # the engine refuses it: the job fails
    files = write_case(generate_case(7, shape=(48, 48, 48)), home / "staging", "GLIMS-SYN-STORED-7")
    add_case("brats", {m: files[m] for m in MODALITIES}, files["seg"], case_id="stored-synthetic-7", home=home)
    return home


@pytest.fixture(scope="module")
def web_server(web_home, tmp_path_factory):
    """The web app (``python -m GLIMSSegmenterWeb``) with the test home, a small demo case and an access token."""
    from browser import WebServer

    logs = tmp_path_factory.mktemp("web_server")
    server = WebServer(logs / "server.log", ["--home", str(web_home), "--demo-size", str(DEMO_SIZE),
                                             "--device", "cpu", "--token", TOKEN])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def chrome(web_server, tmp_path_factory):
    """Headless Chromium on the app's page (opened with the token), downloads into ``chrome.downloads``."""
    from browser import startChromium

    downloads = tmp_path_factory.mktemp("downloads")
    driver = startChromium(downloads, tmp_path_factory.mktemp("chromium_profile"))
    driver.downloads = downloads
    driver.get(web_server.url)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def screenshot_folder(tmp_path_factory) -> Path:
    """Where screenshots go: ``$GLIMS_WEB_SCREENSHOTS`` (e.g. docs/images) when set, else a temporary folder."""
    folder = os.environ.get("GLIMS_WEB_SCREENSHOTS")
    return Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
