"""What a provider sent, turned into a typed outcome: a `ChatResponse`, or a classified `ProviderFault`.

This is the one place that reads provider JSON; nothing downstream looks at a reply's
shape. The rules (docs/reliability.md, "What a reply can be"):

- the answer is the text of `type == "text"` content parts only (reasoning parts, and
  `reasoning` / `reasoning_content` fields beside the content, are never the answer);
- `usage` is read defensively: counts that are missing, not numbers or negative make the
  usage `unreadable` (the caller then books the call at its worst case), and a reported
  `cost` is kept only when it is a finite number >= 0;
- `error` in a choice or beside the choices, or `finish_reason: "error"` (OpenRouter's
  mid-generation failure, sent with HTTP 200) is a retryable `server_error`;
- tool calls (`message.tool_calls`: an `id`, and a function's `name` and `arguments` as text)
  are an answer even without text; a malformed one is a `bad_response`;
- `finish_reason: "length"` with text is an answer, flagged as truncated; with no text
  (the whole `max_tokens` went on reasoning) it is a `truncated` fault naming `max_tokens`;
- `content_filter` and a `refusal` are faults that a retry would repeat;
- every fault raised from a 2xx reply carries what the reply said about usage (`billed`),
  because the provider may have charged for it.

Every piece of provider text that goes into a message is scrubbed of secrets first and
then cut, never the other way round: a key straddling the cut would survive in part.
A reply's text is scrubbed once, by `engine.run.calls.Caller`, whatever provider sent it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, NoReturn

from engine.run.protocol import ChatResponse, ProviderFault, UsageSource, normal_tool_calls

Scrub = Callable[[str], str]

#: How much of a provider's own words (an error body, a refusal) a message quotes.
QUOTE_CHARS = 300


def quote(text: str, scrub: Scrub, limit: int = QUOTE_CHARS) -> str:
    """Provider text for a message: scrubbed whole, then cut."""
    clean = scrub(text)
    return clean if len(clean) <= limit else clean[:limit] + "..."


#: More tokens than any call could process: a count above it is a lie (1e400 written out), not usage.
MAX_TOKEN_COUNT = 10**9


def _count(value: Any) -> int | None:
    """A token count: a whole, finite number from 0 to `MAX_TOKEN_COUNT` (JSON may spell it 12.0), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        return None
    return int(value) if 0 <= value <= MAX_TOKEN_COUNT else None


def _details(usage: dict[str, Any], field: str, key: str) -> int:
    block = usage.get(field)
    return (_count(block.get(key)) or 0) if isinstance(block, dict) else 0


def read_usage(raw: Any) -> tuple[dict[str, Any], UsageSource, str]:
    """`ChatResponse` usage fields from a reply's `usage`, where they came from, and why not, if not."""
    if raw is None:
        return {}, "missing", "the reply has no usage"
    if not isinstance(raw, dict):
        return {}, "unreadable", f"usage is a {type(raw).__name__}, not an object"
    prompt, completion = _count(raw.get("prompt_tokens")), _count(raw.get("completion_tokens"))
    if prompt is None or completion is None:
        bad = [k for k, v in (("prompt_tokens", prompt), ("completion_tokens", completion)) if v is None]
        return {}, "unreadable", f"usage has no usable {' or '.join(bad)} (missing, negative, not a whole number or out of range)"
    fields: dict[str, Any] = {
        "input_tokens": prompt, "output_tokens": completion,
        "cached_tokens": _details(raw, "prompt_tokens_details", "cached_tokens"),
        "cache_write_tokens": _details(raw, "prompt_tokens_details", "cache_write_tokens"),
        "reasoning_tokens": _details(raw, "completion_tokens_details", "reasoning_tokens"),
    }
    note = ""
    cost = raw.get("cost")
    if cost is not None:
        if not isinstance(cost, bool) and isinstance(cost, (int, float)) and math.isfinite(cost) and cost >= 0:
            fields["reported_cost"] = float(cost)
        else:
            note = f"reported cost {cost!r} ignored (not a finite number >= 0); computed from the tokens"
    return fields, "reported", note


def _billed(usage: dict[str, Any], finish_reason: str = "") -> ChatResponse:
    """A rejected reply's usage, for the caller to book."""
    return ChatResponse(text="", finish_reason=finish_reason, **usage)


def _answer_text(message: dict[str, Any], name: str, usage: dict[str, Any]) -> str:
    """The answer in a message: its string content, or the text of its `type == "text"` parts."""
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise ProviderFault("bad_response", f"{name}: reply content is a {type(content).__name__}, not text or parts", billed=_billed(usage))
    texts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            continue  # reasoning, images, tool calls: not the answer
        text = part.get("text")
        if not isinstance(text, str):
            raise ProviderFault("bad_response", f"{name}: content part {i} has a `text` that is a {type(text).__name__}, not text",
                                billed=_billed(usage))
        texts.append(text)
    return "".join(texts)


def tool_calls(message: dict[str, Any], name: str, usage: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """A message's tool calls in chat completions' form, each checked: an id, a function name, arguments as text."""
    raw = message.get("tool_calls")
    if raw is None:
        return ()
    try:
        return normal_tool_calls(raw)
    except ValueError as err:
        raise ProviderFault("bad_response", f"{name}: {err}", billed=_billed(usage)) from None


def _error_words(error: Any, scrub: Scrub) -> str:
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code = error.get("code")
        return quote((f"{code}: " if isinstance(code, (str, int)) and not isinstance(code, bool) else "") + error["message"], scrub)
    return quote(json.dumps(error, ensure_ascii=False, default=str), scrub)


def read_chat_completion(content: bytes, name: str, scrub: Scrub, max_tokens: int) -> ChatResponse:
    """A chat-completions body (HTTP 2xx) as a reply, or the fault it amounts to."""
    unreadable = ChatResponse(text="", usage_source="unreadable", usage_note="the reply could not be read")
    try:
        data = json.loads(content)
    except ValueError:
        words = quote(content.decode("utf-8", "replace"), scrub, 120)
        raise ProviderFault("bad_response", f"{name}: reply is not JSON: {words!r}", billed=unreadable) from None
    if not isinstance(data, dict):
        raise ProviderFault("bad_response", f"{name}: reply is not a JSON object", billed=unreadable)
    usage = usage_fields(data.get("usage"), _text(data.get("model")))
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    if data.get("error") is not None:
        raise ProviderFault("server_error", f"{name}: error in reply: {_error_words(data['error'], scrub)}", billed=_billed(usage))
    if choice is None:
        raise ProviderFault("bad_response", f"{name}: reply has no choices", billed=_billed(usage))
    message = choice.get("message")
    if message is None:
        message = {}
    if not isinstance(message, dict):
        raise ProviderFault("bad_response", f"{name}: reply's message is a {type(message).__name__}, not an object",
                            billed=_billed(usage))
    return finish(_answer_text(message, name, usage), _text(choice.get("finish_reason")), usage, name, scrub, max_tokens,
                  error=choice.get("error"), refusal=message.get("refusal"), calls=tool_calls(message, name, usage))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def usage_fields(raw: Any, response_model: str = "") -> dict[str, Any]:
    """`ChatResponse` keyword arguments for a reply's usage (see `read_usage`), for `finish`."""
    fields, source, note = read_usage(raw)
    return {**fields, "usage_source": source, "usage_note": note, "response_model": response_model}


def finish(text: str, finish_reason: str, usage: dict[str, Any], name: str, scrub: Scrub, max_tokens: int,
           error: Any = None, refusal: Any = None, calls: tuple[dict[str, Any], ...] = ()) -> ChatResponse:
    """Judge a reply by how it finished; shared by every provider kind (HTTP and the local model).

    `usage` is `usage_fields(...)`: the reply is built once, on the way out (this runs for every call).
    """
    if (not text.strip() and not calls) or error is not None or finish_reason in ("error", "content_filter"):
        _reject(text, finish_reason, usage, name, scrub, max_tokens, error, refusal)
    # its secrets are scrubbed by the caller, for every provider
    return ChatResponse(text=text, finish_reason=finish_reason, tool_calls=calls, **usage)


def _reject(text: str, finish_reason: str, usage: dict[str, Any], name: str, scrub: Scrub, max_tokens: int,
            error: Any, refusal: Any) -> NoReturn:
    billed = _billed(usage, finish_reason)
    if error is not None or finish_reason == "error":
        words = _error_words(error, scrub) if error is not None else "finish_reason is `error`"
        raise ProviderFault("server_error", f"{name}: the reply failed during generation: {words}", billed=billed)
    if finish_reason == "content_filter":
        raise ProviderFault("content_filter", f"{name}: the provider's content filter stopped the reply", billed=billed)
    if isinstance(refusal, str) and refusal.strip() and not text.strip():
        raise ProviderFault("refusal", f"{name}: the model refused: {quote(refusal, scrub)}", billed=billed)
    # what is left: no answer text
    if finish_reason == "length":
        raise ProviderFault("truncated", f"{name}: no answer text within max_tokens {max_tokens} (finish_reason `length`: "
                                         f"the budget went on reasoning); raise the step's max_tokens", billed=billed)
    raise ProviderFault("empty_reply", f"{name}: reply has an empty message", billed=billed)
