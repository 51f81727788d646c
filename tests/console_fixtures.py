"""Fixtures for the console's tests: the app served over plain HTTP (as a
browser on this machine reaches it), console users, and a real headless
Chromium driven by Playwright, with a screenshot of the page when a test
fails (in $OUTBOX_TEST_ARTIFACTS, default .outbox/test-artifacts).

Registered for every test module by `pytest_plugins` in tests/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tests.api_fixtures import app_settings, run_server
from tests.conftest import REPO

PASSWORD = "correct horse battery staple"
# The system Chromium (Debian's `chromium`): Playwright's own browser builds
# can't be downloaded here. scripts/_bootstrap.sh installs it when it can.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SKIPPED = "BROWSER TESTS SKIPPED"
ARTIFACTS = Path(os.environ.get("OUTBOX_TEST_ARTIFACTS", REPO / ".outbox" / "test-artifacts"))


@pytest.fixture(scope="session")
def console_app(database_url: str) -> Any:
    from outbox.api import create_app

    return create_app(app_settings(database_url, public_url=None))


@pytest.fixture(scope="session")
def console_server(console_app: Any) -> Iterator[str]:
    with run_server(console_app) as url:
        yield url


@pytest.fixture
def console_url(console_server: str, console_app: Any, api_db: Engine) -> str:
    """The console's base URL, its tables empty and its sign-in limits fresh."""
    from outbox.api.limits import LoginLimits

    console_app.state.outbox.login_limits = LoginLimits()
    return console_server


@pytest.fixture
def console_user(api_db: Engine) -> Callable[..., str]:
    """Create a user (password PASSWORD); returns the email."""
    from outbox.admin.users import create_user

    def _make(email: str = "ana@example.com", role: str = "agent",
              workspace: str = "default") -> str:
        with Session(api_db) as s, s.begin():
            create_user(s, workspace_id=workspace, email=email, role=role, password=PASSWORD)
        return email

    return _make


def no_browser(why: str) -> NoReturn:
    """Skip the browser test, loudly; or fail it where the browser is required
    (OUTBOX_REQUIRE_BROWSER=1: CI, whose run must not pass without them)."""
    if os.environ.get("OUTBOX_REQUIRE_BROWSER", "0") == "1":
        pytest.fail(f"OUTBOX_REQUIRE_BROWSER=1 but {why}", pytrace=False)
    pytest.skip(f"{SKIPPED}: {why}")


def chromium_path() -> str | None:
    return shutil.which("chromium") or (
        "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


@pytest.fixture
def page(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A page of a new headless Chromium with a profile of its own (no cookies).
    Indirect parameters (a dict) go to the browser context: `timezone_id`..."""
    executable = chromium_path()
    if executable is None:
        no_browser("no chromium on this machine (scripts/test installs Debian's chromium "
                   "when run as root; or: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        no_browser(f"playwright can't be imported ({exc}); scripts/test installs it")

    with tempfile.TemporaryDirectory(prefix="outbox-chromium-") as profile, \
            sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800}, locale="en-US",
            **getattr(request, "param", {}))
        context.set_default_timeout(15_000)
        pg = context.pages[0] if context.pages else context.new_page()
        problems: list[str] = []
        # Errors in the browser's console (a CSP violation is one), and
        # answers of 400 and up (the event stream is allowed to be missing:
        # the pages fall back to polling without it).
        pg.on("console", lambda m: problems.append(m.text) if m.type == "error"
              and not m.text.startswith("Failed to load resource") else None)
        pg.on("response", lambda r: problems.append(f"{r.status} {r.url}")
              if r.status >= 400 and "/v1/events/stream" not in r.url else None)
        pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        pg.console_problems = problems  # type: ignore[attr-defined]
        try:
            yield pg
        finally:
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                shot = ARTIFACTS / f"{request.node.name}.png"
                try:
                    pg.screenshot(path=str(shot), full_page=True)
                    print(f"screenshot of the failing page: {shot}")
                except Exception as exc:  # the browser may be what failed
                    print(f"no screenshot: {exc}")
            context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    """The call's outcome on the test item, for `page` to see at teardown."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """A skipped browser test is easy to miss among the dots: say it last, in red."""
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if SKIPPED in str(getattr(r, "longrepr", ""))]
    if skipped:
        reason = str(skipped[0].longrepr[2]) if isinstance(skipped[0].longrepr, tuple) else ""
        terminalreporter.write_sep("!", f"{len(skipped)} browser test(s) SKIPPED", red=True)
        terminalreporter.write_line(reason, red=True)
