"""Live progress of a run on stderr: a status line on a terminal, plain lines otherwise."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from engine.terminal import one_line


class ProgressPrinter:
    """Receives executor events; shows running steps, finished steps, retries and spend so far."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.live = tty and not os.environ.get("NO_COLOR") if live is None else live
        self.running: set[str] = set()
        self.spent = 0.0
        self.calls = 0
        self.t0 = time.perf_counter()

    def _line(self, text: str) -> None:
        text = one_line(text)  # step names are ours; reasons, errors and labels may quote a provider
        if self.live:
            self.stream.write("\r\x1b[2K" + text + "\n")
            self._status()
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _status(self) -> None:
        if not self.live:
            return
        running = one_line(", ".join(sorted(self.running)) or "-")
        self.stream.write(f"\r\x1b[2K  {time.perf_counter() - self.t0:6.1f}s  ${self.spent:.4f}  {self.calls} calls  running: {running}")
        self.stream.flush()

    def __call__(self, event: str, f: dict[str, Any]) -> None:
        if event == "step_started":
            self.running.add(f["step"])
            if not self.live:
                self._line(f"step {f['step']}: started")
            self._status()
        elif event == "attempt":
            if f["status"] in ("ok", "fault", "rejected"):
                self.calls += 1
            self.spent += float(f.get("cost") or 0.0)
            if f["status"] == "fault":
                self._line(f"step {f['step']}: {f['alias']} failed ({f['cause']}): {f['reason'][:120]}")
            elif f["status"] == "rejected":
                self._line(f"step {f['step']}: {f['alias']} reply rejected: {f['reason']}; escalating")
            elif f["status"] == "cache_hit":
                self._line(f"step {f['step']}: {f['alias']} cache hit ($0)" + (", truncated at max_tokens" if f.get("truncated") else ""))
            if f["status"] == "ok" and f.get("truncated"):
                self._line(f"step {f['step']}: {f['alias']} reply truncated at max_tokens (finish_reason length); kept")
            self._status()
        elif event == "warning":
            self._line(f"warning: {f['message']}")
        elif event == "retry":
            self._line(f"step {f['step']}: retrying {f['alias']} in {f['delay_s']:.1f}s")
        elif event == "step_finished":
            self.running.discard(f["step"])
            if f["status"] == "ok":
                extra = " (resumed: not called again)" if f.get("resumed") else ""
                model = f" by {f['model']}" if f.get("model") else ""
                self._line(f"step {f['step']}: ok{model}, ${f['cost']:.4f}, {f['latency_ms'] / 1000:.2f}s{extra}")
            elif f["status"] == "skipped":
                self._line(f"step {f['step']}: skipped ({f['reason']})")
            elif f["status"] == "failed":
                self._line(f"step {f['step']}: FAILED: {f['error']}")
        elif event == "route_decision":
            self._line(f"route {f['step']}: {f['matched']} -> {f['chosen']} (skipped: {', '.join(f['skipped']) or 'none'})")
        elif event == "verdict":
            self._line(f"loop {f['step']}: round {f['round']} {'accepted' if f['accepted'] else 'rejected'} by {f['verifier']}")

    def close(self) -> None:
        """Clear the live line (once: closing again writes nothing)."""
        if self.live:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.live = False
