"""The hostile suite in a real browser (Debian's headless Chromium, through Selenium): a page on another origin tries to
spend through `baton serve`, keyless and keyed (with the Basic login the browser cached from the run pages), with the
requests a page can send without a CORS preflight. The upstream's own request count says whether anything got through."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from engine.testing.chat_server import ChatServer
from engine.testing.loopback import LoopbackApp
from tests.hostile_serve import InProcessServer, hostile_pool, key_spec

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.test_viewer_browser import browser  # noqa: E402,F401  (the shared headless Chromium fixture)

pytestmark = pytest.mark.slow
TOKEN = "bk-browser-hostile-key-0123456789"

ATTACK = """<!doctype html><title>evil</title><body><script>
const target = "{target}";
const body = JSON.stringify({{model: "m", messages: [{{role: "user", content: "spend"}}]}});
Promise.allSettled([
  fetch(target + "/v1/chat/completions", {{method: "POST", mode: "no-cors", credentials: "include",
                                           headers: {{"Content-Type": "text/plain"}}, body}}),
  fetch(target + "/v1/chat/completions", {{method: "POST", mode: "no-cors", credentials: "include", body}}),
  fetch(target + "/v1/chat/completions", {{method: "POST", credentials: "include",
                                           headers: {{"Content-Type": "application/json"}}, body}}),
]).then(() => {{ document.title = "done"; }});
const form = document.createElement("form");
form.method = "POST"; form.action = target + "/v1/chat/completions"; form.enctype = "text/plain";
const field = document.createElement("input"); field.name = body.slice(0, -2); field.value = '"}}';
form.appendChild(field); document.body.appendChild(form);
</script>"""


class EvilSite:
    """A page on another loopback origin (another port is another origin)."""

    def __init__(self, target: str) -> None:
        async def page(_request: web.Request) -> web.Response:
            return web.Response(text=ATTACK.format(target=target), content_type="text/html")

        app = web.Application()
        app.router.add_get("/", page)
        self.server = LoopbackApp(app, "evil-site")

    def __enter__(self) -> str:
        self.server.start()
        return f"http://127.0.0.1:{self.server.port}/"

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


def attack(browser: WebDriver, evil: str) -> None:  # noqa: F811
    browser.get(evil)
    deadline = time.time() + 15
    while browser.title != "done" and time.time() < deadline:
        time.sleep(0.1)
    assert browser.title == "done"
    browser.execute_script("document.forms[0].submit()")  # a form post navigates: no CORS at all
    WebDriverWait(browser, 15).until(lambda d: "/v1/chat/completions" in d.current_url)  # the server has answered it


@pytest.fixture()
def upstream() -> Iterator[ChatServer]:
    with ChatServer() as server:
        yield server


def test_a_page_on_another_origin_cannot_spend_through_a_keyless_server(browser: WebDriver, upstream: ChatServer,  # noqa: F811
                                                                         tmp_path: Path) -> None:
    with InProcessServer(hostile_pool(upstream.url), tmp_path / "home") as served, EvilSite(served.url) as evil:
        attack(browser, evil)
    assert upstream.count() == 0


def test_a_page_on_another_origin_cannot_spend_with_the_login_the_browser_cached(browser: WebDriver, upstream: ChatServer,  # noqa: F811
                                                                                  tmp_path: Path) -> None:
    with InProcessServer(hostile_pool(upstream.url), tmp_path / "home", keys=key_spec("alice", TOKEN)) as served, \
            EvilSite(served.url) as evil:
        host = served.url.removeprefix("http://")
        browser.get(f"http://me:{TOKEN}@{host}/runs")  # the user opened the run pages: Chromium keeps the Basic login
        assert "Runs" in browser.page_source or "runs" in browser.title.lower()
        attack(browser, evil)
    assert upstream.count() == 0
