"""Headless Chromium for the browser tests (Playwright's Python API driving Debian's chromium).

`.ci/run` installs the `chromium` package when it is missing; where it cannot be installed these
tests skip with the reason. Screenshots go to ``test-artifacts/screenshots/`` at the repository root.
"""

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (skips, saying why, where it is not installed).

    Module scope, not session: Playwright's sync API keeps an event loop running in the main thread
    while it is open, which would break every later test that calls ``asyncio.run``. So a module that
    uses this fixture holds browser tests only."""
    if not CHROMIUM.exists():
        pytest.skip(f"headless Chromium is not installed at {CHROMIUM} (Debian packages chromium, chromium-driver)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh page (1280x900) that fails the test on any JavaScript error it reports."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where tests save their screenshots (kept as CI artifacts)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
