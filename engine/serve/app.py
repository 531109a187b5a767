"""The HTTP face of `baton serve`: OpenAI's chat-completions API over flows and pool aliases.

aiohttp.web, chosen by measurement (bench/serve_stack.py: 1.7x the requests per second
of Starlette + uvicorn on 2 cores, a third of the CPU per request) and already a core
dependency. One `Session` serves every request, so connection pools, concurrency limits
and the response cache are shared by all of them. Errors are in OpenAI's shape, so the
official SDKs raise their usual exceptions (404 `NotFoundError`, 401 `AuthenticationError`,
402 with `x-should-retry: false`, which the SDK does not retry).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.errors import BudgetExceeded, InputError, PoolError, RunCancelled, RunError
from engine.model import Flow, Params, node_models
from engine.pool import Pool
from engine.run.budget import BudgetGuard
from engine.run.home import new_run_id
from engine.run.protocol import ToolOffer
from engine.run.reader import load_run
from engine.run.secrets import Secrets
from engine.run.trace import RunSummary
from engine.serve import guard, mapping, pages, tools
from engine.serve.catalog import Catalog
from engine.serve.chat_api import ChatWire
from engine.serve.guard import BrowserPolicy
from engine.serve.keys import Accounts, KeySpec, bearer_token, find_key, stored_keys
from engine.serve.ledger import Ledger
from engine.serve.ledgers import open_ledger
from engine.serve.messages_api import MessagesWire
from engine.serve.passthrough import CallRecord
from engine.serve.responses_api import ResponsesWire
from engine.serve.shared_cache import LedgerCache
from engine.serve.shared_records import SharedRecords, shared_summary
from engine.serve.stream import SSEAnswer
from engine.serve.wire import MESSAGES_PATH, Wire, error_response
from engine.session import Session

log = logging.getLogger("baton.serve")
NO_RETRY = {"x-should-retry": "false"}


@dataclass
class ServerState:
    """What every request shares."""

    session: Session
    catalog: Catalog
    keys: dict[str, KeySpec] | None = None
    ledger: Ledger | None = None
    accounts: Accounts | None = None
    #: Replicas on several machines: finished runs' records kept in the shared ledger (`engine.serve.shared_records`).
    shared: SharedRecords | None = None
    started: float = field(default_factory=time.time)
    served: int = 0

    @property
    def pool(self) -> Pool:
        return self.session.pool


STATE: web.AppKey[ServerState] = web.AppKey("baton", ServerState)
KEY: web.RequestKey[KeySpec | None] = web.RequestKey("baton_key", object)  # type: ignore[arg-type]


CHAT, RESPONSES, MESSAGES = ChatWire(), ResponsesWire(), MessagesWire()


@web.middleware
async def authenticate(request: web.Request, handler: Any) -> web.StreamResponse:
    state = request.app[STATE]
    request[KEY] = None
    if state.keys is not None and request.path != "/health":
        key = find_key(state.keys, request.headers.get("Authorization"), allow_basic=_is_page(request.path))
        if key is None and request.path == MESSAGES_PATH and request.headers.get("x-api-key"):  # Anthropic's clients
            key = find_key(state.keys, f"Bearer {request.headers['x-api-key']}", allow_basic=False)
        if key is None and _is_page(request.path):
            return pages.login_required()
        if key is None:
            return error_response(mapping.RequestError("Incorrect API key provided: pass a key from the server's keys file as "
                                                       "`Authorization: Bearer ...`", 401, code="invalid_api_key"), request.path)
        request[KEY] = key
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except mapping.RequestError as err:
        return error_response(err, request.path)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as err:  # a path or method this API does not have: still an API's shape
        words = f"{request.method} {request.path} is not an endpoint of this server ({err.reason}); it serves " \
                "POST /v1/chat/completions, POST /v1/responses, POST /v1/messages, GET /v1/models, GET /v1/runs/{id}, " \
                "GET /health and the pages /runs and /runs/{id}"
        return error_response(mapping.RequestError(words, err.status, code="not_found" if err.status == 404 else "method_not_allowed"),
                              request.path)


@web.middleware
async def contain_failures(request: web.Request, handler: Any) -> web.StreamResponse:
    """A fault of Baton's own is still an answer in OpenAI's shape (500), logged once, never a plain-text traceback."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except (web.HTTPException, mapping.RequestError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("request %s %s failed", request.method, request.path)
        return error_response(mapping.RequestError("the server failed while answering this request; it is logged", 500,
                                                   code="server_error"), request.path)


def _is_page(path: str) -> bool:
    return path == "/runs" or path.startswith("/runs/")


async def runs_list(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return pages.runs_list(state.session.home, state.ledger, request[KEY], dict(request.query))


async def run_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return pages.run_page(state.session.home, state.ledger, request[KEY], request.match_info["run_id"])


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({"status": "ok", "flows": len(state.catalog.flows), "aliases": len(state.pool.models),
                              "requests": state.served, "uptime_s": round(time.time() - state.started, 1)})


async def models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    data: list[dict[str, Any]] = []
    for name, offered in sorted(state.catalog.flows.items()):
        data.append({"id": name, "object": "model", "created": int(offered.mtime_ns // 1_000_000_000), "owned_by": "baton",
                     "baton": {"kind": "flow", "flow": offered.flow.name, "description": offered.flow.description,
                               "inputs": list(offered.flow.inputs), "worst_case": offered.worst.to_json(),
                               "budget_usd": offered.flow.budget.usd,
                               # a flow whose output step `returns:` fields answers with that JSON object: say its schema
                               "output_schema": getattr(offered.flow.nodes.get(offered.flow.output), "returns", None)}})
    for alias, spec in sorted(state.pool.models.items()):
        data.append({"id": alias, "object": "model", "created": int(state.started), "owned_by": spec.provider,
                     "baton": {"kind": "alias", "model_id": spec.id, "description": spec.description,
                               "input_price": spec.input_price, "output_price": spec.output_price, "context": spec.context}})
    return web.json_response({"object": "list", "data": data})


async def run_summary(request: web.Request) -> web.Response:
    state = request.app[STATE]
    run_id = request.match_info["run_id"]
    key = request[KEY]
    not_found = mapping.RequestError(f"no run `{run_id}`", 404, code="run_not_found")
    if key is not None and (state.ledger is None or await state.ledger.owner_async(run_id) != key.name):
        raise not_found  # another key's run, or none: the same answer, so ids cannot be probed
    try:
        summary = load_run(run_id, state.session.home.root)
    except (LookupError, RunError, PoolError, OSError):
        shared = shared_summary(state.ledger, run_id)  # finished on another replica
        if shared is None:
            raise not_found from None
        summary = shared
    if summary.run_id != run_id:  # a unique prefix finds a run in `baton show`; here the id must be exact
        raise not_found
    return web.json_response(summary.model_dump(mode="json"))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, CHAT)


async def responses(request: web.Request) -> web.StreamResponse:
    return await _serve(request, RESPONSES)


async def messages(request: web.Request) -> web.StreamResponse:
    return await _serve(request, MESSAGES)


def _presented_key(request: web.Request) -> str:
    """The key the client sent: a bearer token, or Anthropic's `x-api-key`."""
    return bearer_token(request.headers.get("Authorization"), allow_basic=False) or request.headers.get("x-api-key", "").strip()


async def _serve(request: web.Request, wire: Wire) -> web.StreamResponse:
    """One request in any wire format: parsed into an `Ask`, run on a flow or an alias, answered in its format."""
    state = request.app[STATE]
    state.served += 1
    ask = wire.parse(mapping.json_body(await request.read()), request.headers)
    model = ask.model
    offered = state.catalog.flows.get(model)
    if offered is None and model not in state.pool.models:
        names = [*state.catalog.flows, *state.pool.models]
        raise mapping.RequestError(f"The model `{model}` does not exist; this server offers: {', '.join(names) or 'nothing'}",
                                   404, param="model", code="model_not_found")
    refused = ask.refused_on_aliases if offered is None else ask.refused_on_flows
    if refused:
        where = f"a flow (`{model}`)" if offered is not None else f"a pool alias (`{model}`)"
        raise mapping.RequestError(f"`{refused[0]}` is not supported on {where} through baton serve yet", param=refused[0])
    if offered is None and ask.tools is not None and not state.pool.provider(state.pool.models[model].provider).passes_tools:
        raise mapping.RequestError(f"`tools`: the pool alias `{model}` is served by a provider that does not call tools (the "
                                   "embedded models, scripts and replays); use an alias of an OpenAI-compatible provider", param="tools")
    own_key = Secrets([_presented_key(request)])
    messages, options, chat = ask.messages, ask.options, ask.chat
    if own_key:  # a client that pastes its own key into a message: it reaches no model and no record
        messages = [(role, own_key.scrub(text)) for role, text in messages]
        chat = [{**m, "content": own_key.scrub(m["content"])} if isinstance(m.get("content"), str) else m for m in chat]
        if isinstance(options.get("inputs"), dict):
            options["inputs"] = {k: own_key.scrub(v) if isinstance(v, str) else v for k, v in options["inputs"].items()}
    max_cost = mapping.max_cost(options)
    key = request[KEY]
    account = state.accounts.account(key) if key is not None and state.accounts is not None else None
    run_id = new_run_id()
    headers = {mapping.RUN_HEADER: run_id}
    answer = SSEAnswer(request, headers, wire.encoder(run_id, ask)) if ask.stream else None
    params = ask.params if ask.response_format is None else {**ask.params, "response_format": ask.response_format}
    if offered is None:
        work = _call_alias(state, model, chat or [{"role": role, "content": text} for role, text in messages], ask.tools, params,
                           max_cost, account, run_id, answer)
    else:
        system = "\n\n".join(text for role, text in messages if role in ("system", "developer")) or None
        flow = mapping.with_request_params(offered.flow, ask.params, system)
        if ask.response_format is not None:
            flow = mapping.with_structured_output(flow, ask.response_format)
        if ask.tools is not None:
            flow = mapping.with_tools(flow, ask.tools)
            _check_tool_callers(state, flow)
        inputs = mapping.flow_inputs(flow, messages, options.get("inputs"), mapping.tool_exchange(chat))
        unseen = mapping.unseen_turns(flow, messages)
        if unseen:
            headers[mapping.WARNING_HEADER] = unseen
        work = state.session.run(flow, inputs, budget_usd=max_cost, account=account, run_id=run_id, notes=[unseen] if unseen else (),
                                 on_text=answer.text if answer else None, progress=answer.progress if answer else None)
    if state.ledger is not None and key is not None:  # mapped: a run will be recorded under this id
        try:
            await state.ledger.own_async(run_id, key.name, model)
        except BaseException:
            work.close()  # never started
            raise
    if state.shared is not None and offered is not None:  # a flow's record goes to the shared ledger as it ends: answer after
        work = _after_landing(state.shared, run_id, work)
    if answer is not None:
        return await answer.serve(work, lambda err: _failure(err, run_id))
    try:
        summary = await work
    except (RunError, InputError, PoolError) as err:
        raise _failure(err, run_id) from None
    return web.json_response(wire.answer(summary, run_id, ask), headers=headers, dumps=_dumps)


async def _after_landing(shared: SharedRecords, run_id: str, work: Coroutine[Any, Any, RunSummary]) -> RunSummary:
    """The run, then its row in the shared ledger written (another replica asked for it right after the answer finds it)."""
    try:
        return await work
    finally:
        await shared.landed(run_id)


def _check_tool_callers(state: ServerState, flow: Flow) -> None:
    """Every model a step offered the tools may call must be served by a provider that calls tools (not the embedded models)."""
    pool = state.pool.with_models(flow.models)
    for name in mapping.tool_takers(flow):
        for alias in node_models(flow.nodes[name]):
            if not pool.provider(pool.models[alias].provider).passes_tools:
                which = f"output step `{name}`" if name == flow.output else f"step `{name}` (tools: client)"
                raise mapping.RequestError(f"flow `{flow.name}` cannot take tools: its {which} may call `{alias}`, whose provider "
                                           "does not call tools (the embedded models, scripts and replays)", param="tools")


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _failure(err: Exception, run_id: str) -> mapping.RequestError:
    """A failed request in OpenAI's error shape, with the status an SDK acts on correctly.

    A failed run was recorded: its id goes in the `x-baton-run-id` header, as with an answer."""
    problem = _problem(err)
    if isinstance(err, RunError):
        problem.headers = {**problem.headers, mapping.RUN_HEADER: run_id}
    return problem


def _problem(err: Exception) -> mapping.RequestError:
    if isinstance(err, mapping.RequestError):
        return err
    if isinstance(err, InputError):
        return mapping.RequestError(str(err), 400, param="baton.inputs")
    if isinstance(err, BudgetExceeded):
        return mapping.RequestError(str(err), 402, code="budget_exceeded", headers=NO_RETRY)
    if isinstance(err, PoolError):  # e.g. the server's provider key is not set: not the client's fault
        return mapping.RequestError(f"the server cannot reach its models: {err}", 503, code="server_misconfigured")
    run_id = getattr(getattr(err, "summary", None), "run_id", None)
    where = f" (run {run_id}: see GET /v1/runs/{run_id})" if run_id else ""
    return mapping.RequestError(f"{err}{where}", 502, code="upstream_error")


async def _call_alias(state: ServerState, alias: str, chat: list[dict[str, Any]], offer: ToolOffer | None, params: dict[str, Any],
                      max_cost: float | None, account: BudgetGuard | None, run_id: str, answer: SSEAnswer | None) -> RunSummary:
    """A pool alias: the messages as they are (tools and tool results included), one call with the alias's policy,
    recorded as a run of one step (with the tools offered and the calls made)."""
    record = CallRecord(state.session, run_id, alias, chat, tools.names(offer))
    record.open()  # in flight from now on: /runs shows it
    try:
        await state.session.call(alias, chat, params=Params(**params), budget_usd=max_cost, account=account,
                                 on_text=answer.text if answer else None, step="call", into=record.call, tools=offer)
    except RunError as err:
        err.summary = await _closed_async(state, record, err)
        raise
    except asyncio.CancelledError:  # the client went away mid-call: the record keeps what was sent and what it cost
        _closed(state, record, RunCancelled("the client disconnected before the reply was complete"))
        raise
    except BaseException as err:
        _closed(state, record, RunError(f"the call failed: {type(err).__name__}"))
        raise
    return await _closed_async(state, record)


def _closed(state: ServerState, record: CallRecord, error: RunError | None = None) -> RunSummary:
    """The call's final record, also kept in the shared ledger when replicas share records (now: the call's task is
    being cancelled, so nothing is awaited)."""
    summary = record.close(error=error)
    if state.shared is not None:
        state.shared.keep_call(summary, json.dumps(record.messages, ensure_ascii=False), json.loads(state.session.pool_record()))
    return summary


async def _closed_async(state: ServerState, record: CallRecord, error: RunError | None = None) -> RunSummary:
    """`_closed`, awaiting a shared ledger across a network off the event loop."""
    summary = record.close(error=error)
    if state.shared is not None:
        await state.shared.keep_call_async(summary, json.dumps(record.messages, ensure_ascii=False), json.loads(state.session.pool_record()))
    return summary


def build_app(state: ServerState, reload_every: float | None = None, policy: BrowserPolicy | None = None) -> web.Application:
    """The server's app; `policy` is what it accepts from browsers (default: a server on 127.0.0.1, no other origins)."""
    app = web.Application(middlewares=[guard.middleware(policy or BrowserPolicy()), authenticate, contain_failures],
                          client_max_size=16 * 1024 * 1024)
    app.on_response_prepare.append(guard.add_cors)
    app[STATE] = state
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post(MESSAGES_PATH, messages)
    app.router.add_get("/v1/runs/{run_id}", run_summary)
    app.router.add_get("/runs", runs_list)
    app.router.add_get("/runs/{run_id}", run_page)
    if reload_every:
        app.cleanup_ctx.append(_reloader(reload_every))
    if state.keys is not None and state.ledger is not None:
        app.cleanup_ctx.append(_stored_keys_refresher(state.keys, KEYS_REFRESH_S))

    async def close(_app: web.Application) -> None:
        await state.session.aclose()
        if state.shared is not None:
            await state.shared.drain()
        if state.ledger is not None:
            await state.ledger.aclose()
            state.ledger.close()

    app.on_cleanup.append(close)
    return app


#: How soon a key stored in the shared ledger (`baton serve --db URL --new-key NAME`) is honoured by running replicas.
KEYS_REFRESH_S = 5.0


def _stored_keys_refresher(file_keys: dict[str, KeySpec], every: float) -> Any:
    """Keep the keys the ledger stores up to date beside the keys file's: a key added from any machine is honoured by
    every replica within `every` seconds, without a restart."""
    async def ctx(app: web.Application) -> Any:
        state = app[STATE]
        ledger = state.ledger
        assert ledger is not None

        async def loop() -> None:
            while True:
                await asyncio.sleep(every)
                try:
                    stored = await asyncio.to_thread(stored_keys, ledger)
                except Exception as err:  # noqa: BLE001 - the database away for a moment: keep the keys known so far
                    log.warning("the ledger's keys could not be read (%s); the known keys stay in force", type(err).__name__)
                    continue
                state.keys = {**file_keys, **stored}

        task = asyncio.create_task(loop())
        yield
        task.cancel()

    return ctx


def _reloader(every: float) -> Any:
    async def ctx(app: web.Application) -> Any:
        state = app[STATE]

        async def loop() -> None:
            while True:
                await asyncio.sleep(every)
                for note in state.catalog.reload():
                    log.warning(note)

        task = asyncio.create_task(loop())
        yield
        task.cancel()

    return ctx


def open_state(session: Session, catalog: Catalog, keys: dict[str, KeySpec] | None,
               ledger_path: str | Path | None = None) -> ServerState:
    ledger = open_ledger(ledger_path or session.home.root / "serve-ledger.sqlite", fsync=session.durable)
    shared = SharedRecords(ledger) if ledger.shares_records else None  # replicas elsewhere: runs kept where all of them read
    if shared is not None:
        session.observers.append(shared)
        if session.cache is not None:  # `--cache`: one cache for every replica, in the same database
            session.cache = LedgerCache(ledger)
    return ServerState(session=session, catalog=catalog, keys=keys, ledger=ledger, accounts=Accounts(ledger), shared=shared)
