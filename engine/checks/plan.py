"""A stable topological order for the execution plan the structure pass emits.

No graph library here: `baton validate` stays quick to start.
"""

from __future__ import annotations

from collections.abc import Mapping


def topological(top: list[str], deps: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Kahn's algorithm, taking ready nodes in source order (so the order is stable and reads like the file)."""
    waiting = {n: set(deps[n]) for n in top}
    dependents: dict[str, list[str]] = {n: [] for n in top}
    for n in top:
        for d in deps[n]:
            dependents[d].append(n)
    position = {n: i for i, n in enumerate(top)}
    ready = sorted((n for n in top if not waiting[n]), key=position.__getitem__)
    out: list[str] = []
    while ready:
        n = ready.pop(0)
        out.append(n)
        for m in dependents[n]:
            waiting[m].discard(n)
            if not waiting[m]:
                ready.append(m)
        ready.sort(key=position.__getitem__)
    assert len(out) == len(top), "a checked flow is acyclic"
    return tuple(out)
