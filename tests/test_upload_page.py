"""The upload page (deploy/envoy/index.html, served by Envoy at `/`) driven in a real browser.

Headless Chromium from Debian (/usr/bin/chromium, installed by `make system-deps` as root)
through Playwright, against the whole stack: choose a PDF and a level, submit, watch the
page's progress, download the result; and a file that is not a PDF shows the API's reason.
Playwright's own browser downloads are never used (`playwright install` is not run): the
browser is launched from `executable_path`, and every host name but 127.0.0.1 resolves to
nothing, so the browser makes no connection off this machine.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pikepdf
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from devtools.stack.stack import Stack
from tests.e2e_client import RestClient
from tests.plugins.stack import API_KEYS

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The page only talks to its own origin; anything else (Chromium's own lookups) fails at once.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
SOURCE = Path(__file__).parent / "data" / "pypdf__jpeg.pdf"
# Generous: a busy 2-core machine compresses while the page polls every 0.7 s.
JOB_TIMEOUT_MS = 120_000
HTTP_ERROR_NOTE = "Failed to load resource: the server responded with a status of"

# Records every text of #status (with the progress bar's state and the button's) as it
# changes, so the test sees the states the page went through, however fast they pass.
RECORD_STATUS = """
window.__statuses = [];
document.addEventListener("DOMContentLoaded", () => {
  const status = document.getElementById("status");
  const progress = document.getElementById("progress");
  const button = document.getElementById("go");
  new MutationObserver(() => window.__statuses.push({
    text: status.textContent, error: status.className === "error",
    progressHidden: progress.hidden, progress: progress.value, busy: button.disabled,
  })).observe(status, { childList: true, characterData: true, subtree: true, attributes: true });
});
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.skip(
            f"CHROMIUM NOT INSTALLED ({CHROMIUM}): the upload page browser tests are skipped. Install "
            "Debian's chromium (`make system-deps` as root) or set TEST_CHROMIUM=/path/to/chromium."
        )
    with sync_playwright() as playwright:
        # A plain launch: Playwright gives the browser a new, empty profile and deletes it after.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    context = browser.new_context(accept_downloads=True, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(30_000)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    page.on("console", lambda message: problems.append(message.text) if is_problem(message) else None)
    page.add_init_script(RECORD_STATUS)
    page.goto(stack.url + "/")
    try:
        yield page
    finally:
        context.close()
    # Script errors and content-security-policy violations show up here.
    assert not problems, problems


def is_problem(message: ConsoleMessage) -> bool:
    """A console error other than Chromium's note on an HTTP error answer (the tests check what
    the page shows for those): script errors, content-security-policy violations, network errors."""
    return message.type == "error" and not message.text.startswith(HTTP_ERROR_NOTE)


def statuses(page: Page) -> list[dict[str, Any]]:
    recorded: list[dict[str, Any]] = page.evaluate("window.__statuses")
    return recorded


def test_compress_a_pdf_in_the_browser(page: Page, stack: Stack, tmp_path: Path) -> None:
    name = f"browser {uuid.uuid4().hex[:8]}.pdf"
    source = tmp_path / name
    source.write_bytes(SOURCE.read_bytes())
    assert page.locator("#progress").is_hidden()
    page.set_input_files("#file", source)
    page.check("input[name=level][value=high]")
    page.fill("#key", API_KEYS["acme"])
    with page.expect_request(lambda r: r.method == "POST" and "/v1/jobs?" in r.url) as created:
        page.click("#go")
    query = parse_qs(urlsplit(created.value.url).query)
    assert (query["filename"], query["level"]) == ([name], ["high"])

    link = page.locator("#status a")
    link.wait_for(timeout=JOB_TIMEOUT_MS)
    seen = statuses(page)
    assert seen[0]["text"] == f"Uploading {name} ({source.stat().st_size:,} bytes)…"
    assert seen[0]["busy"]
    assert not seen[0]["progressHidden"]
    assert not any(state["error"] for state in seen), seen
    # The created job is QUEUED, so the page shows that state at least once while it polls.
    assert "queued…" in [state["text"] for state in seen], seen
    done = seen[-1]
    assert done["text"].startswith("Done: "), seen
    assert (done["progress"], done["busy"]) == (100, False)
    assert page.locator("#go").is_enabled()

    listed = RestClient(stack.url, API_KEYS["acme"]).request("GET", "/v1/jobs?page_size=100").json()["jobs"]
    [stored] = [job for job in listed if job["filename"] == name]
    assert (stored["state"], stored["level"]) == ("JOB_STATE_SUCCEEDED", "high")
    assert f"{int(stored['input_size_bytes']):,} → {int(stored['output_size_bytes']):,} bytes" in done["text"]

    expected_name = name.removesuffix(".pdf") + "-smaller.pdf"
    assert link.inner_text() == f"Download {expected_name}"
    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert download.suggested_filename == expected_name
    result = Path(download.path()).read_bytes()
    assert len(result) == int(stored["output_size_bytes"]) <= source.stat().st_size
    assert hashlib.sha256(result).hexdigest() == stored["output_sha256"]
    with pikepdf.open(io.BytesIO(result)) as output, pikepdf.open(source) as original:
        assert len(output.pages) == len(original.pages)


def test_a_file_that_is_not_a_pdf_shows_the_reason(page: Page) -> None:
    page.set_input_files(
        "#file", files=[{"name": "notes.pdf", "mimeType": "application/pdf", "buffer": b"just some notes\n" * 100}]
    )
    page.fill("#key", API_KEYS["acme"])
    page.click("#go")
    error = page.locator("#status.error")
    error.wait_for()
    assert error.inner_text() == "NOT_A_PDF: the file is not a PDF (no %PDF- header)"
    assert page.locator("#status a").count() == 0
    assert page.locator("#go").is_enabled()
