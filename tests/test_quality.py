"""Code-quality gates that CI enforces: lint, strict typing, one-way layering, a dry run with no network code."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "engine"

ROOT = ENGINE.parent


def test_the_import_contracts_hold() -> None:
    """The parts, arrows and "never" rules of docs/architecture.md, over the real imports (import-linter, pyproject.toml):
    function-level imports count; names imported only for type checkers do not."""
    exe = Path(sys.executable).parent / "lint-imports"
    if not exe.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    proc = subprocess.run([str(exe), "--no-cache"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_no_module_imports_itself_back() -> None:
    """No import cycle between two modules, type-checking imports included (a Protocol breaks what typing alone needs)."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("engine", exclude_type_checking_imports=False)
    cycles = sorted({tuple(sorted((m, d))) for m in graph.modules for d in graph.find_modules_directly_imported_by(m)
                     if graph.chain_exists(importer=d, imported=m)})
    assert not cycles, cycles


def test_the_architecture_page_names_every_part_of_the_contracts() -> None:
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    parts = {p.strip() for layer in contracts[0]["layers"] for p in layer.replace(":", "|").split("|")}
    page = (ROOT / "docs" / "architecture.md").read_text()
    assert not [p for p in sorted(parts) if f"`{p}`" not in page]
    assert {p.name for p in ENGINE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} - {p.removeprefix("engine.") for p in parts} \
        == {"testing"}  # every package is a part of the picture (the loopback test servers stand outside it)


def test_dry_run_imports_no_runtime_provider_or_network_code(tmp_path: Path) -> None:
    """`engine` is a lazy public list: importing it loads nothing; what the dry run touches must be dry-run code."""
    flow = Path(__file__).resolve().parents[1] / "workflows" / "conductor.flow"
    code = (
        "import sys\nfrom engine.cli.main import main\nrc = main(['validate', sys.argv[1]])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'aiohttp', 'llama_cpp', 'opentelemetry', 'selenium') "
        "or m.startswith(('engine.run', 'engine.providers', 'engine.session', 'engine.wiring')))\n"
        "print('IMPORTED:' + ','.join(bad))\nsys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(flow)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "IMPORTED:", f"the dry run imported: {proc.stdout}"


def test_runs_and_pages_import_nothing_of_opentelemetry_unless_traced(tmp_path: Path) -> None:
    """The otel extra is optional: a run, `baton view` and `baton serve`'s pages work without it and never load it."""
    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys\nfrom engine import run_flow_sync, load_pool, ScriptedProvider\nfrom engine.records.explain import load_recorded_run\n"
        "from engine.records.run_page import render_run_page\n"
        f"pool = load_pool({str(root / 'workflows' / 'models.toml')!r})\n"
        f"s = run_flow_sync({str(root / 'workflows' / 'route_label.flow')!r}, {{'question': 'q'}}, pool=pool, "
        f"providers={{'*': ScriptedProvider()}}, home={str(tmp_path)!r})\n"
        f"render_run_page(load_recorded_run(s.run_id, {str(tmp_path)!r}))\n"
        "import engine.serve.app\n"
        "print('IMPORTED:' + ','.join(sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "IMPORTED:", proc.stdout


# mypy takes half a minute without its cache: a slow test (CI runs it; `mypy --strict engine` is the quick way by hand)
@pytest.mark.parametrize("tool", [["ruff", "check", "engine", "tests", "bench"], pytest.param(["mypy", "engine"], marks=pytest.mark.slow)])
def test_lint_and_types_are_clean(tool: list[str]) -> None:
    exe = Path(sys.executable).parent / tool[0]
    if not exe.exists():
        pytest.skip(f"{tool[0]} is not installed (pip install -e '.[test]')")
    proc = subprocess.run([str(exe), *tool[1:]], capture_output=True, text=True, timeout=600, cwd=ENGINE.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_public_api_is_sorted_and_every_name_resolves() -> None:
    import engine

    assert engine.__all__ == sorted(engine.__all__)
    for name in engine.__all__:
        assert getattr(engine, name) is not None, name


def test_public_api_is_what_the_docs_name_and_type_checkers_see() -> None:
    """`__all__`, the lazy table and the TYPE_CHECKING block agree, and every public name is documented in docs/api.md."""
    import re

    import engine

    tree = ast.parse((ENGINE / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    typed_names = {a.name for n in block.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert set(engine.__all__) == typed_names == set(engine._WHERE)
    for name, module in engine._WHERE.items():  # each name is where the table says
        assert name in importlib.import_module(module).__dict__, (name, module)
    docs = (ENGINE.parent / "docs" / "api.md").read_text()
    undocumented = [n for n in engine.__all__ if not re.search(rf"\b{n}\b", docs)]
    assert not undocumented, f"public names docs/api.md does not mention: {undocumented}"
    assert (ENGINE / "py.typed").exists()
