"""Headless Chromium for the console tests: Debian's ``chromium`` driven by its ``chromedriver``.

``make test`` installs both (as root on Debian/Ubuntu; ``BROWSER=0`` opts out). A missing
browser then fails the tests instead of skipping them, unless the run opted out with
``TAILOR_TEST_BROWSER=0``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> tuple[str, str] | None:
    binary = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


def start_browser(width: int = 1360, height: int = 860):
    if os.environ.get("TAILOR_TEST_BROWSER", "1") == "0":
        pytest.skip("this run opted out of the browser tests (TAILOR_TEST_BROWSER=0)")
    found = find_browser()
    if found is None:
        pytest.fail(
            "Chromium and chromedriver are not installed: run `make browser`, or opt out with BROWSER=0"
        )
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(found[1]), options=options)


def screenshot_dir() -> Path | None:
    """Where to save screenshots: ``TAILOR_CONSOLE_SHOTS`` (``make console-shots`` sets docs/console)."""
    value = os.environ.get("TAILOR_CONSOLE_SHOTS")
    return Path(value) if value else None
