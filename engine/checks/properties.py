"""The properties of the language: which node kind takes which key, what kind of value each key takes, and what it
does in one line.

One table, read by the checker (`engine.checks.resolve`), the planner's prompt and grammar, and the editor's
completion and hover: a new property is added here once, and every one of them knows it.
"""

from __future__ import annotations

SUPPORTED_VERSIONS = (1,)
RESERVED_NAMES = {"all", "none", "feedback", "then", "not", "matches", "contains", "json"}

_CALL_KEYS = ("sees", "task", "system", "temperature", "max_tokens", "top_p", "reasoning", "seed", "retries", "timeout")
SCHEMAS: dict[str, tuple[str, ...]] = {
    "step": ("model", "fallback", "expect", "choices", "returns", "tools", *_CALL_KEYS),
    "verify": ("model", "fallback", "accept", "choices", "returns", *_CALL_KEYS),
    "fuse": ("panel", "judge", "judge_task", "quorum", "vote", "agree", "tie", "scorer", "threshold", "escalate", "returns", "fallback",
             *_CALL_KEYS),
    "loop": ("exhausted", "output"),
    "model": ("provider", "id", "input_price", "output_price", "context", "max_concurrency", "max_output_tokens", "description"),
}
#: The kind of value each property takes: what the readers below enforce, and what the planner's
#: constrained grammar (engine.planner.gbnf) offers after each key.
VALUE_KINDS: dict[str, str] = {
    "model": "chain", "fallback": "chain", "sees": "names", "task": "text", "system": "text", "judge_task": "text",
    "temperature": "number", "top_p": "number", "max_tokens": "int", "seed": "int", "retries": "int", "quorum": "int",
    "timeout": "duration", "reasoning": "choice:low|medium|high", "expect": "checks", "choices": "strings", "accept": "regex", "panel": "panel",
    "tools": "choice:client", "tie": "choice:first|escalate", "scorer": "file", "threshold": "number", "returns": "fields",
    "judge": "alias", "vote": "choice:number|text", "agree": "int", "escalate": "alias", "exhausted": "choice:last|fail|escalate", "output": "name", "provider": "name", "id": "text",
    "input_price": "number", "output_price": "number", "context": "int", "max_concurrency": "int",
    "max_output_tokens": "int", "description": "text",
}
#: What each kind of value looks like, in words: the planner's language summary and the editor's hover say it so.
VALUE_WORDS: dict[str, str] = {
    "chain": "an alias, or aliases joined by `then` (escalation)", "names": "names of inputs or earlier steps, comma-separated, or `all`",
    "text": 'a "quoted string" (may contain {placeholders})', "number": "a number", "int": "a whole number",
    "duration": "a duration like 60s", "checks": "`matches /re/` or `contains \"text\"`",
    "strings": "quoted strings, comma-separated (the only replies allowed)", "regex": "a /regex/",
    "panel": "aliases, comma-separated, each optionally `x N`", "alias": "an alias", "name": "a name",
    "file": 'a "quoted path" to a file in the flow\'s folder',
    "fields": 'fields and their types, comma-separated (`topic text, priority one of "high" "low"`), or a "schema.json"',
}
#: What each property does, in one line (the editor's hover; docs/language.md has the long form).
PROPERTY_HELP: dict[str, str] = {
    "model": "the model alias that answers; `a then b` escalates to `b` when an `expect` check fails",
    "fallback": "aliases tried, in order, when a model's retries are exhausted",
    "sees": "what the step is shown: inputs and earlier steps (their subtask and response), `all`, or `none` (the default)",
    "task": "the step's own subtask; `{name}` inserts an input or a step it sees",
    "system": "system text sent before the task (a template, like the task)",
    "temperature": "sampling temperature, 0 to 2 (default 0; temperature-0 replies are cached)",
    "max_tokens": "the most tokens the reply may have (default 1024)",
    "top_p": "nucleus sampling, 0 to 1",
    "reasoning": "reasoning effort sent to models that take it",
    "seed": "sampling seed (a fuse gives member i seed + i)",
    "retries": "extra attempts per model on provider faults (default 2)",
    "timeout": "per attempt (default 120s)",
    "expect": "checks on the reply; a reply that fails one is rejected and the step escalates",
    "choices": "the only replies allowed (embedded models are constrained to them)",
    "returns": "the reply is an object with these typed fields (enforced, and checked); templates read them as {step.field}",
    "tools": "`client`: when served, the step is offered the client's tools, and a reply of tool calls is the run's answer",
    "accept": "a verifier's regex (a verdict that matches accepts the round), or a field it `returns` and the value that accepts",
    "panel": "the models that answer in parallel (`m x 4` samples one model four times)",
    "judge": "the model that merges the panel's answers",
    "judge_task": "the judge's instruction (a template)",
    "quorum": "how many panel members must answer (default: all)",
    "vote": "majority vote over the panel's extracted answers instead of a judge",
    "agree": "the votes the winning answer needs; below it the fuse escalates",
    "tie": "when answers tie for the most votes: `first` (the default) takes the first-listed member's, `escalate` treats it as no agreement",
    "scorer": "a learned answer scorer (`baton router train-scorer`): the vote takes the answer it rates most likely right",
    "threshold": "with `scorer` and `escalate`: below this probability the best answer is not trusted and `escalate` answers",
    "escalate": "the model asked when the vote does not agree (or, with a `scorer`, is not trusted)",
    "exhausted": "what a loop does when its rounds run out: keep the `last` draft, `fail`, or `escalate`",
    "output": "which member's reply is the loop's output",
    "provider": "the pool provider this model is served by",
    "id": "the provider's model id",
    "input_price": "USD per million prompt tokens",
    "output_price": "USD per million completion tokens",
    "context": "the model's context window, in tokens",
    "max_concurrency": "calls to this model at once",
    "max_output_tokens": "the most completion tokens the model allows (a step's max_tokens is capped to it)",
    "description": "what this model is for (the planner reads it)",
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "step": ("model", "task"), "verify": ("model", "task"), "fuse": ("panel", "task"), "model": ("provider", "id"),
}
MAX_PANEL = 16
MAX_LOOP_ROUNDS = 20
