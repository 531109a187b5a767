"""The run viewer in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`) driven by Selenium.

Each page is opened as a person would open it (a file `baton view` wrote, or `baton serve`'s
`/runs/{id}`), asserted on through the DOM, clicked, and saved as a screenshot under the
test's tmp dir. `.ci/run` installs the browser; elsewhere the tests skip with how to get it,
except under CI (`CI` set), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

webdriver = pytest.importorskip("selenium.webdriver")

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from engine.records.explain import load_recorded_run  # noqa: E402
from engine.records.run_page import render_run_page  # noqa: E402
from engine.testing.chat_server import ChatServer, Reply  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.serve_harness import BatonServer, write_pool  # noqa: E402
from tests.viewer_runs import KEY, KEY_VARIABLE, XSS, record_run  # noqa: E402

pytestmark = pytest.mark.slow
EVAL = ROOT / "workflows" / "eval"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if CHROMIUM is None or DRIVER is None:
        message = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,1100"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(browser: WebDriver, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[object, Path]:
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    home = tmp_path / "home"
    summary, _ = record_run(kind, home)
    path = tmp_path / f"{kind}.html"
    path.write_text(render_run_page(load_recorded_run(summary.run_id, home)), encoding="utf-8")
    browser.get(path.as_uri())
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".node.selected"))
    return summary, path


def shoot(browser: WebDriver, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / f"{name}.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000  # a picture, not a blank page
    return shot


def node(browser: WebDriver, step: str):  # type: ignore[no-untyped-def]
    return browser.find_element(By.CSS_SELECTOR, f'.node[data-step="{step}"]')


def shown_detail(browser: WebDriver) -> str:
    (detail,) = [d for d in browser.find_elements(By.CSS_SELECTOR, ".detail") if d.is_displayed()]
    return str(detail.get_attribute("id"))


def assert_nodes_match_the_record(browser: WebDriver, summary) -> None:  # type: ignore[no-untyped-def]
    for name, step in summary.steps.items():
        found = browser.find_elements(By.CSS_SELECTOR, f'.node[data-step="{name}"]')
        if step.kind in ("step", "verify") and name in ("draft", "check"):  # loop members are drawn inside their loop
            continue
        assert len(found) == 1, name
        status = "resumed" if step.resumed else step.status
        assert found[0].get_attribute("data-status") == status, name
        assert found[0].get_attribute("data-model") == (step.model or ""), name


def test_route_page_in_the_browser(browser: WebDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary, _ = open_page(browser, "route", tmp_path, monkeypatch)
    assert_nodes_match_the_record(browser, summary)
    assert shown_detail(browser) == "detail-solved"  # the output step is open first
    node(browser, "triage").click()
    assert shown_detail(browser) == "detail-triage"
    detail = browser.find_element(By.ID, "detail-triage")
    assert "Label the question: code, math or other." in detail.text  # its prompt
    assert detail.find_element(By.CSS_SELECTOR, "pre.output").text == "code"  # its output
    assert browser.current_url.endswith("#triage")
    node(browser, "solve_code").click()
    output = browser.find_element(By.CSS_SELECTOR, "#detail-solve_code pre.output").text
    assert "<script>window.__xss=1</script></textarea><img src=x" in output  # shown as text ...
    assert browser.execute_script("return window.__xss") is None  # ... and never run
    assert not browser.find_elements(By.CSS_SELECTOR, "#run img") and not browser.find_elements(By.XPATH, "//b[text()='bold?']")
    rect = node(browser, "triage").find_element(By.CSS_SELECTOR, "rect.box")
    before = rect.get_attribute("fill")
    browser.find_element(By.CSS_SELECTOR, 'input[name=colour][value="cost"]').click()
    assert rect.get_attribute("fill") == rect.get_attribute("data-fill-cost") != before
    browser.find_element(By.CSS_SELECTOR, 'input[name=colour][value="status"]').click()
    assert KEY not in browser.page_source
    shoot(browser, tmp_path, "route")


def test_fuse_page_with_a_failed_member_in_the_browser(browser: WebDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary, _ = open_page(browser, "fuse", tmp_path, monkeypatch)
    assert_nodes_match_the_record(browser, summary)
    box = node(browser, "answer")
    members = {m.get_attribute("data-role"): m for m in box.find_elements(By.CSS_SELECTOR, "g.member")}
    assert list(members) == ["panel[0]", "panel[1]", "panel[2]", "judge"]
    assert members["panel[2]"].get_attribute("data-ok") == "0" and "panel[2] gemini\n\u2717 server_error" in members["panel[2]"].text
    assert members["judge"].get_attribute("data-ok") == "1" and "gpt" in members["judge"].text
    box.click()
    detail = browser.find_element(By.ID, "detail-answer")
    rows = detail.find_elements(By.CSS_SELECTOR, "table.attempts tr.fault")
    assert len(rows) >= 3 and "retry after server_error" in detail.text
    assert detail.find_element(By.CSS_SELECTOR, "pre.output").text == "Judged: Rayleigh scattering makes the sky blue."
    shoot(browser, tmp_path, "fuse")


def test_loop_page_in_the_browser(browser: WebDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary, _ = open_page(browser, "loop", tmp_path, monkeypatch)
    assert_nodes_match_the_record(browser, summary)
    box = node(browser, "refine")
    assert "round 1 \u2717 REVISE" in box.text and "round 3 \u2713 ACCEPT" in box.text
    box.click()
    detail = browser.find_element(By.ID, "detail-refine")
    text = str(detail.get_attribute("textContent"))  # all of it, also what is scrolled out of the panel's view
    assert "r2 draft prompt" in text and "r3 check prompt" in text
    shoot(browser, tmp_path, "loop")


def test_failed_run_page_in_the_browser(browser: WebDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary, _ = open_page(browser, "failed", tmp_path, monkeypatch)
    assert_nodes_match_the_record(browser, summary)
    assert shown_detail(browser) == "detail-code"  # the failed step is open first
    assert "failed" in browser.find_element(By.CSS_SELECTOR, "header .badge").text
    assert node(browser, "review").get_attribute("data-status") == "not_run"
    assert browser.execute_script("return window.__xss") is None
    shoot(browser, tmp_path, "failed")


SLOW_FLOW = """version 1
flow two_steps "Two steps, one after the other"

input question

step first {
  model: fast
  task: "Answer: {question}"
}

step second {
  model: strong
  sees: first
  task: "Improve the answer."
}
"""


def test_a_run_in_flight_updates_live_on_baton_serve(browser: WebDriver, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "two_steps.flow").write_text(SLOW_FLOW)
    with ChatServer() as upstream:
        upstream.script["fast"] = [Reply(text="first answer", delay=2.0)]
        upstream.script["strong"] = [Reply(text="second answer " + XSS, delay=2.0)]
        pool = write_pool(upstream.url, tmp_path / "pool.toml")
        with BatonServer("--flows", str(flows), "--pool", str(pool), home=tmp_path / "home") as server:
            base = server.url.removesuffix("/v1")
            request = threading.Thread(target=lambda: httpx.post(f"{server.url}/chat/completions", timeout=60, json={
                "model": "flow/two_steps", "messages": [{"role": "user", "content": "why?"}]}))
            request.start()
            runs = tmp_path / "home" / "runs"
            deadline = time.time() + 20
            while time.time() < deadline and not (runs.is_dir() and any(runs.iterdir())):
                time.sleep(0.05)
            (run_dir,) = runs.iterdir()
            browser.get(f"{base}/runs/{run_dir.name}")
            body = browser.find_element(By.TAG_NAME, "body")
            assert body.get_attribute("data-status") == "running" and body.get_attribute("data-live") == "1"
            browser.execute_script("window.__same_page = 42")
            # the page swaps its nodes in place as it updates: an element found just before a swap is stale, so look again
            live = WebDriverWait(browser, 30, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))
            live.until(lambda d: node(d, "first").get_attribute("data-status") == "ok")
            assert node(browser, "second").get_attribute("data-status") == "pending"
            shoot(browser, tmp_path, "live-running")
            live.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-status") == "ok")
            assert browser.execute_script("return window.__same_page") == 42  # updated in place, not reloaded
            assert node(browser, "second").get_attribute("data-status") == "ok"
            assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-live") == "0"  # it stops polling
            assert browser.execute_script("return window.__xss") is None
            shoot(browser, tmp_path, "live-done")
            request.join(30)
            browser.get(f"{base}/runs")
            link = browser.find_element(By.CSS_SELECTOR, f'tr.run[data-run="{run_dir.name}"] a')
            link.click()
            WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".node.selected"))
            assert "two_steps" in browser.find_element(By.TAG_NAME, "h1").text


@pytest.mark.parametrize("width", [390, 1280])
def test_the_page_works_on_a_phone_and_a_desktop(browser: WebDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    """At 390 px the DAG panel collapsed to 0 px and the details ran off the right edge: the graph's panel has a width,
    nothing is wider than the screen, and every node can be scrolled to and clicked."""
    browser.set_window_size(width, 900)
    try:
        summary, _ = open_page(browser, "route", tmp_path, monkeypatch)
        viewport = browser.execute_script("return document.documentElement.clientWidth")
        graph = browser.find_element(By.ID, "graph").rect
        details = browser.find_element(By.ID, "details").rect
        assert graph["width"] > 200 and details["width"] > 200, (graph, details)
        assert graph["x"] + graph["width"] <= viewport + 1 and details["x"] + details["width"] <= viewport + 1
        assert browser.execute_script("return document.documentElement.scrollWidth") <= viewport + 1  # no sideways page
        names = [str(n.get_attribute("data-step")) for n in browser.find_elements(By.CSS_SELECTOR, ".node")]
        assert {"triage", "solve_code", "solved"} <= set(names)
        for name in names:  # every node of the DAG, not only the ones in view: each is scrolled to and clicked
            target = node(browser, name)
            browser.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'center'})", target)
            target.click()
            assert shown_detail(browser) == f"detail-{name}"
        shoot(browser, tmp_path, f"route-{width}")
    finally:
        browser.set_window_size(1500, 1100)


@pytest.mark.parametrize("width", [390, 1280])
def test_the_compare_report_fits_a_phone_and_a_desktop(browser: WebDriver, tmp_path: Path, width: int) -> None:
    """The compare report's 1056 px table ran off a phone's screen: the tables scroll inside their own box, the page
    does not scroll sideways, and the chart is scaled to the screen; the reference rows are on the page."""
    flows = [str(EVAL / f"{n}.flow") for n in ("solo_gpt4o", "solo_gpt4o_mini", "solo_haiku", "vote3")]
    report = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "compare", *flows, "--dataset", str(EVAL / "gsm8k" / "items.jsonl"),
                           "--scorer", "number", "--limit", "200", "--report", str(report), "--home", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={k: v for k, v in os.environ.items() if k != "BATON_POOL"})
    assert proc.returncode == 0, proc.stderr
    browser.set_window_size(width, 900)
    try:
        browser.get(report.as_uri())
        viewport = browser.execute_script("return document.documentElement.clientWidth")
        assert browser.execute_script("return document.documentElement.scrollWidth") <= viewport + 1  # no sideways page
        for table in ("flows", "references"):
            box = browser.find_element(By.ID, table).find_element(By.XPATH, "..").rect
            assert box["width"] > 200 and box["x"] + box["width"] <= viewport + 1, (table, box)
        chart = browser.find_element(By.ID, "pareto-chart").rect
        assert 200 < chart["width"] <= viewport
        rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#references tr")]
        assert any(r.startswith("best flow") for r in rows) and any(r.startswith("oracle") for r in rows), rows
        shoot(browser, tmp_path, f"report-{width}")
    finally:
        browser.set_window_size(1500, 1100)
