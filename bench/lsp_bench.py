"""`baton lsp` on a keystroke: time from a change to its diagnostics, over stdio, on flows of 10 and 200 steps (run by hand).

    python bench/lsp_bench.py [--steps 200] [--edits 40]

A raw JSON-RPC client (no LSP library: what is measured is the server) opens a generated
flow, then sends `--edits` incremental changes, each a one-character edit inside a task
string, and waits for the `publishDiagnostics` of that version. Median and 90th
percentile, against a 10-step flow in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.generate import layered_flow  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Client:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.cli.main", "lsp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     cwd=ROOT)
        self.next_id = 0

    def send(self, method: str, params: Any, request: bool = False) -> int | None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
        if request:
            self.next_id += 1
            message["id"] = self.next_id
        body = json.dumps(message).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()
        return message.get("id")

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        length = 0
        while True:
            line = self.proc.stdout.readline().strip()
            if not line:
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return dict(json.loads(self.proc.stdout.read(length)))

    def wait(self, pred: Any) -> dict[str, Any]:
        while True:
            msg = self.read()
            if pred(msg):
                return msg

    def close(self) -> None:
        self.send("shutdown", None, request=True)
        self.send("exit", None)
        self.proc.wait(10)


def measure(steps: int, edits: int, folder: Path) -> list[float]:
    (folder / "models.toml").write_text((ROOT / "workflows" / "models.toml").read_text())
    path = folder / f"gen{steps}.flow"
    text = layered_flow(steps, model="fast")
    path.write_text(text)
    uri = path.as_uri()
    c = Client()
    rid = c.send("initialize", {"processId": None, "rootUri": folder.as_uri(), "capabilities": {}}, request=True)
    c.wait(lambda m: m.get("id") == rid)
    c.send("initialized", {})
    c.send("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "flow", "version": 1, "text": text}})
    c.wait(lambda m: m.get("method") == "textDocument/publishDiagnostics")
    line = text.split("\n").index(next(row for row in text.split("\n") if "task:" in row))
    col = text.split("\n")[line].index("Step") + 1
    times = []
    for version in range(2, edits + 2):
        change = {"range": {"start": {"line": line, "character": col}, "end": {"line": line, "character": col + 1}},
                  "text": "t" if version % 2 else "x"}
        t0 = time.perf_counter()
        c.send("textDocument/didChange", {"textDocument": {"uri": uri, "version": version}, "contentChanges": [change]})
        c.wait(lambda m, v=version: m.get("method") == "textDocument/publishDiagnostics" and m["params"].get("version") == v)
        times.append(time.perf_counter() - t0)
    c.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--edits", type=int, default=40)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="baton-lsp-bench-"))
    rows = [(n, measure(n, args.edits, folder)) for n in (10, args.steps)]
    base = statistics.median(rows[0][1])
    print(f"{'steps':>5} {'median':>9} {'p90':>9} {'x 10 steps':>10}")
    for n, times in rows:
        times.sort()
        median, p90 = statistics.median(times), times[int(len(times) * 0.9) - 1]
        print(f"{n:>5} {median * 1000:>7.1f} ms {p90 * 1000:>7.1f} ms {median / base:>10.1f}")


if __name__ == "__main__":
    main()
