"""What the language server answers, as plain data: diagnostics, hover, completion, navigation, rename, outline.

Nothing here knows the protocol (`engine.lsp.server` turns these into LSP messages), so
each answer is tested directly as well as through a real client. Every verdict about the
flow is the checker's (`check_source`: the same codes, spans and messages as `baton
validate`); the index (`engine.lsp.index`) only says where names are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.checks import CheckResult, check_document
from engine.checks.cost import CostModel, WorstCase
from engine.checks.properties import PROPERTY_HELP, REQUIRED, RESERVED_NAMES, SCHEMAS, VALUE_KINDS, VALUE_WORDS
from engine.checks.subflows import what_it_takes
from engine.diagnostics import CODES
from engine.errors import FlowError
from engine.lsp.index import IDENTIFIER, Definition, FlowIndex, Use, build_index
from engine.model import Use as SubflowNode
from engine.pool import ModelSpec, Pool
from engine.syntax.ast import Span
from engine.syntax.fmt import format_source
from engine.syntax.parser import parse

KEYWORDS = ("version", "flow", "input", "budget", "output", "models", "step", "fuse", "verify", "route", "loop", "use")
#: Words the lexer keeps for itself (docs/language.md), beyond the names the checker reserves.
KEYWORD_NAMES = {*KEYWORDS, "by", "when", "else", "max", "as"}
CHOICES = {key: tuple(kind.split(":", 1)[1].split("|")) for key, kind in VALUE_KINDS.items() if kind.startswith("choice:")}


@dataclass
class Analysis:
    """One version of a document, checked: what every request on it reads."""

    source: str
    check: CheckResult
    index: FlowIndex | None  # None when the text does not parse
    models: dict[str, ModelSpec] = field(default_factory=dict)
    filename: str = "<flow>"  # where a `use` looks for its sub-flow


def analyse(source: str, pool: Pool, filename: str) -> Analysis:
    """Parse once, check (what `check_source` does), and index the names."""
    try:
        doc = parse(source, filename)
    except FlowError as err:
        result, index = CheckResult(None, err.diagnostics), None
    else:
        result, index = check_document(doc, pool), build_index(doc)
    models = {**pool.models, **(result.flow.models if result.flow is not None else {})}
    return Analysis(source, result, index, models, filename)


def worst_case_text(w: WorstCase) -> str:
    return f"worst case {w.calls} calls, ~{w.tokens} tokens, ${w.usd:.4f}"


# -- hover ---------------------------------------------------------------------------------


def hover(a: Analysis, line: int, column: int) -> tuple[str, Span] | None:
    """Markdown for what is under the (1-based) position, and the span it is about."""
    if a.index is not None:
        hit = a.index.at(line, column)
        if isinstance(hit, Use) and hit.how == "alias":
            return _alias_hover(a, hit.name), hit.span
        if hit is not None and hit.name in a.index.definitions:
            return _name_hover(a, a.index.definitions[hit.name]), hit.span
    field_ref = _field_at(a.source, line, column)
    if field_ref is not None:
        step, name, span = field_ref
        kind = _fields_of(a, step).get(name)
        text = f"**field `{name}`** of step `{step}`: {kind}" if kind else f"step `{step}` declares no field `{name}`"
        return text, span
    word = _word_at(a.source, line, column)
    if word is not None and word[0] in PROPERTY_HELP and _followed_by_colon(a.source, line, word[2]):
        key = word[0]
        kind = VALUE_KINDS.get(key, "")
        allowed = f"one of: {', '.join(f'`{c}`' for c in CHOICES[key])}" if key in CHOICES else VALUE_WORDS.get(kind, kind)
        used_by = [k for k, keys in SCHEMAS.items() if key in keys]
        text = f"**`{key}`**: {PROPERTY_HELP[key]}\n\nValue: {allowed}\n\nOn: {', '.join(used_by)}"
        if any(key in REQUIRED.get(k, ()) for k in used_by):
            text += f" (required on {', '.join(k for k in used_by if key in REQUIRED.get(k, ()))})"
        return text, Span(line, word[1], line, word[2])
    return None


def _alias_hover(a: Analysis, alias: str) -> str:
    spec = a.models.get(alias)
    if spec is None:
        return f"**`{alias}`**: not in the pool (see the diagnostic)"
    prices = (f"${spec.input_price:g} in / ${spec.output_price:g} out per million tokens"
              if spec.input_price is not None and spec.output_price is not None else "no prices (cost unknown)")
    lines = [f"**`{alias}`**: `{spec.id}` on provider `{spec.provider}`", prices]
    if spec.context:
        lines.append(f"context {spec.context} tokens")
    if spec.description:
        lines.append(spec.description)
    return "\n\n".join(lines)


def _name_hover(a: Analysis, d: Definition) -> str:
    if d.kind == "input":
        users = sorted({u.span.line for u in a.index.uses_of(d.name)}) if a.index else []
        return f"**input `{d.name}`**" + (f"\n\nused on lines {', '.join(map(str, users))}" if users else "\n\nnever used")
    text = f"**{d.kind} `{d.name}`**" + (f" (in loop `{d.loop}`)" if d.loop else "")
    flow = a.check.flow
    if flow is not None and d.name in flow.nodes:
        node = flow.nodes[d.name]
        sees = getattr(node, "sees", ())
        if isinstance(node, SubflowNode):
            given = [f"`{k}` \u2190 {v}" for k, v in node.inputs.items()] + [f"`{k}` \u2190 {v!r}" for k, v in node.texts.items()]
            text += f"\n\nruns `{node.source}`: {node.flow.description or node.flow.name}\n\ngiven: {', '.join(given) or 'nothing'}"
            text += f"\n\ncalls: {', '.join(node.flow.aliases())}"
        elif d.kind != "route":
            text += f"\n\nsees: {', '.join(sees) if sees else 'nothing but its task'}"
        text += f"\n\n{worst_case_text(CostModel(flow, _pool_of(a)).node(d.name))}"
    return text


def _pool_of(a: Analysis) -> Pool:
    return Pool(models=a.models)


def _word_at(source: str, line: int, column: int) -> tuple[str, int, int] | None:
    lines = source.splitlines()
    if not 1 <= line <= len(lines):
        return None
    for m in IDENTIFIER.finditer(lines[line - 1]):
        if m.start() + 1 <= column <= m.end() + 1:
            return m.group(), m.start() + 1, m.end() + 1
    return None


def _followed_by_colon(source: str, line: int, end_column: int) -> bool:
    text = source.splitlines()[line - 1]
    return text[end_column - 1:].lstrip().startswith(":")


# -- completion ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    label: str
    kind: str  # keyword, property, alias, name, value, field
    detail: str = ""


_STRINGS = re.compile(r'"""[\s\S]*?(?:"""|$)|"(?:[^"\\\n]|\\.)*"?')
_OPENER = re.compile(r"\b(step|fuse|verify|route|loop|models)\b\s*([A-Za-z_]\w*)?[^{}]*\{|\b(use)\b[^{}]*?\bas\s+([A-Za-z_]\w*)\s*\{")


def _blocks_open(prefix: str) -> list[tuple[str, str]]:
    """The blocks (kind, name) that enclose the end of `prefix`, outermost first."""
    text = _STRINGS.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), prefix)
    stack: list[tuple[str, str]] = []
    pos = 0
    opener = _OPENER.search(text)
    while True:
        # the next opener is searched for only once the last one is used: searching again at every `}` made a line of
        # 100 KB of braces quadratic (33 s, the server blocked); an opener holds no `}`, so it stays the next one
        if opener is not None and opener.start() < pos:
            opener = _OPENER.search(text, pos)
        closer = text.find("}", pos)
        if opener is None and closer < 0:
            return stack
        if opener is not None and (closer < 0 or opener.end() - 1 < closer):
            stack.append((opener.group(1) or opener.group(3), opener.group(2) or opener.group(4) or ""))
            pos = opener.end()
        else:
            if stack:
                stack.pop()
            pos = closer + 1


def complete(a: Analysis, line: int, column: int) -> list[Completion]:
    """What may be written at the (1-based) position."""
    lines = a.source.split("\n")
    if not 1 <= line <= len(lines):
        return []
    current = lines[line - 1][: column - 1]
    prefix = "\n".join([*lines[: line - 1], current])
    blocks = _blocks_open(prefix)
    inside = blocks[-1] if blocks else None
    field = re.search(r"\{([A-Za-z_]\w*)\.(\w*)$", current)
    if field and inside and _open_template(prefix, current[: field.start()] + "{"):
        return [Completion(name, "field", kind) for name, kind in _fields_of(a, field.group(1)).items()]
    template = _open_template(prefix, current)
    if template and inside:
        return [Completion(n, "name", "visible here") for n in _visible(a, prefix, inside[1], blocks)]
    if inside and inside[0] == "use":
        return _in_use(a, prefix, current, inside[1], blocks)
    key = re.match(r"\s*([A-Za-z_]\w*)\s*:(.*)$", current)
    if key and inside:
        name, rest = key.group(1), key.group(2)
        if '"' in rest or "/" in rest:
            return []
        if name in ("model", "fallback", "panel", "judge", "escalate"):
            return [Completion(alias, "alias", f"{spec.id} ({spec.provider})") for alias, spec in sorted(a.models.items())]
        if name == "sees":
            return [Completion(n, "name", "visible here") for n in _seeable(a, prefix, blocks)] + \
                   [Completion(w, "keyword") for w in ("all", "none", *(("feedback",) if blocks[0][0] == "loop" else ()))]
        if name in CHOICES:
            return [Completion(c, "value") for c in CHOICES[name]]
        if name == "output" and inside[0] == "loop":
            return [Completion(m, "name") for m in _members(a, inside[1])]
        return []
    if inside and inside[0] == "route":
        if "->" in current:
            return [Completion(n, "name", d.kind) for n, d in _definitions(a).items() if d.kind != "input"]
        return [Completion("else", "keyword")]
    if inside:
        kind = inside[0] if inside[0] != "models" else "model"
        if re.fullmatch(r"\s*[A-Za-z_]*", current):
            props = [Completion(k, "property", PROPERTY_HELP.get(k, "")) for k in SCHEMAS.get(kind, ())]
            nested = [Completion(k, "keyword") for k in ("step", "verify")] if kind == "loop" else []
            return props + nested
        return []
    stripped = current.strip()
    if re.fullmatch(r"output\s+\w*", stripped) or re.fullmatch(r"route\s+\w+\s+by\s+\w*", stripped):
        return [Completion(n, "name", d.kind) for n, d in _definitions(a).items() if d.kind != "input"]
    if re.fullmatch(r"[A-Za-z_]*", stripped):
        return [Completion(k, "keyword") for k in KEYWORDS]
    return []


def _in_use(a: Analysis, prefix: str, current: str, name: str, blocks: list[tuple[str, str]]) -> list[Completion]:
    """Inside `use "critique" as review { ... }`: the sub-flow's inputs and model roles as keys; for an input, the
    caller's names it may be given, for a role, the pool's aliases."""
    sources = re.findall(r'\buse\s+"((?:[^"\\\n]|\\.)*)"\s+as\s+' + re.escape(name) + r"\s*\{", prefix)
    takes = what_it_takes(sources[-1], a.filename) if sources else None
    if takes is None:
        return []
    inputs, roles = takes
    key = re.match(r"\s*([A-Za-z_]\w*)\s*:(.*)$", current)
    if key is None:
        if not re.fullmatch(r"\s*[A-Za-z_]*", current):
            return []
        return [Completion(n, "property", f"input: {about}" if about else "an input of the sub-flow") for n, about in inputs.items()] + \
               [Completion(r, "property", "a model alias it calls: give it one of yours") for r in roles]
    if '"' in key.group(2):
        return []
    if key.group(1) in inputs:
        return [Completion(n, "name", "visible here") for n in _seeable(a, prefix, blocks)]
    if key.group(1) in roles:
        return [Completion(alias, "alias", f"{spec.id} ({spec.provider})") for alias, spec in sorted(a.models.items())]
    return []


def _fields_of(a: Analysis, step: str) -> dict[str, str]:
    """The fields a step `returns:` (name -> type in words): from the checked flow, or, while it does not check, from
    what its `returns:` line says."""
    node = a.check.flow.nodes.get(step) if a.check.flow is not None else None
    if node is not None:
        return dict(getattr(node, "fields", {}) or {})
    block = re.search(rf"\b(?:step|verify)\s+{re.escape(step)}\b[^{{]*\{{(.*?)(?:\n\s*\}}|\Z)", a.source, re.S)
    declared = re.search(r"^\s*returns\s*:\s*([^\n#]*)", block.group(1), re.M) if block else None
    if declared is None or declared.group(1).strip().startswith('"'):
        return {}
    out = {}
    for part in declared.group(1).split(","):
        words = part.split(None, 1)
        if words and re.fullmatch(r"[A-Za-z_]\w*", words[0]):
            out[words[0]] = words[1].strip() if len(words) > 1 else ""
    return out


def _field_at(source: str, line: int, column: int) -> tuple[str, str, Span] | None:
    """`{step.field}` under the (1-based) position: (step, field, the reference's span)."""
    lines = source.splitlines()
    if not 1 <= line <= len(lines):
        return None
    for m in re.finditer(r"\{([A-Za-z_]\w*)\.([A-Za-z_]\w*)\}", lines[line - 1]):
        if m.start() + 1 <= column <= m.end():
            return m.group(1), m.group(2), Span(line, m.start() + 1, line, m.end() + 1)
    return None


def _open_template(prefix: str, current: str) -> bool:
    """The cursor is just after `{` or `{na` inside a string (one-line, or triple-quoted and still open)."""
    m = re.search(r"\{([A-Za-z_]\w*)?$", current)
    if m is None:
        return False
    in_long = prefix.count('"""') % 2 == 1
    in_short = current[: m.start()].replace('\\"', "").count('"') % 2 == 1
    return in_long or in_short


def _definitions(a: Analysis) -> dict[str, Definition]:
    """The names defined in the document: from the index, or, while the text does not parse, from what the lines say."""
    if a.index is not None:
        return a.index.definitions
    found: dict[str, Definition] = {}
    for m in re.finditer(r"^\s*(input|step|fuse|verify|route|loop)\s+([A-Za-z_]\w*)", a.source, re.M):
        line = a.source.count("\n", 0, m.start()) + 1
        found.setdefault(m.group(2), Definition(m.group(2), m.group(1), Span(line, 1, line, 1), Span(line, 1, line, 1)))
    return found


def _seeable(a: Analysis, prefix: str, blocks: list[tuple[str, str]]) -> list[str]:
    """What a `sees:` may list: the inputs, and the nodes defined before this one (a loop's members: its earlier members)."""
    names = []
    here_line = prefix.count("\n") + 1
    for name, d in _definitions(a).items():
        if name == blocks[-1][1]:
            continue
        if d.kind == "input" or d.span.line < here_line:
            names.append(name)
    return names


def _visible(a: Analysis, prefix: str, step: str, blocks: list[tuple[str, str]]) -> list[str]:
    """What a template in `step` may name: every input, and the steps its `sees` lists."""
    inputs = [n for n, d in _definitions(a).items() if d.kind == "input"]
    block = re.search(rf"\b(?:step|fuse|verify)\s+{re.escape(step)}\b[^{{]*\{{(.*?)(?:\n\s*\}}|\Z)", a.source, re.S)
    sees: list[str] = []
    if block:
        m = re.search(r"^\s*sees\s*:\s*([^\n#]*)", block.group(1), re.M)
        if m:
            listed = [s.strip() for s in m.group(1).split(",") if s.strip()]
            sees = _seeable(a, prefix, blocks) if "all" in listed else [s for s in listed if s not in ("none",)]
    return list(dict.fromkeys([*inputs, *sees]))


def _members(a: Analysis, loop: str) -> list[str]:
    return [n for n, d in _definitions(a).items() if d.loop == loop]


# -- navigation, rename --------------------------------------------------------------------


def definition(a: Analysis, line: int, column: int) -> Definition | None:
    if a.index is None:
        return None
    hit = a.index.at(line, column)
    if hit is None or (isinstance(hit, Use) and hit.how == "alias"):
        return None
    return a.index.definitions.get(hit.name)


def references(a: Analysis, line: int, column: int, include_definition: bool = True) -> list[Span]:
    d = definition(a, line, column)
    if d is None or a.index is None:
        return []
    spans = [u.span for u in a.index.uses_of(d.name)]
    return ([d.span] if include_definition else []) + spans


class RenameRefused(Exception):
    """The rename would break the flow: the message says why."""


def rename(a: Analysis, line: int, column: int, new_name: str) -> list[tuple[Span, str]]:
    """Edits that rename the input or node under the position everywhere; `RenameRefused` when it cannot."""
    if a.index is None:
        raise RenameRefused("the file does not parse; fix the syntax error first")
    d = definition(a, line, column)
    if d is None:
        raise RenameRefused("only an input or a node can be renamed here")
    if not IDENTIFIER.fullmatch(new_name):
        raise RenameRefused(f"`{new_name}` is not a name (letters, digits, `_`; not starting with a digit)")
    if new_name in RESERVED_NAMES or new_name in KEYWORD_NAMES:
        raise RenameRefused(f"`{new_name}` is reserved")
    if new_name in a.index.definitions and new_name != d.name:
        raise RenameRefused(f"`{new_name}` already names a {a.index.definitions[new_name].kind} (line {a.index.definitions[new_name].span.line})")
    return [(span, new_name) for span in [d.span, *(u.span for u in a.index.uses_of(d.name))]]


# -- formatting, outline, folding, lens ------------------------------------------------------


def formatted(a: Analysis, filename: str) -> str | None:
    """The canonical text (`baton fmt`), or None when the text does not parse (nothing to format safely)."""
    if a.index is None:
        return None
    try:
        return format_source(a.source, filename)
    except FlowError:
        return None


def outline(a: Analysis) -> list[Definition]:
    """The nodes, in file order (a loop's members after it, marked by `loop`)."""
    return list(a.index.blocks) if a.index is not None else []


def folding(a: Analysis) -> list[tuple[int, int]]:
    """(first line, last line) of every block that spans lines, and of every triple-quoted string."""
    ranges = [(d.whole.line, d.whole.end_line) for d in outline(a) if d.whole.end_line > d.whole.line]
    for m in re.finditer(r'"""[\s\S]*?"""', a.source):
        first, last = a.source.count("\n", 0, m.start()) + 1, a.source.count("\n", 0, m.end()) + 1
        if last > first:
            ranges.append((first, last))
    return sorted(set(ranges))


def lens(a: Analysis) -> tuple[int, str] | None:
    """The worst case, for the `flow` line (or line 1)."""
    if a.check.worst is None:
        return None
    line = a.index.flow_line if a.index is not None and a.index.flow_line else 1
    budget = a.check.flow.budget.usd if a.check.flow is not None else None
    return line, worst_case_text(a.check.worst) + (f"; budget ${budget:g}" if budget is not None else "")


def code_summary(code: str) -> str:
    return CODES[code][1] if code in CODES else ""
