"""Files a flow names that were learned from data (a router, an answer scorer): where they may be read from, and
whether the one named fits the node that names it.

Both are read as untrusted data (`engine.router.files`): only from the folder tree of the flow, only a regular
file of bounded size, every field checked. A problem is a diagnostic at the file's name in the flow.
"""

from __future__ import annotations

from pathlib import Path

from engine.checks.values import Reader
from engine.router.files import cached_scorer, inside
from engine.router.model import RouterError
from engine.router.scorer import Scorer
from engine.syntax import ast
from engine.syntax.ast import Atom


def flow_folder(filename: str) -> Path:
    """The folder a flow's files are read from (the working folder for a flow with no file, such as standard input)."""
    return Path(filename).parent if not filename.startswith("<") else Path.cwd()


def learned_path(r: Reader, atom: Atom, code: str, what: str) -> Path | None:
    """The file `atom` names, resolved beside the flow; None (and `code` at the atom) when it lies outside its folder."""
    base = flow_folder(r.filename)
    path = (base / atom.value).resolve()
    if not inside(path, base):  # a file a flow names is data from the flow's own folder, never ~/.ssh/id_rsa
        r.error(code, f"{what} {atom.value} is outside the flow's folder", atom.span,
                f"a {what} is read only from the folder tree of the flow that names it (symbolic links resolved)")
        return None
    return path


def fuse_scorer(r: Reader, props: dict[str, ast.Prop], panel: list[str], vote: str | None,
                escalate: str | None) -> tuple[str | None, float | None]:
    """`scorer: "FILE"` and `threshold: N` on a fuse: (the scorer's path, the threshold the flow sets)."""
    threshold = None
    if "threshold" in props:
        threshold = r.number(props["threshold"], 0, 1)
        if "scorer" not in props or escalate is None:
            r.error("E208", "`threshold` needs `scorer` and `escalate` (below it, the scorer's best answer is escalated)",
                    props["threshold"].key_span)
    if "scorer" not in props:
        return None, None
    prop = props["scorer"]
    if vote is None:
        r.error("E208", "`scorer` needs `vote` (it scores the panel's extracted answers)", prop.key_span)
    for key in ("agree", "tie"):
        if key in props:
            r.error("E208", f"`{key}` counts votes, and a `scorer` weighs them instead: use one or the other", props[key].key_span)
    atom = r.single(prop, "a quoted path")
    if atom is None:
        return None, threshold
    if atom.kind not in ("STRING", "LONG_STRING"):
        r.error("E208", f"`scorer` takes a quoted path, found `{atom.text}`", atom.span, 'for example `scorer: "math.scorer"`')
        return None, threshold
    path = learned_path(r, atom, "E315", "scorer file")
    if path is None:
        return None, threshold
    try:
        scorer = cached_scorer(str(path))
    except RouterError as err:
        r.error("E315", str(err).replace(str(path), atom.value), atom.span,
                "train one with `baton router train-scorer` (docs/language.md, learned votes and cascades)")
        return None, threshold
    _fits(r, atom, scorer, panel, escalate)
    return str(path), threshold


def _fits(r: Reader, atom: Atom, scorer: Scorer, panel: list[str], escalate: str | None) -> None:
    """A scorer reads members by alias: the fuse's panel must be the one it was trained for, each member once."""
    if panel and (sorted(panel) != sorted(scorer.panel) or len(set(panel)) != len(panel)):
        r.error("E316", f"scorer {atom.value} was trained for the panel {', '.join(scorer.panel)}, and this panel is "
                        f"{', '.join(panel)}", atom.span,
                "a scorer weighs each member by what it learned of that model: retrain it for this panel (each alias once)")
    if escalate is not None and scorer.escalate is not None and escalate != scorer.escalate:
        r.error("E316", f"scorer {atom.value} set its threshold for escalating to `{scorer.escalate}`, not `{escalate}`", atom.span,
                "retrain it with this escalate model, or set `threshold:` yourself")
