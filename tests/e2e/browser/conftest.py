"""Real browser SDKs in headless Chromium, served from another origin than the router.

Chromium is Debian's (``/usr/bin/chromium``, or ``ROUTER_TEST_CHROMIUM``), driven by
Playwright for Python; Playwright never downloads a browser here. The SDKs come from npm
(``package.json`` / ``package-lock.json`` beside this file): ``scripts/ensure-browser.sh``
(run by ``make test`` and ``make pytest``) installs chromium and runs ``npm ci`` and
``npm run build`` (which bundles ``@segment/analytics-consent-tools``, the only one without a
prebuilt browser bundle). When something is missing the tests fail and say so;
``ROUTER_SKIP_BROWSER_TESTS=1`` skips them instead (for machines without a browser).

No request may leave for the SDK vendors' CDNs or control planes: analytics.js gets
``cdnSettings``, RudderStack ``getSourceConfig``, and every request the page makes is recorded
so a test can check that only the page server and the router were asked.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import (
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    async_playwright,
)

HERE = Path(__file__).resolve().parent
CHROMIUM = Path(os.environ.get("ROUTER_TEST_CHROMIUM", "/usr/bin/chromium"))
SKIP_VARIABLE = "ROUTER_SKIP_BROWSER_TESTS"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ASSETS = {
    "analytics-next.js": HERE / "node_modules/@segment/analytics-next/dist/umd/index.js",
    "consent-tools.js": HERE / "build/consent-tools.js",
    "rudderstack.js": HERE
    / "node_modules/@rudderstack/analytics-js/dist/npm/modern/bundled/umd/index.js",
}
"""The SDKs' own prebuilt browser bundles (consent-tools: bundled by ``npm run build``)."""


@pytest.fixture(scope="session")
def browser_ready() -> None:
    """Fail (or skip, when opted out) unless chromium and the npm packages are installed."""
    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(f"browser tests skipped: {SKIP_VARIABLE}=1")
    missing = [str(CHROMIUM)] if not os.access(CHROMIUM, os.X_OK) else []
    missing += [str(path.relative_to(HERE)) for path in ASSETS.values() if not path.is_file()]
    if missing:
        pytest.fail(
            f"the browser tests need {', '.join(missing)}: run scripts/ensure-browser.sh "
            f"(make test and make pytest do), or set {SKIP_VARIABLE}=1 to skip them",
            pytrace=False,
        )


@dataclass
class PageServer:
    """The web site: HTML pages added by the test, the SDK bundles under ``/sdk/``."""

    pages: dict[str, str] = field(default_factory=dict)
    origin: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/sdk/{name}", self._asset)
        app.router.add_get("/{name}.html", self._page)
        app.router.add_get("/favicon.ico", self._favicon)
        return app

    async def _asset(self, request: web.Request) -> web.StreamResponse:
        path = ASSETS.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Content-Type": "text/javascript"})

    async def _favicon(self, request: web.Request) -> web.Response:
        del request
        return web.Response(status=204)

    async def _page(self, request: web.Request) -> web.Response:
        html = self.pages.get(request.match_info["name"])
        if html is None:
            raise web.HTTPNotFound()
        return web.Response(text=html, content_type="text/html")

    def url(self, name: str) -> str:
        return f"{self.origin}/{name}.html"


@pytest.fixture
async def site(browser_ready: None) -> AsyncIterator[PageServer]:
    """The page server on its own port: another origin than the router's."""
    del browser_ready
    state = PageServer()
    server = TestServer(state.app(), host="127.0.0.1")
    await server.start_server()
    state.origin = str(server.make_url("")).rstrip("/")
    yield state
    await server.close()


@dataclass
class Seen:
    """What the browser did: every request URL, failed requests, error answers, console errors."""

    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    error_answers: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("request", self._request)
        page.on("requestfailed", self._failed)
        page.on("response", self._response)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console_errors.append(f"pageerror: {error}"))

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)

    def _failed(self, request: Request) -> None:
        self.failed.append(f"{request.method} {request.url}: {request.failure}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.error_answers.append(f"{response.status} {response.url}")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def foreign(self, *origins: str) -> list[str]:
        """Requests to anything other than ``origins`` (a CDN, a control plane...)."""
        return [url for url in self.requests if not url.startswith(origins)]


@pytest.fixture
async def browser(browser_ready: None, tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """Debian's chromium, headless, with a new empty profile."""
    del browser_ready
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
        )
        try:
            yield context
        finally:
            await context.close()


@pytest.fixture
def seen() -> Seen:
    """A recorder to attach to pages with ``seen.watch(page)``."""
    return Seen()
