"""The built-in console, end to end in headless Chromium: upload, wait for the job, ask, open a source."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from app.config import Settings
from tests.browser import screenshot_dir, start_browser

DOMAIN = "console-demo"
LEASE = "Office lease.\n\nThe monthly rent for the office is 4,500 euros, due on the first day of each month."
NOTICE = "Termination.\n\nEither party may end the lease with sixty days of written notice."


@pytest.fixture(scope="module")
def browser() -> Iterator:
    driver = start_browser()
    yield driver
    driver.quit()


def shot(driver, name: str) -> None:
    folder = screenshot_dir()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        time.sleep(0.5)  # let the progress bar's transition finish
        driver.save_screenshot(str(folder / f"{name}.png"))


def severe_logs(driver) -> list[str]:
    """Script errors and CSP violations (API answers like a 404 the page handles are not errors)."""
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
    ]


def wait(driver, seconds: float = 30) -> WebDriverWait:
    return WebDriverWait(driver, seconds, poll_frequency=0.2)


def text_of(driver, css: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, css).text


def test_the_page_ships_with_the_app_under_a_strict_policy(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "connect-src 'self'" in csp
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN: every asset is served here
    for asset in ("console.js", "console.css", "favicon.svg"):
        assert http.get(f"/console/{asset}").status_code == 200
    assert http.get("/console/../app/config.py").status_code == 404
    assert http.get("/console/nope.js").status_code == 404


def test_upload_wait_ask_and_open_a_source(browser, server, http: httpx.Client, tmp_path: Path) -> None:
    d = browser
    d.get(f"{server.url}/")
    wait(d).until(
        lambda d: any(
            o.get_attribute("value") == "legal" for o in d.find_elements(By.CSS_SELECTOR, "#model option")
        )
    )
    wait(d).until(lambda d: "ready" in text_of(d, "#health"))

    # upload two files into a new domain; the job's progress drives the bar
    d.find_element(By.CSS_SELECTOR, "[data-tab=documents]").click()
    (tmp_path / "lease.txt").write_text(LEASE)
    (tmp_path / "notice.md").write_text(NOTICE)
    d.find_element(By.ID, "new-domain").send_keys(DOMAIN)
    d.find_element(By.ID, "files").send_keys(f"{tmp_path / 'lease.txt'}\n{tmp_path / 'notice.md'}")
    d.find_element(By.CSS_SELECTOR, "#upload-form button[type=submit]").click()
    wait(d, 120).until(lambda d: text_of(d, "#upload-status").startswith("Done"))
    assert "2 document(s) indexed, 0 failed" in text_of(d, "#upload-status")
    assert d.find_element(By.ID, "progress-bar").get_attribute("style").replace(" ", "") == "width:100%;"
    wait(d).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#doc-table tbody tr")) == 2)
    assert {"lease.txt", "notice.md"} == {
        r.find_element(By.CSS_SELECTOR, "td").text
        for r in d.find_elements(By.CSS_SELECTOR, "#doc-table tbody tr")
    }
    shot(d, "documents")

    # ask the new domain; the answer streams in and cites numbered sources that open the passage
    d.find_element(By.CSS_SELECTOR, "[data-tab=chat]").click()
    Select(d.find_element(By.ID, "model")).select_by_value(DOMAIN)
    d.find_element(By.ID, "prompt").send_keys("How much is the monthly rent for the office?")
    d.find_element(By.ID, "send").click()
    wait(d, 180).until(EC.presence_of_element_located((By.CSS_SELECTOR, ".msg.assistant.done")))
    answer = text_of(d, ".msg.assistant .body")
    assert answer.strip()
    sources = d.find_elements(By.CSS_SELECTOR, ".msg.assistant .source")
    assert sources and sources[0].text.startswith("[1]")
    lease = next(s for s in sources if "lease" in s.text)
    lease.click()
    wait(d).until(EC.visibility_of_element_located((By.ID, "passage")))
    assert "4,500 euros" in text_of(d, "#passage-text") and "lease.txt" in text_of(d, "#passage-meta")
    shot(d, "chat")

    # the profile: see it, edit it, save it (a new version)
    d.find_element(By.CSS_SELECTOR, "[data-tab=domain]").click()
    Select(d.find_element(By.ID, "profile-domain")).select_by_value(DOMAIN)
    wait(d).until(lambda d: "version" in text_of(d, "#profile-version"))
    system = d.find_element(By.ID, "p-system")
    system.clear()
    system.send_keys("You are the leasing desk of ACME. Cite sources like [1].")
    d.find_element(By.CSS_SELECTOR, "#profile-form button[type=submit]").click()
    wait(d).until(lambda d: text_of(d, "#profile-status").startswith("Saved"))
    assert http.get(f"/v1/domains/{DOMAIN}").json()["system_prompt"].startswith("You are the leasing desk")
    shot(d, "domain")

    # delete a document from the list
    d.find_element(By.CSS_SELECTOR, "[data-tab=documents]").click()
    Select(d.find_element(By.ID, "doc-domain")).select_by_value(DOMAIN)
    wait(d).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#doc-table tbody tr")) == 2)
    row = next(r for r in d.find_elements(By.CSS_SELECTOR, "#doc-table tbody tr") if "notice.md" in r.text)
    row.find_element(By.CSS_SELECTOR, "button").click()
    wait(d).until(EC.alert_is_present()).accept()
    wait(d).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#doc-table tbody tr")) == 1)
    assert http.get(f"/v1/domains/{DOMAIN}/documents/notice.md").status_code == 404

    # adapters, soft prompts and fine-tuning jobs
    d.find_element(By.CSS_SELECTOR, "[data-tab=tuning]").click()
    wait(d).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#ft-table tbody tr"))
    shot(d, "tuning")
    assert severe_logs(d) == []


def test_documents_show_as_text_not_markup(browser, server, http: httpx.Client) -> None:
    hostile = "<img src=x onerror=\"document.title='pwned'\"> The fee is <b>ten</b> euros."
    r = http.post(f"/v1/domains/{DOMAIN}/documents", json={"documents": [{"id": "hostile", "text": hostile}]})
    assert r.status_code == 201, r.text
    d = browser
    d.get(f"{server.url}/")
    wait(d).until(
        lambda d: any(
            o.get_attribute("value") == DOMAIN for o in d.find_elements(By.CSS_SELECTOR, "#model option")
        )
    )
    Select(d.find_element(By.ID, "model")).select_by_value(DOMAIN)
    d.find_element(By.ID, "prompt").send_keys("What is the fee?")
    d.find_element(By.ID, "send").click()
    wait(d, 180).until(EC.presence_of_element_located((By.CSS_SELECTOR, ".msg.assistant.done")))
    src = next(s for s in d.find_elements(By.CSS_SELECTOR, ".msg.assistant .source") if "hostile" in s.text)
    src.click()
    wait(d).until(lambda d: "<img" in text_of(d, "#passage-text"))
    assert d.title == "Tailor console" and not d.find_elements(By.CSS_SELECTOR, "#passage-text img")


def test_key_entry_when_keys_are_configured(browser, make_server, base_settings: Settings) -> None:
    keyed = make_server(
        base_settings.model_copy(update={"api_keys": ["query-key"], "admin_keys": ["admin-key"]})
    )
    d = browser
    d.get(f"{keyed.url}/")
    wait(d).until(EC.visibility_of_element_located((By.ID, "key-dialog")))
    assert not d.find_elements(By.CSS_SELECTOR, "#model option")
    d.find_element(By.ID, "key-input").send_keys("query-key")
    d.find_element(By.ID, "key-save").click()
    wait(d).until(
        lambda d: any(
            o.get_attribute("value") == "legal" for o in d.find_elements(By.CSS_SELECTOR, "#model option")
        )
    )
    assert "query-key" not in d.current_url
    assert d.execute_script("return [localStorage.length, sessionStorage.length, document.cookie]") == [
        0,
        0,
        "",
    ]
