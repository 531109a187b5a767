"""The command line's exit codes, in one place; every command returns one of these.

    0 ok, 1 invalid flow (validate, fmt, graph) or failed run, 2 usage error (bad arguments,
    inputs, pool, run id or home), 3 budget exhausted, 130 interrupted, 128 + N killed by signal N.
"""

from __future__ import annotations

from engine.errors import BatonError, BudgetExceeded, RunCancelled, RunError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BUDGET = 3
EXIT_INTERRUPTED = 130


def for_error(err: BatonError) -> int:
    """The exit code of an error a command let through: a failed run by `for_run_error`; anything else the user gave
    (inputs, a pool, a run id, a home, keys, a router file) is a usage error."""
    return for_run_error(err) if isinstance(err, RunError) else EXIT_USAGE


#: Commands whose subject is the flow: an invalid flow is their answer (1), not a usage error (2) as for a command that runs it.
FLOW_CHECKERS = frozenset({"validate", "fmt", "graph"})


def for_flow_error(command: str) -> int:
    """The exit code of a flow that does not check, by the command that read it."""
    return EXIT_FAILED if command in FLOW_CHECKERS else EXIT_USAGE


def for_run_error(err: BaseException, signal_number: int | None = None) -> int:
    """The exit code of a run that raised `err` (a `RunError`): budget, interrupted (or the signal's code), or failed."""
    if isinstance(err, BudgetExceeded):
        return EXIT_BUDGET
    if isinstance(err, RunCancelled):
        return 128 + signal_number if signal_number else EXIT_INTERRUPTED
    return EXIT_FAILED
