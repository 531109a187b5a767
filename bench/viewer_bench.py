"""The run viewer on large runs: HTML size, Python render time, and time to a usable page in headless Chromium (run by hand).

    python bench/viewer_bench.py [--steps 200] [--repeat 5]
    python bench/viewer_bench.py --screenshots docs/img   # the pictures in docs/viewer.md

Shapes, each recorded through `Session` with the in-process scripted provider (replies of
~400 characters, as a short model answer):

- one: a single step (the baseline every ratio is against, measured in the same run);
- chain: `steps` steps, each seeing the two before it (200 layers: the tallest page);
- wide: `steps` steps in layers of ten, each seeing two of the layer above (the widest page).

"Usable" is Chromium's load event plus the page's script having selected a node (the
details panel is shown): what a person waits for. Median of `repeat` loads of each page.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.generate import layered_flow  # noqa: E402
from engine.loading import check_source
from engine.pool import load_pool
from engine.providers.scripted import ScriptedProvider
from engine.records.explain import load_recorded_run  # noqa: E402
from engine.records.run_page import render_run_page  # noqa: E402
from engine.session import Session

ROOT = Path(__file__).resolve().parents[1]
REPLY = ("A considered answer to the step, with a little reasoning and a result. " * 6).strip()


def wide_flow(steps: int, width: int = 10) -> str:
    out = ["version 1", f'flow wide_{steps} "Layers of {width}"', "input question", ""]
    for i in range(steps):
        layer, pos = divmod(i, width)
        seen = [f"s{(layer - 1) * width + (pos + k) % width}" for k in (0, 1)] if layer else []
        sees = f"  sees: {', '.join(seen)}\n" if seen else ""
        out.append(f"step s{i} {{\n  model: fast\n{sees}  task: \"Part {i} of {{question}}\"\n}}\n")
    last = [f"s{i}" for i in range(steps - width, steps)]
    out.append(f"step final {{\n  model: fast\n  sees: {', '.join(last)}\n  task: \"Combine.\"\n}}\n\noutput final")
    return "\n".join(out) + "\n"


async def record(source: str, home: Path) -> str:
    pool = load_pool(ROOT / "workflows" / "models.toml")
    flow = check_source(source, pool, "bench.flow").flow
    assert flow is not None
    async with Session(pool, home=home, cache=False, providers={"*": ScriptedProvider(default=lambda _r: REPLY)}) as session:
        summary = await session.run(flow, {"question": "How should a team split this work?"})
    return summary.run_id


def browser():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,1100"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)


def time_to_usable(driver, path: Path) -> float:  # type: ignore[no-untyped-def]
    driver.get("about:blank")
    t0 = time.perf_counter()
    driver.get(path.as_uri())  # returns after the load event
    while not driver.execute_script("return document.querySelector('.detail.shown') !== null"):
        time.sleep(0.005)
    return time.perf_counter() - t0


def screenshots(folder: Path) -> None:
    """The route and fuse runs of the viewer's tests, with a plain question, as docs/viewer.md shows them."""
    from tests.viewer_runs import record_run

    folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="baton-viewer-shots-"))
    driver = browser()
    try:
        driver.set_window_size(1400, 860)
        for kind, click, question in (("route", "solved", "Write a stable sort for a nearly sorted list."),
                                      ("fuse", "answer", "Why is the sky blue?")):
            summary, _ = record_run(kind, work / kind, question, "")
            page = work / f"{kind}.html"
            page.write_text(render_run_page(load_recorded_run(summary.run_id, work / kind)), encoding="utf-8")
            driver.get(page.as_uri() + f"#{click}")
            time.sleep(0.3)
            driver.save_screenshot(str(folder / f"viewer-{kind}.png"))
            print(folder / f"viewer-{kind}.png")
    finally:
        driver.quit()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--screenshots", metavar="DIR", type=Path, help="save the docs' screenshots in DIR and exit")
    args = ap.parse_args()
    if args.screenshots:
        screenshots(args.screenshots)
        return
    work = Path(tempfile.mkdtemp(prefix="baton-viewer-bench-"))
    shapes = {"one": layered_flow(1, model="fast"), "chain": layered_flow(args.steps, model="fast"), "wide": wide_flow(args.steps)}
    driver = browser()
    rows = []
    try:
        for name, source in shapes.items():
            home = work / name
            run_id = asyncio.run(record(source, home))
            t0 = time.perf_counter()
            page = render_run_page(load_recorded_run(run_id, home))
            render_s = time.perf_counter() - t0
            path = work / f"{name}.html"
            path.write_text(page, encoding="utf-8")
            loads = [time_to_usable(driver, path) for _ in range(args.repeat)]
            rows.append((name, page.count('class="node'), len(page.encode()), render_s, statistics.median(loads)))
    finally:
        driver.quit()
    base = rows[0][4]
    print(f"{'shape':<6} {'nodes':>5} {'HTML':>9} {'render (Python)':>16} {'usable in Chromium':>19} {'x one':>6}")
    for name, nodes, size, render_s, usable in rows:
        print(f"{name:<6} {nodes:>5} {size / 1e6:>7.2f} MB {render_s * 1000:>13.0f} ms {usable * 1000:>16.0f} ms {usable / base:>6.1f}")
    print(f"(pages in {work})")


if __name__ == "__main__":
    main()
