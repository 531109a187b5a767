"""A run as OpenTelemetry spans: names (`names`), the span tree built from records (`spans`), export (`otel`).

Only `otel` imports OpenTelemetry, and only when a run is traced (`baton[otel]`).
"""

from __future__ import annotations

import importlib.util
import os

#: The variables with which OpenTelemetry's SDKs are told where to send traces.
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def otel_missing() -> str | None:
    """Why tracing cannot work here, or None when the extra is installed."""
    for module in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            return "OpenTelemetry export needs the otel extra: pip install 'baton[otel]'"
    return None


def endpoint_from_environment() -> str | None:
    """The collector OpenTelemetry's environment names, if any: setting it turns live tracing on."""
    return next((os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), None)
