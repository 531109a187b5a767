"""The `--otel` options of `baton run` and `baton serve`: live spans to an OpenTelemetry collector."""

from __future__ import annotations

import argparse
import sys

from engine.run.observer import RunObserver
from engine.tracing import endpoint_from_environment, otel_missing


def add_otel_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--otel", nargs="?", const="", metavar="URL",
                   help="export spans as runs go, over OTLP/HTTP to URL (default: $OTEL_EXPORTER_OTLP_ENDPOINT, else "
                        "http://localhost:4318); on whenever that variable is set")
    p.add_argument("--otel-content", action="store_true", help="include prompt and reply text in the spans (off by default)")


def observers_for(args: argparse.Namespace) -> list[RunObserver] | str:
    """The observers the options ask for, or the error message that stops the command."""
    asked = args.otel is not None
    from_env = endpoint_from_environment()
    if not asked and not from_env:
        if args.otel_content:
            return "--otel-content needs --otel (or OTEL_EXPORTER_OTLP_ENDPOINT)"
        return []
    missing = otel_missing()
    if missing is not None:
        if asked:
            return missing
        print(f"baton: warning: OTEL_EXPORTER_OTLP_ENDPOINT is set, but spans are not exported: {missing}", file=sys.stderr)
        return []
    from engine.tracing.otel import OtelObserver, otlp_exporter

    return [OtelObserver(otlp_exporter(args.otel or None), content=args.otel_content)]


def close_observers(observers: list[RunObserver]) -> None:
    for observer in observers:
        close = getattr(observer, "close", None)
        if close is not None:
            close()
