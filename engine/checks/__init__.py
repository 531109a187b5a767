"""Semantic checks: from a syntax tree and a pool to a validated `Flow`, with every problem found.

The passes run in order (declarations and properties, then structure, then cost); each
records diagnostics instead of raising, so one `baton validate` reports everything.
A flow with errors yields no `Flow`; warnings do not block it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.checks.cost import WorstCase, worst_case
from engine.checks.resolve import Resolver
from engine.checks.structure import Structure
from engine.checks.values import Reader
from engine.diagnostics import Diagnostic
from engine.model import Flow
from engine.pool import Pool
from engine.syntax import ast


@dataclass
class CheckResult:
    """What the dry run learned: the flow (when valid), its diagnostics and its worst case."""

    flow: Flow | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    worst: WorstCase | None = None

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]


def check_document(doc: ast.Document, pool: Pool) -> CheckResult:
    """Run every semantic pass over `doc` against `pool`."""
    reader = Reader(doc.filename)
    resolved = Resolver(doc, pool, reader, check_document).run()
    structure = Structure(resolved, reader)
    nodes, output = structure.run()
    flow: Flow | None = None
    worst: WorstCase | None = None
    if not any(d.severity == "error" for d in reader.diagnostics) and output is not None:
        flow = Flow(
            name=resolved.name, description=resolved.description, version=resolved.version,
            inputs=resolved.inputs, budget=resolved.budget, models=resolved.models,
            nodes=nodes, order=tuple(resolved.order), output=output, source=doc.source, filename=doc.filename,
            plan=structure.plan(),
        )
        worst = worst_case(flow, pool)
        _budget_warnings(flow, worst, resolved.budget_span, reader)
        _unpriced_warning(flow, pool, resolved.budget_span, reader)
    reader.diagnostics.sort(key=Diagnostic.sort_key)
    return CheckResult(flow, reader.diagnostics, worst)


def _budget_warnings(flow: Flow, worst: WorstCase, span: ast.Span | None, reader: Reader) -> None:
    if span is None:
        return
    b = flow.budget
    over = []
    if b.usd is not None and worst.usd > b.usd + 1e-12:
        over.append(f"${worst.usd:.4f} > ${b.usd:g}")
    if b.calls is not None and worst.calls > b.calls:
        over.append(f"{worst.calls} calls > {b.calls}")
    if b.tokens is not None and worst.tokens > b.tokens:
        over.append(f"~{worst.tokens} tokens > {b.tokens}")
    if over:
        reader.error("W403", f"worst case exceeds the budget ({'; '.join(over)}); the run will be capped", span,
                     "raise the budget, or lower retries, max_tokens, rounds or panel size")


def _unpriced_warning(flow: Flow, pool: Pool, span: ast.Span | None, reader: Reader) -> None:
    """A dollar cap cannot bound a call to an alias without prices: say so here, since the run will refuse such calls."""
    if span is None or flow.budget.usd is None:
        return
    models = pool.with_models(flow.models).models
    unpriced = [a for a in flow.aliases() if a in models and not models[a].priced and not pool.provider(models[a].provider).free]
    if unpriced:
        reader.error("W405", f"the budget ${flow.budget.usd:g} cannot bound calls to {', '.join(f'`{a}`' for a in unpriced)}: "
                             "they have no prices in the pool, so the run will refuse them", span,
                     "give each of them input_price and output_price in the pool (an upper bound will do; 0 for a free server)")
