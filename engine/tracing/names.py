"""Every span and attribute name Baton exports, in one place.

The GenAI semantic conventions are all still "development" upstream and are being renamed
(semantic-conventions-genai v0.1.0 folds `invoke_workflow` spans into `invoke_agent`
internal spans and replaces `gen_ai.workflow.name` by `gen_ai.agent.name`): when they
settle, this is the module that changes. Next to them, the span kinds that OpenInference
(Arize Phoenix) and Langfuse read, and Baton's own `baton.*` attributes. docs/tracing.md
lists them all.
"""

from __future__ import annotations

TRACER_NAME = "baton"

# span names
WORKFLOW_SPAN = "invoke_workflow {flow}"
NODE_SPAN = "invoke_agent {step}"
CALL_SPAN = "chat {model}"

# GenAI semantic conventions
OPERATION = "gen_ai.operation.name"
OP_WORKFLOW = "invoke_workflow"
OP_AGENT = "invoke_agent"
OP_CHAT = "chat"
WORKFLOW_NAME = "gen_ai.workflow.name"
AGENT_NAME = "gen_ai.agent.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"
CONVERSATION = "gen_ai.conversation.id"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"

# OpenInference (Arize Phoenix)
OI_KIND = "openinference.span.kind"
OI_CHAIN, OI_AGENT, OI_LLM = "CHAIN", "AGENT", "LLM"
OI_MODEL = "llm.model_name"
OI_PROVIDER = "llm.provider"
OI_PROMPT_TOKENS = "llm.token_count.prompt"
OI_COMPLETION_TOKENS = "llm.token_count.completion"
OI_TOTAL_TOKENS = "llm.token_count.total"
OI_COST = "llm.cost.total"  # OpenInference's cost attribute (Phoenix prices spans itself: docs/tracing.md)
OI_INPUT = "input.value"
OI_OUTPUT = "output.value"

# Langfuse
LF_TYPE = "langfuse.observation.type"
LF_CHAIN, LF_AGENT, LF_GENERATION = "chain", "agent", "generation"
LF_COST = "langfuse.observation.cost_details"
LF_LEVEL = "langfuse.observation.level"

# Baton's own
RUN_ID = "baton.run.id"
RUN_STATUS = "baton.run.status"
RUN_ATTEMPT = "baton.run.attempt"
FLOW_FILE = "baton.flow.file"
COST = "baton.cost.usd"
COST_SOURCE = "baton.cost.source"
STEP_KIND = "baton.step.kind"
STEP_STATUS = "baton.step.status"
STEP_REASON = "baton.step.reason"
STEP_MODEL = "baton.step.model"
STEP_RESUMED = "baton.step.resumed"
STEP_ERROR = "baton.step.error"
ROUTE_LABEL = "baton.route.label"
ROUTE_MATCHED = "baton.route.matched"
ROUTE_CHOSEN = "baton.route.chosen"
ROUTE_SKIPPED = "baton.route.skipped"
ROUTE_PREDICTIONS = "baton.route.predictions"
LOOP_ROUNDS = "baton.loop.rounds"
VERDICT = "baton.verdict"
ALIAS = "baton.model.alias"
CALL_ROLE = "baton.call.role"
CALL_STATUS = "baton.call.status"
CALL_WHY = "baton.call.why"
CALL_CAUSE = "baton.call.cause"
CACHE_HIT = "baton.cache.hit"
TRUNCATED = "baton.call.truncated"
