"""From an OpenAI chat request to what Baton runs, and from a run back to a chat completion.

The mapping (docs/serve.md):

- `extra_body={"baton": {"inputs": {...}}}` fills named inputs explicitly;
- otherwise a flow's one input (besides `history`) gets the last user message;
- a flow that declares `input history` gets the earlier turns as a transcript;
- a system message becomes every step's `system` text unless the step sets its own;
- `temperature`, `max_tokens` and `seed` apply to every step that does not set them.

A request that cannot be mapped is a `RequestError` (HTTP 400) that says why.
"""

from __future__ import annotations

import json
from typing import Any

from engine.checks.returns import schema_error
from engine.errors import InputError
from engine.model import HISTORY, Flow, Fuse, Node, Params, Step, Verify
from engine.numbers import finite
from engine.run.budget import usd_cap
from engine.run.protocol import ToolOffer, normal_tool_calls
from engine.run.structured import schema_of
from engine.run.trace import RunSummary

#: The response header that names the run behind an answer (or behind a failure that was recorded).
RUN_HEADER = "x-baton-run-id"
#: A response header with what the client should know about its answer (the conversation a flow did not see).
WARNING_HEADER = "x-baton-warning"
#: Request fields a flow cannot honour yet: a clear 400 rather than silently ignoring them.
UNSUPPORTED_ON_FLOWS = ("functions",)
#: Request fields a pool alias cannot honour yet (`functions` is the form `tools` replaced).
UNSUPPORTED_ON_ALIASES = ("functions",)
#: The largest `max_tokens` a request may ask for: beyond any model's output, and small enough that a worst case stays a number.
MAX_TOKENS = 10_000_000


class RequestError(Exception):
    """A request Baton cannot serve as asked, in OpenAI's error shape."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str = "invalid_request_error",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.code, "param": self.param, "code": self.code}}


def _not_a_number(word: str) -> Any:
    raise RequestError(f"the request body holds {word}, which is not a JSON number (a finite one is needed)")


def _finite(text: str) -> float:
    try:
        return finite(float(text), f"the number {text[:40]}")
    except ValueError as err:  # 1e400 is read as infinity
        raise RequestError(str(err)) from None


def json_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object: every number finite (no NaN, Infinity or 1e400), nesting within Python's reach."""
    try:
        body = json.loads(raw, parse_constant=_not_a_number, parse_float=_finite)
    except RecursionError:
        raise RequestError("the request body is nested too deeply") from None
    except ValueError as err:
        raise RequestError(f"the request body is not JSON ({str(err)[:100]})") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


def message_text(message: Any, index: int) -> tuple[str, str]:
    """(role, text) of a chat message; content parts are joined by their text parts."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise RequestError(f"messages[{index}] must be an object with a `role`", param=f"messages[{index}]")
    content = message.get("content")
    if content is None:
        return message["role"], ""
    if isinstance(content, str):
        return message["role"], content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                raise RequestError(f"messages[{index}]: only text content parts are supported", param=f"messages[{index}].content")
        return message["role"], "".join(texts)
    raise RequestError(f"messages[{index}].content must be text or a list of text parts", param=f"messages[{index}].content")


def requested_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("`model` is required: a flow (`flow/NAME`) or a pool alias", param="model")
    return model


def chat_messages(body: dict[str, Any]) -> list[tuple[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("`messages` must be a non-empty list", param="messages")
    return [message_text(m, i) for i, m in enumerate(messages)]


def checked_tool_calls(raw: Any, where: str) -> list[dict[str, Any]]:
    """An assistant message's `tool_calls` (an earlier turn sent back), checked as a provider's are."""
    try:
        return list(normal_tool_calls(raw))
    except ValueError as err:
        raise RequestError(f"{where}: {err}", param=where) from None


def chat_conversation(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages as a pass-through call sends them: text content, an assistant's `tool_calls`, a `tool` result's
    `tool_call_id` (a conversation with tools, sent back turn by turn), each checked."""
    out = []
    for i, (message, (role, text)) in enumerate(zip(body["messages"], chat_messages(body), strict=True)):
        entry: dict[str, Any] = {"role": role, "content": text if message.get("content") is not None else None}
        if message.get("tool_calls") is not None:
            entry["tool_calls"] = checked_tool_calls(message["tool_calls"], f"messages[{i}].tool_calls")
        if role == "tool":
            if not isinstance(message.get("tool_call_id"), str):
                raise RequestError(f"messages[{i}]: a `tool` message needs its `tool_call_id`", param=f"messages[{i}].tool_call_id")
            entry["tool_call_id"] = message["tool_call_id"]
        out.append(entry)
    return out


def baton_options(body: dict[str, Any]) -> dict[str, Any]:
    options = body.get("baton") or {}
    if not isinstance(options, dict):
        raise RequestError("`baton` must be an object (extra_body={'baton': {...}})", param="baton")
    return options


def max_cost(options: dict[str, Any]) -> float | None:
    """`baton.max_cost_usd`: a spending cap for this request, in USD."""
    try:
        return usd_cap(options.get("max_cost_usd"), "`baton.max_cost_usd`")
    except InputError as err:  # NaN and Infinity are JSON to Python's reader: a NaN cap would cap nothing
        raise RequestError(str(err), param="baton.max_cost_usd") from None


def flow_inputs(flow: Flow, messages: list[tuple[str, str]], explicit: Any, after: str = "") -> dict[str, str]:
    """The flow's inputs from the conversation (see the module's docstring). `after` is what happened after the last
    user message (`tool_exchange`): it follows that message in the input that takes it."""
    if explicit is not None and not isinstance(explicit, dict):
        raise RequestError("`baton.inputs` must be an object of input name to text", param="baton.inputs")
    inputs: dict[str, str] = {str(k): v for k, v in (explicit or {}).items()}
    for name, value in inputs.items():
        if not isinstance(value, str):
            raise RequestError(f"input `{name}` must be text", param=f"baton.inputs.{name}")
    conversation = [(role, text) for role, text in messages if role != "system"]
    last_user = max((i for i, (role, _t) in enumerate(conversation) if role == "user"), default=None)
    open_inputs = [n for n in flow.inputs if n not in inputs and n != HISTORY]
    if HISTORY in flow.inputs and HISTORY not in inputs:
        earlier = conversation[:last_user] if last_user is not None else conversation
        inputs[HISTORY] = "\n\n".join(f"{role}: {text}" for role, text in earlier)
    if len(open_inputs) == 1:
        if last_user is None:
            raise RequestError(f"flow `{flow.name}` takes its input `{open_inputs[0]}` from the last user message, and there is none",
                               param="messages")
        inputs[open_inputs[0]] = conversation[last_user][1] + (f"\n\n{after}" if after else "")
    elif open_inputs:
        raise RequestError(f"flow `{flow.name}` has inputs {', '.join(f'`{n}`' for n in open_inputs)}: name them in "
                           "extra_body={'baton': {'inputs': {...}}} (only a flow with one input takes the last user message)",
                           param="baton.inputs")
    unknown = [n for n in inputs if n not in flow.inputs]
    if unknown:
        raise RequestError(f"flow `{flow.name}` has no input {', '.join(f'`{n}`' for n in unknown)} "
                           f"(it declares: {', '.join(flow.inputs) or 'none'})", param="baton.inputs")
    return inputs


def unseen_turns(flow: Flow, messages: list[tuple[str, str]]) -> str | None:
    """A warning when the conversation has turns before the last user message and the flow cannot see them (it
    declares no `input history`): the answer is then to the last message alone, which the client should be told."""
    if HISTORY in flow.inputs:
        return None
    conversation = [role for role, _text in messages if role not in ("system", "developer")]
    last_user = max((i for i, role in enumerate(conversation) if role == "user"), default=0)
    if last_user == 0:
        return None
    return (f"flow `{flow.name}` answered the last message alone: it declares no `input history`, so the {last_user} earlier "
            f"turn{'s' if last_user != 1 else ''} of the conversation were not shown to it")


def tool_exchange(chat: list[dict[str, Any]]) -> str:
    """The turns after the last user message (the tool calls a flow's answer made, and the results the client sends
    back), as text: `assistant called get_weather({"city": "Paris"})`, then `get_weather returned: {"celsius": 18}`."""
    last_user = max((i for i, m in enumerate(chat) if m["role"] == "user"), default=-1)
    names = {c["id"]: c["function"]["name"] for m in chat for c in m.get("tool_calls") or []}
    lines = []
    for m in chat[last_user + 1:]:
        if m["role"] == "assistant":
            if m.get("content"):
                lines.append(f"assistant: {m['content']}")
            lines += [f"assistant called {c['function']['name']}({c['function']['arguments']})" for c in m.get("tool_calls") or []]
        elif m["role"] == "tool":
            lines.append(f"{names.get(m.get('tool_call_id', ''), 'a tool')} returned: {m.get('content') or ''}")
    return "\n".join(lines)


def tool_takers(flow: Flow) -> list[str]:
    """The steps a client's tools are offered to: those the flow marks `tools: client`, or, when it marks none, its
    output step (when that is a step). A reply of tool calls from any of them is the flow's answer. Marking is the
    author's choice of who may act through the client: the output step of a flow that marks others is not offered them."""
    marked = [name for name, node in flow.nodes.items() if isinstance(node, Step) and node.client_tools]
    if marked:
        return marked
    return [flow.output] if isinstance(flow.nodes[flow.output], Step) else []


def with_tools(flow: Flow, offer: ToolOffer) -> Flow:
    """The flow with a client's tools offered to the steps that take them; a 400 when none does."""
    takers = tool_takers(flow)
    if not takers:
        raise RequestError(f"flow `{flow.name}` cannot take tools: its output `{flow.output}` is a {flow.nodes[flow.output].kind}, "
                           "and no step is marked `tools: client`", param="tools")
    update = {"tools": tuple(dict(t) for t in offer.tools), "tool_choice": offer.choice}
    nodes = dict(flow.nodes)
    for name in takers:
        node = nodes[name]
        assert isinstance(node, Step)
        nodes[name] = node.model_copy(update={"params": node.params.model_copy(update=update)})
    return flow.model_copy(update={"nodes": nodes})


def _with_output_params(flow: Flow, update: dict[str, Any], cannot: str, only: str, param: str) -> Flow:
    """The flow with its output step's parameters updated; a 400 when the output is not a step."""
    node = flow.nodes[flow.output]
    if not isinstance(node, Step):
        raise RequestError(f"flow `{flow.name}` {cannot}: its output `{flow.output}` is a {node.kind}, and only a step{only} for now",
                           param=param)
    params = node.params.model_copy(update=update)
    return flow.model_copy(update={"nodes": {**flow.nodes, flow.output: node.model_copy(update={"params": params})}})


def request_params(body: dict[str, Any], max_tokens_field: str = "max_tokens") -> dict[str, Any]:
    """`temperature`, `top_p`, `max_tokens` (or `max_completion_tokens`; the Responses API's `max_output_tokens`),
    `seed`: checked, as `Params` fields."""
    out: dict[str, Any] = {}
    temperature = body.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            raise RequestError("`temperature` must be a number from 0 to 2", param="temperature")
        out["temperature"] = float(temperature)
    top_p = body.get("top_p")
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 <= top_p <= 1:
            raise RequestError("`top_p` must be a number from 0 to 1", param="top_p")
        out["top_p"] = float(top_p)
    max_tokens = body.get("max_completion_tokens", body.get(max_tokens_field))
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS:
            raise RequestError(f"`{max_tokens_field}` must be a whole number from 1 to {MAX_TOKENS}", param=max_tokens_field)
        out["max_tokens"] = max_tokens
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not -2**63 <= seed < 2**63:
            raise RequestError("`seed` must be a whole number that fits in 64 bits", param="seed")
        out["seed"] = seed
    n = body.get("n")
    if n not in (None, 1):
        raise RequestError("`n` must be 1: a flow gives one answer (use a fuse for several samples)", param="n")
    return out


def stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    """(`stream`, `stream_options.include_usage`), checked: `"stream_options": "yes"` was a 500."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise RequestError("`stream` must be true or false", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise RequestError("`stream_options` must be an object, e.g. {\"include_usage\": true}", param="stream_options")
    include_usage = (options or {}).get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise RequestError("`stream_options.include_usage` must be true or false", param="stream_options.include_usage")
    return bool(stream), bool(stream and include_usage)


def structured_output(response_format: Any, param: str) -> dict[str, Any] | None:
    """A structured-output request in chat completions' form (`{"type": "json_schema", "json_schema": {"name",
    "schema", "strict"}}` or `{"type": "json_object"}`), checked; None for plain text."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict) or response_format.get("type") not in ("text", "json_object", "json_schema"):
        raise RequestError(f"`{param}` must be an object whose type is text, json_object or json_schema", param=param)
    if response_format["type"] == "text":
        return None
    if response_format["type"] == "json_schema":
        block = response_format.get("json_schema")
        schema = block.get("schema") if isinstance(block, dict) else None
        if not isinstance(schema, dict):
            raise RequestError(f"`{param}`: a json_schema needs a `schema` object", param=param)
        problem = schema_error(schema)
        if problem:
            raise RequestError(f"`{param}`: {problem}", param=param)
    return dict(response_format)


def with_structured_output(flow: Flow, response_format: dict[str, Any]) -> Flow:
    """The flow with its output step asked for structured output (the steps before it answer as they were written).

    An output step that declares `returns:` fields already answers JSON of its own schema (published in `/v1/models`),
    and its `expect:` tests read those fields: a client asking for JSON, or for that very schema, gets it as written; a
    different schema is refused rather than silently put in its place."""
    node = flow.nodes[flow.output]
    declared = getattr(node, "returns", None)
    if declared is not None:
        asked = schema_of(response_format)
        if asked is None or asked == declared:
            return flow
        raise RequestError(f"flow `{flow.name}` answers with the fields its output `{flow.output}` declares (`returns:`; the "
                           "schema is in /v1/models): ask for that schema, or for json_object, not another", param="response_format")
    return _with_output_params(flow, {"response_format": response_format}, "cannot honour response_format",
                               "'s reply is held to a schema", "response_format")


def literal(text: str) -> str:
    """A client's text as a template that renders to itself (its braces are not placeholders)."""
    return text.replace("{", "{{").replace("}", "}}")


def with_request_params(flow: Flow, params: dict[str, Any], system: str | None) -> Flow:
    """The flow with the request's parameters and system text where its steps do not set their own."""
    defaults = dict(params)
    if system:
        defaults["system"] = literal(system)
    if not defaults:
        return flow
    nodes: dict[str, Node] = {}
    for name, node in flow.nodes.items():
        if isinstance(node, Step | Verify | Fuse):
            own = node.params
            merged = {**defaults, **{k: getattr(own, k) for k in own.model_fields_set}}
            nodes[name] = node.model_copy(update={"params": Params(**merged)})
        else:
            nodes[name] = node
    return flow.model_copy(update={"nodes": nodes})


# -- back: a run as a chat completion ---------------------------------------------------------


def usage_of(summary: RunSummary) -> dict[str, Any]:
    """Every call of the run summed, with its cost (USD), as OpenRouter reports `cost`."""
    return {"prompt_tokens": summary.input_tokens, "completion_tokens": summary.output_tokens,
            "total_tokens": summary.input_tokens + summary.output_tokens, "cost": round(summary.cost, 10),
            "estimated_cost": round(summary.estimated_cost, 10)}


def baton_object(summary: RunSummary, model: str) -> dict[str, Any]:
    """Which model did what, why, and at what cost: one entry per step, in the order they finished."""
    steps = sorted(summary.steps.values(), key=lambda s: (s.finished or float("inf"), s.name))
    return {
        "run_id": summary.run_id, "flow": summary.flow, "model": model, "status": summary.status,
        "cost": round(summary.cost, 10), "estimated_cost": round(summary.estimated_cost, 10), "calls": summary.calls,
        "duration_s": summary.duration_s,
        "steps": [{"step": s.name, "kind": s.kind, "model": s.model, "why": s.reason, "status": s.status,
                   "input_tokens": s.input_tokens, "output_tokens": s.output_tokens, "cost": round(s.cost, 10),
                   "latency_ms": round(s.latency_ms, 1), "attempts": len(s.attempts)} for s in steps],
        "warnings": summary.warnings,
    }


def answer_model(summary: RunSummary) -> str:
    """The alias whose text is the answer (as OpenRouter's auto router reports the model it picked)."""
    out = summary.steps.get(summary.output_step)
    return out.model if out is not None and out.model else summary.flow
