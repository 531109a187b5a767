"""A client's tools, in any wire format, as chat completions spells them; and a reply's tool calls, said back.

Tools pass through a pool alias as the client sent them: Baton offers them to the model,
returns the calls it makes, and records both (which tools were offered, which calls were
made). Each format's tools are turned into chat completions' form (`{"type": "function",
"function": {"name", "description", "parameters"}}`), the one form providers are sent.
A flow does not take tools yet: every format refuses them there with a 400.
"""

from __future__ import annotations

import json
from typing import Any

from engine.run.protocol import ToolOffer
from engine.run.trace import RunSummary
from engine.serve.mapping import RequestError


def _function(name: Any, description: Any, parameters: Any, where: str, strict: Any = None) -> dict[str, Any]:
    if not isinstance(name, str) or not name:
        raise RequestError(f"{where}: a function tool needs a `name`", param=where)
    function: dict[str, Any] = {"name": name}
    if isinstance(description, str):
        function["description"] = description
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise RequestError(f"{where}: the tool's parameters must be a JSON Schema object", param=where)
        function["parameters"] = parameters
    if isinstance(strict, bool):
        function["strict"] = strict
    return {"type": "function", "function": function}


def _listed(raw: Any, field: str) -> list[Any]:
    if not isinstance(raw, list) or not raw:
        raise RequestError(f"`{field}` must be a non-empty list of tools", param=field)
    return raw


def chat_tools(body: dict[str, Any]) -> ToolOffer | None:
    """Chat completions' `tools` and `tool_choice`, checked."""
    if body.get("tools") is None:
        return None
    tools = []
    for i, tool in enumerate(_listed(body["tools"], "tools")):
        where = f"tools[{i}]"
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict):
            raise RequestError(f"{where}: only tools of type `function` are supported", param=where)
        tools.append(_function(function.get("name"), function.get("description"), function.get("parameters"), where,
                               function.get("strict")))
    return ToolOffer(tuple(tools), body.get("tool_choice"))


def responses_tools(body: dict[str, Any]) -> ToolOffer | None:
    """The Responses API's function tools (`{"type": "function", "name", "parameters"}`) and `tool_choice`."""
    if body.get("tools") is None:
        return None
    tools = []
    for i, tool in enumerate(_listed(body["tools"], "tools")):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise RequestError(f"{where}: tools of type `{kind}` are not supported (only `function`: a hosted tool "
                               "would need OpenAI to run it)", param=where)
        tools.append(_function(tool.get("name"), tool.get("description"), tool.get("parameters"), where, tool.get("strict")))
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
            raise RequestError("`tool_choice` must be auto, none, required or {\"type\": \"function\", \"name\": ...}",
                               param="tool_choice")
        choice = {"type": "function", "function": {"name": choice["name"]}}
    return ToolOffer(tuple(tools), choice)


def messages_tools(body: dict[str, Any]) -> ToolOffer | None:
    """The Messages API's tools (`{"name", "description", "input_schema"}`) and `tool_choice` (auto, any, tool, none)."""
    if body.get("tools") is None:
        return None
    tools = []
    for i, tool in enumerate(_listed(body["tools"], "tools")):
        where = f"tools.{i}"
        if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
            raise RequestError(f"{where}: only client tools (a name and an input_schema) are supported", param=where)
        tools.append(_function(tool.get("name"), tool.get("description"), tool.get("input_schema"), where))
    choice: Any = None
    given = body.get("tool_choice")
    if isinstance(given, dict):
        kind = given.get("type")
        if kind == "tool" and isinstance(given.get("name"), str):
            choice = {"type": "function", "function": {"name": given["name"]}}
        elif kind in ("auto", "any", "none"):
            choice = {"auto": "auto", "any": "required", "none": "none"}[kind]
        else:
            raise RequestError("tool_choice: must be auto, any, none or a tool by name", param="tool_choice")
    return ToolOffer(tuple(tools), choice)


def names(offer: ToolOffer | None) -> list[str]:
    return [t["function"]["name"] for t in offer.tools] if offer is not None else []


def calls_of(summary: RunSummary) -> list[dict[str, Any]]:
    """The tool calls that are the run's answer: those of its output step's reply, or of the step marked `tools:
    client` whose reply of tool calls ended the run (none for a text answer)."""
    step = summary.steps.get(summary.tool_calls_by or summary.output_step)
    return step.tool_calls if step is not None else []


def anthropic_input(arguments: str) -> dict[str, Any]:
    """A tool call's arguments as the Messages API's `input` (an object); arguments that are not a JSON object
    (a model's malformed reply) are kept whole under `arguments`, not dropped."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": arguments}
