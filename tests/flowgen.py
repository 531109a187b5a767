"""Hypothesis strategies that generate flow text: grammar-aware with layout noise and comments, or mutated reference flows."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.conftest import WORKFLOWS

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(
    lambda n: n not in {"version", "flow", "input", "budget", "output", "models", "step", "fuse", "verify", "route",
                        "loop", "by", "when", "else", "max", "use", "as"})
SAFE_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='"\\{}'), max_size=30)
WS = st.sampled_from([" ", "  ", "\n", "\n  ", "\t", " \n\n "])


@st.composite
def atom(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["name", "string", "long", "number", "money", "duration", "regex"]))
    if kind == "name":
        return draw(NAMES)
    if kind == "string":
        return '"' + draw(SAFE_TEXT) + '"'
    if kind == "long":
        lines = draw(st.lists(st.text(alphabet="abc xyz.,!-", max_size=12), min_size=1, max_size=4))
        indent = draw(st.sampled_from(["", "  ", "    "]))
        return '"""' + draw(st.sampled_from(["", "\n"])) + "\n".join(indent + ln for ln in lines) + '"""'
    if kind == "number":
        return str(draw(st.integers(0, 5000)))
    if kind == "money":
        return f"${draw(st.integers(0, 99))}.{draw(st.integers(0, 99)):02d}"
    if kind == "duration":
        return f"{draw(st.integers(1, 600))}{draw(st.sampled_from(['s', 'ms', 'm']))}"
    return "/" + draw(st.from_regex(r"[a-zA-Z0-9 ]{1,8}", fullmatch=True)) + "/" + draw(st.sampled_from(["", "i"]))


@st.composite
def prop(draw: st.DrawFn) -> str:
    key = draw(st.sampled_from(["model", "task", "sees", "retries", "timeout", "expect", "temperature", "fallback", "panel", "x_y"]))
    phrases = draw(st.lists(st.lists(atom(), min_size=1, max_size=3), min_size=1, max_size=3))
    value = ", ".join(" ".join(p) for p in phrases)
    return f"{key}:{draw(WS)}{value}"


@st.composite
def comment(draw: st.DrawFn) -> str:
    return "# " + draw(st.text(alphabet="abc def-", max_size=15))


@st.composite
def block(draw: st.DrawFn, kind: str = "step") -> str:
    props = draw(st.lists(prop(), max_size=4))
    body = ""
    for p in props:
        body += draw(WS) + p
        if draw(st.booleans()) and draw(st.integers(0, 3)) == 0:
            body += "  " + draw(comment()) + "\n"
    return f"{kind} {draw(NAMES)} {{{body}{draw(WS)}}}"


@st.composite
def route(draw: st.DrawFn) -> str:
    arms = []
    for _ in range(draw(st.integers(0, 3))):
        form = draw(st.sampled_from(["label", "rule", "else"]))
        target = draw(NAMES)
        if form == "label":
            labels = draw(st.lists(st.from_regex(r'"[a-z]{1,5}"', fullmatch=True), min_size=1, max_size=2))
            arms.append(f"{', '.join(labels)} -> {target}")
        elif form == "rule":
            arms.append(f"when {draw(NAMES)} matches /{draw(st.from_regex(r'[a-z]{1,4}', fullmatch=True))}/ -> {target}")
        else:
            arms.append(f"else -> {target}")
    by = f" by {draw(NAMES)}" if draw(st.booleans()) else ""
    return f"route {draw(NAMES)}{by} {{ " + draw(WS).join(arms) + " }"


@st.composite
def loop(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.one_of(block("step"), block("verify"), prop()), max_size=3))
    bound = f" max {draw(st.integers(0, 30))}" if draw(st.booleans()) else ""
    return f"loop {draw(NAMES)}{bound} {{ " + draw(WS).join(parts) + " }"


@st.composite
def item(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["input", "budget", "output", "flow", "version", "step", "fuse", "route", "loop", "models", "use"]))
    if kind == "input":
        return f"input {draw(NAMES)}" + (f' "{draw(SAFE_TEXT)}"' if draw(st.booleans()) else "")
    if kind == "budget":
        return "budget " + ", ".join(draw(st.lists(st.sampled_from(["$0.40", "tokens 500", "calls 9"]), min_size=1, max_size=3)))
    if kind == "output":
        return f"output {draw(NAMES)}"
    if kind == "flow":
        return f"flow {draw(NAMES)}" + (f' "{draw(SAFE_TEXT)}"' if draw(st.booleans()) else "")
    if kind == "version":
        return f"version {draw(st.integers(1, 3))}"
    if kind in ("step", "fuse"):
        return draw(block(kind))
    if kind == "route":
        return draw(route())
    if kind == "loop":
        return draw(loop())
    if kind == "use":
        props = draw(st.lists(prop(), max_size=3))
        return f'use "{draw(NAMES)}" as {draw(NAMES)} {{ ' + draw(WS).join(props) + " }"
    defs = draw(st.lists(block("step"), max_size=2))
    return "models { " + " ".join(d.replace("step ", "", 1) for d in defs) + " }"


@st.composite
def flow_text(draw: st.DrawFn) -> str:
    out = []
    for it in draw(st.lists(item(), max_size=8)):
        if draw(st.integers(0, 4)) == 0:
            out.append(draw(comment()) + "\n")
        out.append(it + draw(WS))
        if draw(st.integers(0, 5)) == 0:
            out.append("  " + draw(comment()) + "\n")
    return "".join(out)


REFERENCE_TEXTS = [p.read_text() for p in sorted(WORKFLOWS.glob("*.flow"))]


@st.composite
def mutated_flow(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(REFERENCE_TEXTS))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["delete", "insert", "swap", "dup"]))
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        j = draw(st.integers(i, min(len(text), i + 40)))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + draw(st.text(alphabet='{}[]"/\\#:,->$.0123456789 \n\tabcxyz\x00é😀', max_size=8)) + text[i:]
        elif op == "swap":
            text = text[:i] + text[j:] + text[i:j]
        else:
            text = text[:j] + text[i:j] + text[j:]
    return text
