"""A transcript of `baton lsp` answering a real client: a diagnostic and a hover (docs/editors.md shows it; run by hand).

    python bench/lsp_transcript.py
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lsp_bench import Client  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FLOW = '''version 1
flow review "Draft, then review"

input question

step draft {
  model: fast
  task: "Answer: {question}"
}

step review {
  model: strnog
  sees: draft
  task: "Check the draft against {question}."
}
'''


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="baton-lsp-transcript-"))
    shutil.copy(ROOT / "workflows" / "models.toml", folder / "models.toml")
    path = folder / "review.flow"
    path.write_text(FLOW)
    c = Client()
    rid = c.send("initialize", {"processId": None, "rootUri": folder.as_uri(), "capabilities": {}}, request=True)
    c.wait(lambda m: m.get("id") == rid)
    c.send("initialized", {})
    c.send("textDocument/didOpen", {"textDocument": {"uri": path.as_uri(), "languageId": "flow", "version": 1, "text": FLOW}})
    diagnostics = c.wait(lambda m: m.get("method") == "textDocument/publishDiagnostics")
    print("--> textDocument/didOpen review.flow\n<-- textDocument/publishDiagnostics")
    print(json.dumps(diagnostics["params"]["diagnostics"], indent=2))
    line = FLOW.split("\n").index("  model: fast")
    rid = c.send("textDocument/hover", {"textDocument": {"uri": path.as_uri()}, "position": {"line": line, "character": 10}}, request=True)
    print(f"--> textDocument/hover at {line + 1}:11 (the alias `fast`)\n<-- result")
    print(json.dumps(c.wait(lambda m: m.get("id") == rid)["result"], indent=2))
    c.close()


if __name__ == "__main__":
    main()
