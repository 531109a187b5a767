"""Code-quality gates that CI enforces: lint, strict typing, one-way layering, a dry run with no network code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "engine"

#: Lower layers first; a module may import its own layer and the ones before it, never a later one.
LAYERS = [
    ("engine.errors", "engine.syntax", "engine.diagnostics"),
    ("engine.pool", "engine.model", "engine.checks", "engine.loading", "engine.router"),
    ("engine.graph", "engine.semdiff"),
    ("engine.run",),
    ("engine.providers", "engine.testing"),
    ("engine.wiring", "engine.session", "engine.records", "engine.tracing", "engine.lsp", "engine.router.report", "engine.router.from_eval", "engine.planner", "engine.eval", "engine.serve", "engine.api", "engine"),
    ("engine.cli",),
]


def layer_of(module: str) -> int:
    best = (-1, -1)
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best[1]:
                best = (i, len(p))
    assert best[0] >= 0, module
    return best[0]


def module_name(path: Path) -> str:
    rel = path.relative_to(ENGINE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def engine_imports(path: Path) -> list[str]:
    """Every engine module a file imports (at the top, in a function, or for type checkers)."""
    targets = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("engine"):
            targets.append(node.module)
        elif isinstance(node, ast.Import):
            targets += [a.name for a in node.names if a.name.startswith("engine")]
    return targets


def test_dependencies_point_one_way() -> None:
    problems = []
    for path in ENGINE.rglob("*.py"):
        mod = module_name(path)
        if mod == "engine":
            continue
        problems += [f"{mod} imports {target} (a higher layer)" for target in engine_imports(path) if layer_of(target) > layer_of(mod)]
    assert not problems, "\n".join(problems)


def test_the_cli_imports_only_the_public_api() -> None:
    """The CLI is a thin face over `engine.api`: it imports that (or `engine`), the standard library and itself."""
    problems = []
    for path in (ENGINE / "cli").rglob("*.py"):
        problems += [f"{path.name} imports {t}" for t in engine_imports(path)
                     if t not in ("engine", "engine.api") and not t.startswith("engine.cli")]
        if "import_module(f\"engine." in path.read_text().replace("engine.cli.", ""):
            problems.append(f"{path.name} imports engine modules dynamically")
    assert not problems, "\n".join(problems)


def test_dry_run_imports_no_runtime_provider_or_network_code(tmp_path: Path) -> None:
    """`engine.api` is a lazy facade: importing it loads nothing; what the dry run touches of it must be dry-run code."""
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
        "import sys\nfrom engine.api import run_flow_sync, load_pool, ScriptedProvider, load_recorded_run, render_run_page\n"
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


@pytest.mark.parametrize("tool", [["ruff", "check", "engine", "tests", "bench"], ["mypy", "engine"]])
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
    import engine.api

    source = (ENGINE / "__init__.py").read_text()
    typed_names = set(re.findall(r"^        (\w+),$", source.split("if TYPE_CHECKING:")[1].split("__all__")[0], re.M))
    assert set(engine.__all__) == typed_names and set(engine.__all__) <= set(engine.api.__all__)
    assert set(engine.api.__all__) == set(engine.api._WHERE)
    docs = (ENGINE.parent / "docs" / "api.md").read_text()
    undocumented = [n for n in engine.__all__ if not re.search(rf"\b{n}\b", docs)]
    assert not undocumented, f"public names docs/api.md does not mention: {undocumented}"
    assert (ENGINE / "py.typed").exists()


def test_exit_codes_come_from_one_table() -> None:
    """Every command returns a name from engine/cli/exits.py, never a bare number."""
    import re

    bare = []
    for path in (ENGINE / "cli").glob("*.py"):
        if path.name == "exits.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"return [1-9]\d*\b|fail\(.*, [0-9]+\)\s*$|\bexit\([1-9]", line):
                bare.append(f"{path.name}:{n}: {line.strip()}")
    assert not bare, "\n".join(bare)
