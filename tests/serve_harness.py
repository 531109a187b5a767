"""A real `baton serve` in a subprocess, on loopback, with the loopback chat server upstream."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from engine.pool import load_pool
from tests.conftest import WORKFLOWS


def write_pool(url: str, path: Path, prices: dict[str, tuple[float, float]] | None = None) -> Path:
    """Every alias of the reference pool, served by the loopback server under model id = alias, as a TOML file."""
    base = load_pool(WORKFLOWS / "models.toml")
    lines = ["max_concurrency = 1024", "", "[providers.loop]", 'kind = "openai"', f'base_url = "{url}"', "max_concurrency = 256", ""]
    for alias, spec in base.models.items():
        inp, out = (prices or {}).get(alias, (spec.input_price, spec.output_price))
        lines += [f"[models.{alias}]", 'provider = "loop"', f'id = "{alias}"', f"input_price = {inp}", f"output_price = {out}", ""]
    path.write_text("\n".join(lines))
    return path


class BatonServer:
    """`baton serve ... --port 0`; `url` once it listens. Stop with `stop()` (SIGTERM) or `kill()` (SIGKILL)."""

    def __init__(self, *args: str, home: Path, env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.home = home
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.log: list[str] = []

    def start(self, timeout: float = 30.0) -> BatonServer:
        cmd = [sys.executable, "-m", "engine.cli.main", "serve", "--port", "0", "--home", str(self.home), *self.args]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=self.env)
        deadline = time.time() + timeout
        assert self.proc.stderr is not None
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"(http://[\d.]+:\d+/v1)", line)
            if m:
                self.url = m.group(1)
                threading.Thread(target=self._drain, daemon=True).start()  # a full stderr pipe would block the server
                return self
        raise RuntimeError("baton serve did not start:\n" + "".join(self.log) + (self.proc.stderr.read() if self.proc.poll() is not None else ""))

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def __enter__(self) -> BatonServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
