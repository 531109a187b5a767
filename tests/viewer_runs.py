"""Recorded runs for the viewer's tests: a route, a fuse with a failed member, a loop, a failed run.

Each is a real run through `Session`, recorded in a run home; the model replies are scripted
(the in-process provider) so the pages' content is known. XSS is a reply that would run
script if the page did not escape it; KEY is a provider key pasted into an input.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.errors import RunError
from engine.pool import Pool, load_pool
from engine.providers.scripted import ScriptedProvider
from engine.run.protocol import ProviderFault
from engine.run.trace import RunSummary
from engine.session import Session
from tests.conftest import WORKFLOWS

XSS = '<script>window.__xss=1</script></textarea><img src=x onerror="window.__xss=2"><b>bold?</b>'
KEY = "sk-viewer-test-9d2f7c1e5b"
KEY_VARIABLE = "OPENAI_API_KEY"


def pool() -> Pool:
    return load_pool(WORKFLOWS / "models.toml")


def scripts(payload: str) -> dict[str, tuple[str, dict[str, object]]]:
    """Each run's flow and its scripted replies; `payload` is added to the replies that a page must escape."""
    return {
        "route": ("route_label.flow", {"triage": "code", "solve_code": "def stable_sort(xs): return sorted(xs)  " + payload}),
        "fuse": ("fuse_panel.flow", {"gemini": ProviderFault("server_error", "HTTP 503 upstream overloaded", status=503),
                                     "claude": "Rayleigh scattering: blue light scatters most.",
                                     "gpt": ["Sunlight scatters off air molecules.", "Judged: Rayleigh scattering makes the sky blue."]}),
        "loop": ("verify_loop.flow", {"draft": ["4", "It is 4.", "2 + 2 = 4, since adding two and two makes four."],
                                      "check": ["REVISE: show the working", "REVISE: still no working", "ACCEPT"]}),
        "failed": ("conductor.flow", {"code": "I would rather not write code " + payload}),
    }


QUESTION = f"Why is the sky blue? {XSS} (my key is {KEY})"


async def _record(kind: str, home: Path, question: str, payload: str) -> tuple[RunSummary, ScriptedProvider]:
    flow, script = scripts(payload)[kind]
    provider = ScriptedProvider(script=script, latency=0.01)  # type: ignore[arg-type]
    async with Session(pool(), home=home, cache=False, providers={"*": provider}, sleep=_no_sleep) as session:
        try:
            summary = await session.run(WORKFLOWS / flow, {"question": question})
        except RunError as err:
            assert err.summary is not None
            summary = err.summary
    return summary, provider


async def _no_sleep(_seconds: float) -> None:
    return None


def record_run(kind: str, home: Path, question: str = QUESTION, payload: str = XSS) -> tuple[RunSummary, ScriptedProvider]:
    """Run and record one of the four runs (the key variable must be set by the caller, so the session scrubs it)."""
    return asyncio.run(_record(kind, home, question, payload))
