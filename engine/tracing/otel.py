"""Sending a run's spans to OpenTelemetry: live as a run goes (`OtelObserver`), or from its record afterwards (`export_run`).

This is the only module that imports OpenTelemetry (the `baton[otel]` extra); without it,
`engine.tracing.otel_missing()` says what to install. Baton keeps its own tracer provider and never sets
the global one: an application that embeds a `Session` keeps its tracing as it set it up.
A collector that is down never fails a run: the live exporter drops what it cannot send
(OpenTelemetry's batch processor logs it); `export_run` reports it, as a command should.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from engine.errors import BatonError
from engine.model import Flow
from engine.pool import Pool
from engine.records.explain import RecordedRun
from engine.run.trace import RunSummary, StepResult, is_nested
from engine.tracing import names
from engine.tracing.spans import SpanSpec, node_span, run_spans, workflow_span

TRACES_PATH = "/v1/traces"


class TraceExportError(BatonError):
    """The spans could not be delivered (the collector refused them or could not be reached)."""


def traces_url(base: str) -> str:
    """A collector's OTLP/HTTP address as `OTEL_EXPORTER_OTLP_ENDPOINT` gives it (`http://host:4318`), or already ending in `/v1/traces`."""
    base = base.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


def otlp_exporter(url: str | None = None, timeout: float | None = None) -> SpanExporter:
    """OTLP/HTTP (protobuf); what is not given, OpenTelemetry's own environment variables choose (endpoint, headers, timeout)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=traces_url(url) if url else None, timeout=timeout)


class JsonLinesExporter(SpanExporter):
    """Spans in OTLP/JSON, one `ExportTraceServiceRequest` a line (`{"resourceSpans": [...]}`), as OpenTelemetry's
    file exporter writes them and collectors and backends import them: trace and span ids in hex, enums as integers,
    times as strings of Unix nanoseconds. (The SDK's `span.to_json()` is a debug form: `"0x..."` ids, `SpanKind.CLIENT`.)"""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from google.protobuf.json_format import MessageToDict
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        request = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
        self.out.write(json.dumps(_hex_ids(request), ensure_ascii=False, separators=(",", ":")) + "\n")
        self.out.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(value: Any) -> Any:
    """OTLP/JSON's ids are hex, where protobuf's JSON mapping writes bytes in base64."""
    if isinstance(value, dict):
        return {k: (base64.b64decode(v).hex() if k in _ID_FIELDS and isinstance(v, str) else _hex_ids(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_hex_ids(v) for v in value]
    return value


class _Collect(SpanProcessor):
    """Holds ended spans so that a recorded run goes out as one export, whose result can be reported."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def _provider(processor: SpanProcessor) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "baton"}))
    provider.add_span_processor(processor)
    return provider


def _ns(epoch: float) -> int:
    return int(epoch * 1_000_000_000)


def emit(tracer: trace.Tracer, spec: SpanSpec, parent: Any = None, end: bool = True) -> trace.Span:
    """Start (and, unless `end` is False, end) the span of `spec` and of all its children, at their recorded times."""
    kind = SpanKind.CLIENT if spec.kind == "client" else SpanKind.INTERNAL
    span = tracer.start_span(spec.name, context=parent, kind=kind, attributes=spec.attributes, start_time=_ns(spec.start))
    if spec.error:
        span.set_status(Status(StatusCode.ERROR, spec.error[:1000]))
    inside = trace.set_span_in_context(span)
    for child in spec.children:
        emit(tracer, child, inside)
    if end:
        span.end(end_time=_ns(max(spec.end, spec.start)))
    return span


def export_run(run: RecordedRun, exporter: SpanExporter, content: bool = False) -> int:
    """Export a recorded run's span tree through `exporter`; returns how many spans went. `TraceExportError` if they did not."""
    collect = _Collect()
    provider = _provider(collect)
    top = set(run.top_level())
    emit(provider.get_tracer(names.TRACER_NAME), run_spans(run.summary, top.__contains__, run.pool, content, run.inputs))
    result = exporter.export(collect.spans)
    exporter.shutdown()
    if result is not SpanExportResult.SUCCESS:
        raise TraceExportError(f"the collector did not take the {len(collect.spans)} spans of run {run.summary.run_id}")
    return len(collect.spans)


def export_run_to_file(run: RecordedRun, path: str | Path, content: bool = False) -> int:
    with open(path, "w", encoding="utf-8") as out:
        return export_run(run, JsonLinesExporter(out), content)


class _LiveRun(NamedTuple):
    """What an observer keeps of a run in flight: its open workflow span, and what its node spans need."""

    span: trace.Span
    context: Any
    top_level: set[str]
    pool: Pool
    inputs: Mapping[str, str]
    #: Sub-flows' steps finished so far (`review/draft`): their spans go under their `use`'s, sent when it finishes.
    nested: dict[str, StepResult]


class OtelObserver:
    """Spans as a run goes, for every run of a `Session` (`Session(observers=[...])`): the workflow span opens when
    the run starts, each node's span (with its calls) is sent when the node finishes, the workflow span when it ends."""

    def __init__(self, exporter: SpanExporter | None = None, content: bool = False) -> None:
        self.content = content
        self.provider = _provider(BatchSpanProcessor(exporter or otlp_exporter()))
        self.tracer = self.provider.get_tracer(names.TRACER_NAME)
        self._runs: dict[str, _LiveRun] = {}
        self._lock = threading.Lock()

    def run_started(self, summary: RunSummary, flow: Flow, pool: Pool, inputs: Mapping[str, str]) -> None:
        span = emit(self.tracer, workflow_span(summary, content=self.content, inputs=inputs), end=False)
        with self._lock:
            self._runs[summary.run_id] = _LiveRun(span, trace.set_span_in_context(span), set(flow.top_level()), pool, inputs, {})

    def step_finished(self, run_id: str, step: StepResult) -> None:
        with self._lock:
            entry = self._runs.get(run_id)
        if entry is None:
            return
        if step.name not in entry.top_level:
            if is_nested(step.name):
                entry.nested[step.name] = step
            return
        spec = node_span(step, entry.pool, self.content, entry.nested)
        if spec is not None:
            emit(self.tracer, spec, entry.context)

    def run_finished(self, summary: RunSummary) -> None:
        with self._lock:
            entry = self._runs.pop(summary.run_id, None)
        if entry is None:
            return
        span = entry.span
        final = workflow_span(summary, content=self.content, inputs=entry.inputs)
        span.set_attributes(final.attributes)
        if final.error:
            span.set_status(Status(StatusCode.ERROR, final.error[:1000]))
        span.end(end_time=_ns(max(final.end, final.start)))

    def close(self) -> None:
        """Send what is buffered and stop; call once, when the session is done."""
        self.provider.force_flush()
        self.provider.shutdown()
