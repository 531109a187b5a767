"""`baton trace export RUN --otlp URL | --jsonl FILE`: a recorded run's spans, after the fact (the record is the source of truth)."""

from __future__ import annotations

import argparse
import logging

from engine.cli.common import fail
from engine.cli.exits import EXIT_FAILED, EXIT_USAGE
from engine.records.explain import load_recorded_run
from engine.tracing import otel_missing


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = sub.add_parser("export", help="export a recorded run's spans", description="export a recorded run's spans")
    export.add_argument("run_id", metavar="RUN", help="a run id (a unique prefix is enough)")
    where = export.add_mutually_exclusive_group(required=True)
    where.add_argument("--otlp", metavar="URL", help="an OTLP/HTTP collector (http://host:4318, or its full /v1/traces address)")
    where.add_argument("--jsonl", metavar="FILE", help="write the spans as JSON lines to FILE")
    export.add_argument("--content", action="store_true", help="include prompt and reply text (off by default)")
    export.add_argument("--home", metavar="DIR")


def run(args: argparse.Namespace) -> int:
    missing = otel_missing()
    if missing is not None:
        return fail(missing, EXIT_USAGE)
    from engine.tracing.otel import TraceExportError, export_run, export_run_to_file, otlp_exporter

    recorded = load_recorded_run(args.run_id, args.home)  # an unknown run or home: cli.main says so
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)  # its retry warnings; the outcome is reported below
    try:
        if args.jsonl:
            count = export_run_to_file(recorded, args.jsonl, args.content)
        else:
            count = export_run(recorded, otlp_exporter(args.otlp, timeout=5.0), args.content)
    except TraceExportError as err:
        return fail(f"{err} at {args.otlp} (it refused them, or could not be reached within 5 s)", EXIT_FAILED)
    except OSError as err:
        return fail(f"cannot write {args.jsonl}: {err.strerror or err}", EXIT_FAILED)
    print(f"exported {count} spans of run {recorded.summary.run_id} to {args.jsonl or args.otlp}")
    return 0
