"""Readers that turn generic property values (phrases of atoms) into typed values.

Each reader either returns a value or records a diagnostic against the exact atom that
is wrong and returns None, so one pass reports every bad value in a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.diagnostics import Diagnostic
from engine.model import Check
from engine.syntax.ast import Atom, Phrase, Prop, Span, Value

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}
_CHECK_OPS = ("matches", "contains", "not_matches", "not_contains")


@dataclass
class Reader:
    """Collects diagnostics for one file while values are read."""

    filename: str
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(self, code: str, message: str, span: Span, hint: str | None = None,
              related: tuple[tuple[str, Span], ...] = ()) -> None:
        self.diagnostics.append(Diagnostic(code, message, span, hint, self.filename, related))

    # -- shapes -------------------------------------------------------------------------

    def single(self, prop: Prop, what: str) -> Atom | None:
        """The value must be exactly one atom."""
        phrases = prop.value.phrases
        if len(phrases) != 1 or len(phrases[0].atoms) != 1:
            self.error("E208", f"`{prop.key}` takes {what}", prop.value.span, f"write `{prop.key}: <{what}>`")
            return None
        return phrases[0].atoms[0]

    def names(self, value: Value, key: str) -> list[Atom] | None:
        """A comma-separated list of names: `a, b, c`."""
        out: list[Atom] = []
        for phrase in value.phrases:
            if len(phrase.atoms) != 1 or phrase.atoms[0].kind != "NAME":
                self.error("E208", f"`{key}` takes names separated by commas", phrase.span, f"for example `{key}: a, b`")
                return None
            out.append(phrase.atoms[0])
        return out

    def chain(self, value: Value, key: str) -> list[Atom] | None:
        """`a then b then c` (one phrase) or `a, b` (a list): an ordered chain of names."""
        if len(value.phrases) > 1:
            return self.names(value, key)
        atoms = value.phrases[0].atoms
        names = atoms[0::2]
        joins = atoms[1::2]
        if any(a.kind != "NAME" for a in names) or any(j.kind != "NAME" or j.value != "then" for j in joins) or len(atoms) % 2 == 0:
            self.error("E208", f"`{key}` takes a model alias, or aliases joined by `then`", value.span, f"for example `{key}: cheap then strong`")
            return None
        return list(names)

    # -- scalars --------------------------------------------------------------------------

    def text(self, prop: Prop) -> str | None:
        atom = self.single(prop, "a quoted string")
        if atom is None:
            return None
        if atom.kind not in ("STRING", "LONG_STRING"):
            self.error("E208", f"`{prop.key}` takes a quoted string, found `{atom.text}`", atom.span, 'write it in "quotes" or """triple quotes"""')
            return None
        return atom.value

    def number(self, prop: Prop, lo: float, hi: float, integer: bool = False) -> float | None:
        atom = self.single(prop, "a whole number" if integer else "a number")
        if atom is None:
            return None
        if atom.kind != "NUMBER" or (integer and "." in atom.text):
            kind = "a whole number" if integer else "a number"
            self.error("E208", f"`{prop.key}` takes {kind}, found `{atom.text}`", atom.span)
            return None
        value = float(atom.value)
        if not lo <= value <= hi:
            self.error("E209", f"`{prop.key}` is {atom.text}, outside {_fmt(lo)}..{_fmt(hi)}", atom.span)
            return None
        return value

    def duration(self, prop: Prop, lo: float, hi: float) -> float | None:
        atom = self.single(prop, "a duration")
        if atom is None:
            return None
        if atom.kind == "DURATION":
            m = re.fullmatch(r"([0-9.]+)(ms|s|m)", atom.text)
            assert m is not None
            seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        elif atom.kind == "NUMBER":
            seconds = float(atom.text)
        else:
            self.error("E208", f"`{prop.key}` takes a duration like 60s, found `{atom.text}`", atom.span)
            return None
        if not lo <= seconds <= hi:
            self.error("E209", f"`{prop.key}` is {atom.text}, outside {_fmt(lo)}s..{_fmt(hi)}s", atom.span)
            return None
        return seconds

    def choice(self, prop: Prop, options: tuple[str, ...]) -> str | None:
        atom = self.single(prop, " | ".join(options))
        if atom is None:
            return None
        if atom.kind != "NAME" or atom.value not in options:
            self.error("E208", f"`{prop.key}` is one of {', '.join(options)}, found `{atom.text}`", atom.span)
            return None
        return atom.value

    def regex(self, atom: Atom) -> str | None:
        """A `/regex/flags` atom as a Python pattern (flags inlined), checked to compile."""
        if atom.kind != "REGEX":
            self.error("E208", f"expected a /regex/, found `{atom.text}`", atom.span)
            return None
        body, _, flags = atom.text[1:].rpartition("/")
        pattern = body.replace("\\/", "/")
        if flags:
            pattern = f"(?{flags})" + pattern
        try:
            re.compile(pattern)
        except re.error as err:
            self.error("E104", f"invalid regular expression: {err.msg}", atom.span)
            return None
        return pattern

    def strings(self, value: Value, key: str) -> list[str] | None:
        """Quoted strings separated by commas, each once: `"code", "math", "other"`."""
        out: list[str] = []
        for phrase in value.phrases:
            atom = phrase.atoms[0] if len(phrase.atoms) == 1 else None
            if atom is None or atom.kind != "STRING" or not atom.value.strip():
                self.error("E208", f"`{key}` takes quoted strings separated by commas", phrase.span, f'for example `{key}: "yes", "no"`')
                return None
            if atom.value in out:
                self.error("E208", f"`{key}` lists {atom.text} twice", atom.span)
                return None
            out.append(atom.value)
        return out

    def checks(self, value: Value, key: str) -> list[Check] | None:
        """`matches /re/`, `not matches /re/`, `contains "x"`, `not contains "x"`, `json`; comma-separated."""
        out: list[Check] = []
        for phrase in value.phrases:
            check = self.check(phrase, key)
            if check is None:
                return None
            out.append(check)
        return out

    def check(self, phrase: Phrase, key: str) -> Check | None:
        atoms = list(phrase.atoms)
        negate = bool(atoms) and atoms[0].kind == "NAME" and atoms[0].value == "not"
        if negate:
            atoms = atoms[1:]
        if len(atoms) == 1 and atoms[0].kind == "NAME" and atoms[0].value == "json" and not negate:
            return Check(kind="json")
        if len(atoms) == 1 and atoms[0].kind == "REGEX":
            atoms = [Atom("NAME", "matches", "matches", atoms[0].span), atoms[0]]
        if len(atoms) == 2 and atoms[0].kind == "NAME" and atoms[0].value in ("matches", "contains"):
            op = ("not_" if negate else "") + atoms[0].value
            if atoms[0].value == "matches":
                pattern = self.regex(atoms[1])
                if pattern is None:
                    return None
                return Check(kind=op, pattern=pattern)  # type: ignore[arg-type]
            if atoms[1].kind in ("STRING", "LONG_STRING"):
                return Check(kind=op, pattern=atoms[1].value)  # type: ignore[arg-type]
        self.error("E208", f"`{key}` takes checks such as `matches /re/`, `contains \"text\"`, `not matches /re/` or `json`",
                   phrase.span)
        return None


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def rule_op(words: list[str]) -> str | None:
    """`matches` / `not matches` / `contains` / `not contains` as an `Arm.op`."""
    joined = "_".join(words)
    return joined if joined in _CHECK_OPS else None
