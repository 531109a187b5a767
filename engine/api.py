"""Baton's Python API in one namespace: everything the command line uses, and what an application needs.

The CLI is a thin face over this module and imports nothing else of the engine
(`tests/test_quality.py` enforces it). Names are imported lazily, on first use, so that
`baton validate` loads no runtime, provider or network code; type checkers see them all
through the `TYPE_CHECKING` block. The short list for applications is `engine.__all__`:
`Session` first (docs/api.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.checks import CheckResult
    from engine.diagnostics import Diagnostic, render_all
    from engine.errors import (
        BatonError,
        BudgetExceeded,
        FlowError,
        HomeError,
        InputError,
        PoolError,
        ProviderError,
        RouteError,
        RunCancelled,
        RunError,
        UnknownRun,
        VerificationFailed,
    )
    from engine.eval.dataset import load_dataset
    from engine.eval.html import render_html
    from engine.eval.runner import EvalReport, evaluate
    from engine.eval.scorers import judge_through, make_scorer
    from engine.graph import to_dot, to_json, to_mermaid
    from engine.loading import check_file, check_source, load_flow, read_flow_text
    from engine.lsp import lsp_missing
    from engine.lsp.server import lsp_main
    from engine.model import Flow, Params
    from engine.planner.conductor import parse_completion, parse_map, to_flow
    from engine.planner.limits import ALL_CONSTRUCTS, PlanLimits
    from engine.planner.plan import PlanResult, plan
    from engine.planner.rounds import AskOutcome, ask_rounds
    from engine.pool import Pool, default_pool, discover_pool, load_pool
    from engine.providers.scripted import ScriptedProvider
    from engine.records.explain import RecordedRun, load_recorded_run
    from engine.records.render import render_run, run_json, runs_table
    from engine.records.run_page import render_run_page
    from engine.records.runs_page import filter_runs, render_runs_page
    from engine.router.files import load_router, route_calls
    from engine.router.from_eval import examples_from_eval
    from engine.router.grid import grid_models, load_grid, split_grid
    from engine.router.model import Router, RouterError, data_hash, train_router
    from engine.router.policy import calibrate_accuracy, calibrate_strong_share
    from engine.router.report import build_router_report, render_router_report, router_curve
    from engine.run.cache import ResponseCache
    from engine.run.calls import RetryPolicy
    from engine.run.embedder import pool_embedder
    from engine.run.home import RunHome, new_run_id
    from engine.run.observer import RunObserver
    from engine.run.protocol import ChatRequest, ChatResponse, Provider, ProviderFault
    from engine.run.reader import list_runs, load_run
    from engine.run.trace import Attempt, RouteDecision, RunSummary, StepResult
    from engine.semdiff import FlowDiff, diff_flows, flow_diff_json, render_flow_diff
    from engine.serve.catalog import CatalogError
    from engine.serve.keys import KeysError, add_key
    from engine.serve.server import ServeError, serve
    from engine.session import CallResult, Session, SyncSession, run_flow, run_flow_sync
    from engine.syntax.fmt import format_source
    from engine.terminal import for_terminal, one_line
    from engine.tracing import endpoint_from_environment, otel_missing
    from engine.tracing.otel import OtelObserver, TraceExportError, export_run, export_run_to_file, otlp_exporter
    from engine.wiring import MAX_INPUT_BYTES, ProviderSet, check_inputs, pool_snapshot, unset_key_variable

__all__ = [
    "ALL_CONSTRUCTS",
    "AskOutcome",
    "Attempt",
    "BatonError",
    "BudgetExceeded",
    "CallResult",
    "CatalogError",
    "ChatRequest",
    "ChatResponse",
    "CheckResult",
    "Diagnostic",
    "EvalReport",
    "Flow",
    "FlowDiff",
    "FlowError",
    "HomeError",
    "InputError",
    "KeysError",
    "MAX_INPUT_BYTES",
    "OtelObserver",
    "Params",
    "PlanLimits",
    "PlanResult",
    "Pool",
    "PoolError",
    "Provider",
    "ProviderError",
    "ProviderFault",
    "ProviderSet",
    "RecordedRun",
    "ResponseCache",
    "RetryPolicy",
    "RouteDecision",
    "RouteError",
    "Router",
    "RouterError",
    "RunCancelled",
    "RunError",
    "RunHome",
    "RunObserver",
    "RunSummary",
    "ScriptedProvider",
    "ServeError",
    "Session",
    "StepResult",
    "SyncSession",
    "TraceExportError",
    "UnknownRun",
    "VerificationFailed",
    "add_key",
    "ask_rounds",
    "build_router_report",
    "calibrate_accuracy",
    "calibrate_strong_share",
    "check_file",
    "check_inputs",
    "check_source",
    "data_hash",
    "default_pool",
    "diff_flows",
    "discover_pool",
    "endpoint_from_environment",
    "evaluate",
    "examples_from_eval",
    "export_run",
    "export_run_to_file",
    "filter_runs",
    "flow_diff_json",
    "for_terminal",
    "format_source",
    "grid_models",
    "judge_through",
    "list_runs",
    "load_dataset",
    "load_flow",
    "load_grid",
    "load_pool",
    "load_recorded_run",
    "load_router",
    "route_calls",
    "pool_embedder",
    "load_run",
    "lsp_main",
    "lsp_missing",
    "make_scorer",
    "new_run_id",
    "one_line",
    "otel_missing",
    "otlp_exporter",
    "parse_completion",
    "parse_map",
    "plan",
    "pool_snapshot",
    "read_flow_text",
    "render_all",
    "render_flow_diff",
    "render_html",
    "render_router_report",
    "render_run",
    "render_run_page",
    "render_runs_page",
    "router_curve",
    "run_flow",
    "run_flow_sync",
    "run_json",
    "runs_table",
    "serve",
    "split_grid",
    "to_dot",
    "to_flow",
    "to_json",
    "to_mermaid",
    "train_router",
    "unset_key_variable",
]

_WHERE: dict[str, str] = {name: module for module, names in {
    "engine.checks": ['CheckResult'],
    "engine.diagnostics": ['Diagnostic', 'render_all'],
    "engine.errors": ['BatonError', 'BudgetExceeded', 'FlowError', 'HomeError', 'InputError', 'PoolError', 'ProviderError', 'RouteError', 'RunCancelled', 'RunError', 'UnknownRun', 'VerificationFailed'],
    "engine.eval.dataset": ['load_dataset'],
    "engine.eval.html": ['render_html'],
    "engine.eval.runner": ['EvalReport', 'evaluate'],
    "engine.eval.scorers": ['judge_through', 'make_scorer'],
    "engine.graph": ['to_dot', 'to_json', 'to_mermaid'],
    "engine.loading": ['check_file', 'check_source', 'load_flow', 'read_flow_text'],
    "engine.lsp": ['lsp_missing'],
    "engine.lsp.server": ['lsp_main'],
    "engine.model": ['Flow', 'Params'],
    "engine.planner.conductor": ['parse_completion', 'parse_map', 'to_flow'],
    "engine.planner.limits": ['ALL_CONSTRUCTS', 'PlanLimits'],
    "engine.planner.plan": ['PlanResult', 'plan'],
    "engine.planner.rounds": ['AskOutcome', 'ask_rounds'],
    "engine.pool": ['Pool', 'default_pool', 'discover_pool', 'load_pool'],
    "engine.providers.scripted": ['ScriptedProvider'],
    "engine.records.explain": ['RecordedRun', 'load_recorded_run'],
    "engine.records.render": ['render_run', 'run_json', 'runs_table'],
    "engine.records.run_page": ['render_run_page'],
    "engine.records.runs_page": ['filter_runs', 'render_runs_page'],
    "engine.router.from_eval": ['examples_from_eval'],
    "engine.router.grid": ['grid_models', 'load_grid', 'split_grid'],
    "engine.router.files": ['load_router', 'route_calls'],
    "engine.router.model": ['Router', 'RouterError', 'data_hash', 'train_router'],
    "engine.router.policy": ['calibrate_accuracy', 'calibrate_strong_share'],
    "engine.router.report": ['build_router_report', 'render_router_report', 'router_curve'],
    "engine.run.cache": ['ResponseCache'],
    "engine.run.embedder": ['pool_embedder'],
    "engine.run.calls": ['RetryPolicy'],
    "engine.run.home": ['RunHome', 'new_run_id'],
    "engine.run.protocol": ['ChatRequest', 'ChatResponse', 'Provider', 'ProviderFault'],
    "engine.run.reader": ['list_runs', 'load_run'],
    "engine.run.observer": ['RunObserver'],
    "engine.run.trace": ['Attempt', 'RouteDecision', 'RunSummary', 'StepResult'],
    "engine.serve.catalog": ['CatalogError'],
    "engine.serve.keys": ['KeysError', 'add_key'],
    "engine.serve.server": ['ServeError', 'serve'],
    "engine.session": ['CallResult', 'Session', 'SyncSession', 'run_flow', 'run_flow_sync'],
    "engine.semdiff": ['FlowDiff', 'diff_flows', 'render_flow_diff', 'flow_diff_json'],
    "engine.syntax.fmt": ['format_source'],
    "engine.tracing": ['endpoint_from_environment', 'otel_missing'],
    "engine.tracing.otel": ['OtelObserver', 'TraceExportError', 'export_run', 'export_run_to_file', 'otlp_exporter'],
    "engine.terminal": ['for_terminal', 'one_line'],
    "engine.wiring": ['MAX_INPUT_BYTES', 'ProviderSet', 'check_inputs', 'pool_snapshot', 'unset_key_variable'],
}.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module 'engine.api' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
