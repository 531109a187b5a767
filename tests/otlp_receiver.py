"""A real OTLP/HTTP trace receiver on loopback: takes `POST /v1/traces` (protobuf, maybe gzipped) as a collector
does and decodes it with `opentelemetry-proto`, so tests see what a collector would, not what an in-memory exporter keeps."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from engine.testing.loopback import LoopbackServer


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, which) if which else None


@dataclass
class Span:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    service: str

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


class OtlpReceiver(LoopbackServer):
    thread_name = "otlp-receiver"

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.spans: list[Span] = []
        self.requests = 0

    @property
    def url(self) -> str:
        """The collector's base address, as OTEL_EXPORTER_OTLP_ENDPOINT gives it."""
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.status != 200:
            return web.Response(status=self.status, text="refused")
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        for resource_spans in message.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    self.spans.append(Span(s.name, s.kind, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                                           s.start_time_unix_nano, s.end_time_unix_nano,
                                           {a.key: _value(a.value) for a in s.attributes}, s.status.code, s.status.message,
                                           str(resource.get("service.name", ""))))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf")

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/traces", self._handle)
