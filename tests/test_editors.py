"""Editor support files: the TextMate grammar is generated from grammar/flow.lark, and a real TextMate engine
(vscode-textmate + vscode-oniguruma, from the npm registry) gives every reference flow the expected scopes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from engine.lsp.textmate import textmate_grammar
from tests.conftest import ROOT, WORKFLOWS
from tests.helpers import npm_packages

GRAMMAR = ROOT / "editors" / "vscode" / "syntaxes" / "flow.tmLanguage.json"
TOKENIZER = ROOT / "editors" / "test" / "tokenize.mjs"
#: npm packages of the engine VS Code itself uses; installed once per machine into the pytest cache.
ENGINE_PACKAGES = ("vscode-textmate@9", "vscode-oniguruma@2")


def test_the_committed_grammar_is_the_generated_one() -> None:
    assert json.loads(GRAMMAR.read_text()) == textmate_grammar(), "regenerate: python -m engine.lsp.textmate > " + str(GRAMMAR.relative_to(ROOT))


def test_the_vscode_extension_points_at_the_grammar_and_the_server() -> None:
    package = json.loads((ROOT / "editors" / "vscode" / "package.json").read_text())
    (grammar,) = package["contributes"]["grammars"]
    assert (ROOT / "editors" / "vscode" / grammar["path"]).resolve() == GRAMMAR.resolve() and grammar["scopeName"] == "source.flow"
    assert package["contributes"]["languages"][0]["extensions"] == [".flow"]
    assert package["contributes"]["configuration"]["properties"]["baton.command"]["default"] == ["baton", "lsp"]


@pytest.fixture(scope="module")
def node_modules(request: pytest.FixtureRequest) -> Path:
    return npm_packages(request, "textmate-engine", ENGINE_PACKAGES)


def tokenize(folder: Path, files: list[Path]) -> dict[str, list[tuple[int, int, int, str, list[str]]]]:
    proc = subprocess.run(["node", str(TOKENIZER), str(GRAMMAR), *map(str, files)], cwd=folder, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {k: [tuple(t) for t in v] for k, v in json.loads(proc.stdout).items()}  # type: ignore[misc]


def scopes_of(tokens: list[tuple[int, int, int, str, list[str]]], line: int, text: str) -> list[str]:
    found = [t for t in tokens if t[0] == line and t[3] == text]
    assert found, f"no token {text!r} on line {line}"
    return found[0][4]


@pytest.mark.slow
def test_every_reference_flow_gets_the_expected_scopes(node_modules: Path) -> None:
    flows = sorted(WORKFLOWS.glob("*.flow"))
    result = tokenize(node_modules, flows)
    checked = 0
    for path in flows:
        tokens = result[str(path)]
        for i, line in enumerate(path.read_text().split("\n"), 1):
            stripped = line.lstrip()
            if stripped.startswith("#"):
                assert any("comment.line.number-sign.flow" in s for t in tokens if t[0] == i for s in t[4]), (path.name, i)
            m = re.match(r"\s*(step|fuse|verify|route|loop|input|flow)\s+(\w+)", line)
            if m and not stripped.startswith("#"):
                assert "keyword.control.flow" in scopes_of(tokens, i, m.group(1)), (path.name, i)
                assert "entity.name.function.flow" in scopes_of(tokens, i, m.group(2)), (path.name, i)
                checked += 1
            key = re.match(r"\s*(model|task|sees|panel|judge|max_tokens|expect|accept|budget)(?=\s*:)", line)
            if key:
                assert "entity.name.tag.property.flow" in scopes_of(tokens, i, key.group(1)), (path.name, i)
            for placeholder in re.findall(r"\{\w+\}", line.split("#")[0] if '"' not in line else line):
                if '"' in line or '"""' in path.read_text():
                    hits = [t for t in tokens if t[0] == i and t[3] == placeholder]
                    assert hits and "variable.parameter.template.flow" in hits[0][4], (path.name, i, placeholder)
            money = re.search(r"\$[0-9.]+", line)
            if money and not stripped.startswith("#"):
                assert "constant.numeric.money.flow" in scopes_of(tokens, i, money.group()), (path.name, i)
            duration = re.search(r"\b\d+(ms|s|m)\b", line)
            if duration and not stripped.startswith("#") and '"' not in line:
                assert "constant.numeric.duration.flow" in scopes_of(tokens, i, duration.group()), (path.name, i)
    assert checked > 30  # the test looked at the flows' declarations, not at nothing


@pytest.mark.slow
def test_strings_regexes_and_triple_quoted_text_across_lines(node_modules: Path, tmp_path: Path) -> None:
    sample = tmp_path / "sample.flow"
    sample.write_text('step a {\n  task: """\n    step inside {question} and {{literal}}\n  """\n  expect: matches /AN\\/SWER/i\n'
                      '  task: "x \\"y\\" {q}"  # trailing comment\n}\n')
    tokens = tokenize(node_modules, [sample])[str(sample)]
    assert "string.quoted.triple.flow" in scopes_of(tokens, 3, "    step inside ")  # a keyword inside a string is text
    assert "variable.parameter.template.flow" in scopes_of(tokens, 3, "{question}")
    assert "constant.character.escape.flow" in scopes_of(tokens, 3, "{{")
    assert "string.regexp.flow" in scopes_of(tokens, 5, "/AN\\/SWER/i")
    assert "constant.character.escape.flow" in scopes_of(tokens, 6, '\\"')
    assert "comment.line.number-sign.flow" in scopes_of(tokens, 6, "# trailing comment")


# -- Neovim ----------------------------------------------------------------------------------------------------------

NVIM_CONFIG = ROOT / "editors" / "nvim" / "baton.lua"
NVIM_CHECK = ROOT / "editors" / "test" / "nvim_check.lua"
#: Starts with a comment, which Neovim 0.7's filetype.vim takes for `conf`; one unknown alias for a diagnostic.
NVIM_FLOW = """# A flow as a person would start one.
input question

step answer {
  model: smol
  task: "{question}"

}

step second { model: nosuch  sees: answer  task: "Check: {answer}" }
"""


@pytest.mark.slow
def test_the_neovim_config_gives_diagnostics_hover_and_completion_headless(tmp_path: Path) -> None:
    """editors/nvim/baton.lua in Debian's Neovim (0.7.2 on bookworm), headless: `.flow` is the `flow` filetype, not
    `conf`, and Neovim's own LSP client gets the server's diagnostics, hover and completion."""
    nvim = shutil.which("nvim")
    if nvim is None:
        if os.environ.get("CI"):
            pytest.fail("needs Neovim (apt-get install neovim)")
        pytest.skip("needs Neovim")
    (tmp_path / "models.toml").write_text((WORKFLOWS / "models.toml").read_text())
    flow = tmp_path / "check.flow"
    flow.write_text(NVIM_FLOW)
    result = tmp_path / "nvim.json"
    command = json.dumps([sys.executable, "-m", "engine.cli.main", "lsp"])
    env = {**os.environ, "BATON_NVIM_OUT": str(result), "BATON_NVIM_HOVER": "5,10", "BATON_NVIM_COMPLETE": "7,2",
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_STATE_HOME": str(tmp_path / "state"),
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([nvim, "--headless", "-i", "NONE", "--cmd", f"lua vim.g.baton_command = vim.fn.json_decode([==[{command}]==])",
                           "-u", str(NVIM_CONFIG), "-c", f"luafile {NVIM_CHECK}", str(flow)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert result.exists() and "Error" not in proc.stderr, proc.stderr + proc.stdout
    seen = json.loads(result.read_text())
    assert seen["filetype"] == "flow" and seen["commentstring"] == "# %s" and seen["attached"]
    assert any(d["code"] == "E202" and "nosuch" in d["message"] and d["line"] == 9 for d in seen["diagnostics"]), seen["diagnostics"]
    assert "smol" in seen["hover"], seen["hover"]
    assert {"expect", "fallback", "choices"} <= set(seen["completion"]), seen["completion"]


# -- Shiki -----------------------------------------------------------------------------------------------------------

SHIKI = ROOT / "editors" / "test" / "shiki_colours.mjs"
#: Scopes a theme may leave in the text colour: punctuation, and the arrow of a route arm.
PLAIN = ("punctuation.", "keyword.operator.arrow", "source.flow")


@pytest.mark.slow
def test_shiki_finds_the_grammar_as_flow_and_github_themes_colour_every_token_class(request: pytest.FixtureRequest) -> None:
    """Every reference flow through Shiki with GitHub's light and dark themes: `lang: "flow"` finds the grammar, and
    every token but punctuation (keywords, names, property keys, alias values, strings, placeholders, regexes,
    numbers, amounts, durations, comments) is in a colour of its own, not the text colour."""
    folder = npm_packages(request, "shiki", ("shiki@3",))
    flows = sorted(WORKFLOWS.glob("*.flow"))
    proc = subprocess.run(["node", str(SHIKI), str(GRAMMAR), *map(str, flows)], cwd=folder, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for theme, result in json.loads(proc.stdout).items():
        classes: set[str] = set()
        for file, tokens in result["files"].items():
            for line, text, colour, scope in tokens:
                if scope.startswith(PLAIN):
                    continue
                assert colour.lower() != result["fg"].lower(), (theme, Path(file).name, line, text, scope)
                classes.add(scope.rsplit(".flow", 1)[0])
        assert {"keyword.control", "entity.name.function", "entity.name.tag.property", "variable.other.constant.name",
                "string.quoted.double", "string.quoted.triple", "variable.parameter.template", "string.regexp", "constant.numeric",
                "constant.numeric.money", "comment.line.number-sign"} <= classes, (theme, classes)


# -- the VS Code extension -------------------------------------------------------------------------------------------

VSCODE = ROOT / "editors" / "vscode"


@pytest.mark.slow
def test_the_vscode_extension_packages_cleanly_with_its_client_bundled(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """`npm run package` (esbuild, then vsce) makes a .vsix with no warning: the licence, the grammar and one bundled
    script, no node_modules. The bundle needs nothing but the `vscode` module VS Code provides."""
    packages = npm_packages(request, "vscode-extension", ("@vscode/vsce@3", "esbuild@0.25", "vscode-languageclient@9"))
    folder = tmp_path / "vscode"
    shutil.copytree(VSCODE, folder, ignore=shutil.ignore_patterns("node_modules", "dist", "*.vsix"))
    (folder / "node_modules").symlink_to(packages / "node_modules")
    proc = subprocess.run(["npm", "run", "--silent", "package"], cwd=folder, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    version = json.loads((VSCODE / "package.json").read_text())["version"]
    with zipfile.ZipFile(folder / f"baton-flow-{version}.vsix") as vsix:
        names = set(vsix.namelist())
    assert {"extension/LICENSE.txt", "extension/package.json", "extension/dist/extension.js", "extension/syntaxes/flow.tmLanguage.json",
            "extension/language-configuration.json", "extension/readme.md"} <= names, names
    assert not any("node_modules" in n or n.endswith("extension/extension.js") for n in names), names
    builtins = set(json.loads(subprocess.run(["node", "-p", "JSON.stringify(require('module').builtinModules)"], capture_output=True,
                                             text=True, timeout=60).stdout))
    required = set(re.findall(r'require\("([^"]+)"\)', (folder / "dist" / "extension.js").read_text()))
    assert required - builtins - {f"node:{b}" for b in builtins} == {"vscode"}, required - builtins  # all else is in the bundle
