"""Typed outputs: `returns:` declares a step's fields; the provider is asked for them, every reply is checked against them
(a reply that does not fit is a failed attempt, retried), templates read them as `{step.field}`, and the checker holds
every field reference to the declaration. Against the loopback server, and on the embedded model with its grammar."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.loading import check_source
from engine.pool import default_pool, load_pool
from engine.testing.chat_server import ChatServer, Reply
from tests.conftest import WORKFLOWS, loopback_pool
from tests.helpers import run

TRIAGE = (WORKFLOWS / "triage.flow").read_text()


def checked(source: str, folder: Path | None = None) -> tuple[object, list[str]]:
    result = check_source(source, load_pool(WORKFLOWS / "models.toml"), str((folder or WORKFLOWS) / "t.flow"))
    return result.flow, [f"{d.code} {d.message}" for d in result.diagnostics]


def test_an_inline_declaration_is_a_strict_json_schema_and_the_steps_response_format() -> None:
    flow, problems = checked(TRIAGE)
    assert flow is not None and not problems
    triage = flow.nodes["triage"]  # type: ignore[attr-defined]
    assert triage.returns == {"type": "object", "required": ["priority", "topic", "needs_human"], "additionalProperties": False,
                              "properties": {"priority": {"type": "string", "enum": ["high", "low"]}, "topic": {"type": "string"},
                                             "needs_human": {"type": "boolean"}}}
    assert triage.params.response_format == {"type": "json_schema", "json_schema": {"name": "triage", "strict": True,
                                                                                    "schema": triage.returns}}
    assert triage.fields == {"priority": 'one of "high" "low"', "topic": "text", "needs_human": "boolean"}
    assert flow.nodes["urgent"].params.response_format is None  # type: ignore[attr-defined]  # only the step that declares
    route = flow.nodes["answer"]  # type: ignore[attr-defined]
    assert (route.by, route.by_field) == ("triage", "priority")


@pytest.mark.parametrize(("change", "expected"), [
    (("needs_human boolean", "needs_human yes"), "E317 `yes` is not a type"),
    (("topic text", "topic text, topic number"), "E317 field `topic` is declared twice"),
    (('one of "high" "low"', 'one of "high" "high"'), "E317 an enumeration names a value twice"),
    (("{triage.topic}", "{triage.topik}"), "E318 step `triage` returns no field `topik`"),
    (("{triage.topic}", "{question.topic}"), "E318 input `question` is text: it has no field `topic`"),
    (("  sees: question, triage\n  task: \"Answer this q", "  sees: question\n  task: \"Answer this q"), "E302 `routine` cannot see `triage`"),
    (('"low" -> routine', '"lo" -> routine'), 'E319 `triage.priority` is never "lo"'),
    (('  "low" -> routine\n', ""), 'E319 route `answer` has no arm for "low" of `triage.priority`, and no `else`'),
    (("by triage.priority", "by triage.prio"), "E318 step `triage` returns no field `prio`"),
    (("  max_tokens: 120\n", '  max_tokens: 120\n  choices: "a", "b"\n'), "E208 a step takes `choices` (a label) or `returns`"),
])
def test_what_a_declaration_or_a_field_reference_gets_wrong_is_said_where(change: tuple[str, str], expected: str) -> None:
    flow, problems = checked(TRIAGE.replace(*change))
    assert flow is None and any(p.startswith(expected) for p in problems), problems


def test_a_step_without_fields_has_none_to_name() -> None:
    source = TRIAGE.replace("  returns: priority one of \"high\" \"low\", topic text, needs_human boolean\n", "")
    _flow, problems = checked(source)
    assert any(p.startswith("E318 step `triage` returns text, not fields") for p in problems), problems
    assert any(p.startswith("E318 step `triage` returns no field `priority`") for p in problems), problems  # the route's by


def test_a_route_by_free_text_or_with_else_is_not_held_to_values() -> None:
    flow, problems = checked(TRIAGE.replace("by triage.priority", "by triage.topic").replace('"high" -> urgent', '"billing" -> urgent')
                             .replace('"low" -> routine', 'else -> routine'))
    assert flow is not None and not problems, problems
    _flow, warnings = checked(TRIAGE.replace("by triage.priority", "by triage.topic").replace('"high"', '"billing"').replace('"low"', '"tech"'))
    assert [w.split(":")[0] for w in warnings] == ["W400 route `answer` has no `else`"]  # free text: nothing is exhaustive


def test_a_schema_file_declares_nested_fields_and_is_read_as_untrusted_data(tmp_path: Path) -> None:
    (tmp_path / "triage.schema.json").write_text(json.dumps({
        "type": "object", "required": ["priority", "owner"], "additionalProperties": False,
        "properties": {"priority": {"enum": ["high", "low"]}, "owner": {"type": "object", "properties": {"team": {"type": "string"}}}}}))
    source = TRIAGE.replace('priority one of "high" "low", topic text, needs_human boolean', '"triage.schema.json"').replace(
        "{triage.topic}", "{triage.owner}")
    assert source.count("{triage.owner}") == 2
    flow, problems = checked(source, tmp_path)
    assert flow is not None and not problems, problems
    assert flow.nodes["triage"].fields == {"priority": 'one of "high" "low"', "owner": "object"}  # type: ignore[attr-defined]
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "nan.json").write_text('{"type": "object", "properties": {"x": {"maximum": NaN}}}')
    (tmp_path / "list.json").write_text('{"type": "array"}')
    (tmp_path.parent / "outside.json").write_text('{"type": "object", "properties": {}}')
    for name, words in (("fifo.json", "not a regular file"), ("nan.json", "not JSON"), ("list.json", "must describe an object"),
                        ("../outside.json", "outside the flow's folder"), ("missing.json", "no schema file")):
        _flow, problems = checked(source.replace("triage.schema.json", name), tmp_path)
        assert any(p.startswith("E317") and words in p for p in problems), (name, problems)


def test_against_a_real_server_a_reply_that_does_not_fit_is_retried_and_the_fields_reach_the_next_step(home: Path) -> None:
    replies = iter([Reply(text='{"priority": "urgent", "topic": "billing"}'),  # not the enum, a field missing: not an answer
                    Reply(text='{"priority": "high", "topic": "billing", "needs_human": false}')])
    with ChatServer(responder=lambda body: next(replies) if "response_format" in body else Reply(text="Refund it.")) as server:
        summary = run(WORKFLOWS / "triage.flow", {"question": "I was charged twice"}, loopback_pool(server.url), home)
        bodies = list(server.requests)
    assert summary.status == "ok" and summary.output == "Refund it."
    first, second, answer = bodies
    assert first["response_format"]["json_schema"]["schema"]["properties"]["priority"]["enum"] == ["high", "low"]  # asked for
    attempts = summary.steps["triage"].attempts
    assert [a.status for a in attempts] == ["fault", "ok"] and "does not match the schema" in attempts[0].reason
    decision = summary.steps["answer"].decision
    assert decision is not None and decision.chosen == "urgent" and decision.matched == "field triage.priority = 'high'"
    assert summary.steps["routine"].status == "skipped"
    assert "high-priority question about billing" in answer["messages"][-1]["content"]  # the fields, in the next step's task
    assert "response_format" not in answer


@pytest.mark.model
def test_the_embedded_model_is_held_to_the_declaration_by_a_grammar(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="needs the `local` extra")
    source = TRIAGE.replace("model: fast", "model: local").replace("model: strong", "model: local").replace(
        "max_tokens: 120", "max_tokens: 60")
    (tmp_path / "t.flow").write_text(source)
    summary = run(tmp_path / "t.flow", {"question": "Our database is down and nobody can log in."}, default_pool(), tmp_path / "home")
    assert summary.status == "ok"
    reply = json.loads(summary.steps["triage"].output)
    assert set(reply) == {"priority", "topic", "needs_human"} and reply["priority"] in ("high", "low")
    assert isinstance(reply["topic"], str) and isinstance(reply["needs_human"], bool)
    assert summary.steps["answer"].decision.chosen == {"high": "urgent", "low": "routine"}[reply["priority"]]  # type: ignore[union-attr]


def test_the_language_server_completes_and_hovers_fields() -> None:
    from engine.lsp.features import analyse, complete, hover

    pool = load_pool(WORKFLOWS / "models.toml")
    lines = TRIAGE.split("\n")
    at = next(i for i, text in enumerate(lines) if "{triage.topic}" in text and "briefly" in text)
    column = lines[at].index("{triage.topic}") + len("{triage.") + 1
    shown = hover(analyse(TRIAGE, pool, "triage.flow"), at + 1, column)
    assert shown is not None and shown[0] == "**field `topic`** of step `triage`: text"
    typing = "\n".join([*lines[:at], lines[at][: lines[at].index("{triage.topic}")] + "{triage.", *lines[at + 1:]])
    typed = typing.split("\n")[at]
    offered = complete(analyse(typing, pool, "triage.flow"), at + 1, len(typed) + 1)  # mid-edit: the flow does not check
    assert [(c.label, c.detail) for c in offered] == [("priority", 'one of "high" "low"'), ("topic", "text"), ("needs_human", "boolean")]


FUSED = """version 1
input question

fuse merged {
  panel: gpt, claude
  judge: strong
  task: "Estimate: {question}"
  returns: estimate number, confidence one of "low" "high"
}

step report {
  model: fast
  sees: merged
  task: "Report an estimate of {merged.estimate} ({merged.confidence} confidence)."
}

output report
"""


def test_a_fuse_declares_its_judges_reply_and_only_the_judge_is_held_to_it(home: Path, tmp_path: Path) -> None:
    _flow, problems = checked(FUSED.replace("  judge: strong\n", "  vote: number\n"))
    assert any(p.startswith("E208 `returns` on a fuse declares its judge's reply") for p in problems), problems
    (tmp_path / "fused.flow").write_text(FUSED)

    def reply(body: dict[str, object]) -> Reply:
        if "response_format" in body:
            return Reply(text='{"estimate": 42, "confidence": "high"}')
        return Reply(text="about 40" if body["model"] in ("gpt", "claude") else "done")

    with ChatServer(responder=reply) as server:
        summary = run(tmp_path / "fused.flow", {"question": "how many?"}, loopback_pool(server.url), home)
        bodies = list(server.requests)
    assert summary.status == "ok" and json.loads(summary.steps["merged"].output) == {"estimate": 42, "confidence": "high"}
    formatted = [b["model"] for b in bodies if "response_format" in b]
    assert formatted == ["strong"]  # the panel answers freely; the judge is asked for the fields
    assert "Report an estimate of 42 (high confidence)." in bodies[-1]["messages"][-1]["content"]


LOOPED = """version 1
input question

loop refine max 3 {
  step draft {
    model: fast
    sees: question, feedback
    task: "Answer; if there is feedback, fix the answer."
  }
  verify check {
    model: strong
    sees: question, draft
    task: "Judge the draft."
    returns: verdict one of "accept" "revise", reason text
    accept: verdict "accept"
  }
}

output refine
"""


def test_a_verifier_accepts_by_a_field_it_returns(home: Path, tmp_path: Path) -> None:
    for change, expected in ((('accept: verdict "accept"', 'accept: verdikt "accept"'), "E318 the verifier returns no field `verdikt`"),
                             (('accept: verdict "accept"', 'accept: verdict "ok"'), 'E319 `verdict` is never "ok"')):
        _flow, problems = checked(LOOPED.replace(*change))
        assert any(p.startswith(expected) for p in problems), problems
    (tmp_path / "looped.flow").write_text(LOOPED)
    verdicts = iter(['{"verdict": "revise", "reason": "the answer says ACCEPT nowhere, but it is wrong"}',
                     '{"verdict": "accept", "reason": "right"}'])
    drafts = iter(["a draft", "a better draft"])  # different drafts: the verifier is asked anew, not answered from the cache
    with ChatServer(responder=lambda body: Reply(text=next(verdicts) if "response_format" in body else next(drafts))) as server:
        summary = run(tmp_path / "looped.flow", {"question": "q"}, loopback_pool(server.url), home)
    assert summary.status == "ok" and summary.steps["refine"].rounds == 2
    assert summary.steps["refine"].verdicts[0].startswith("REJECTED") and summary.steps["refine"].verdicts[1].startswith("ACCEPTED")


def test_a_served_flow_whose_output_returns_fields_says_its_schema_and_answers_with_the_object(tmp_path: Path) -> None:
    import httpx

    from tests.serve_harness import BatonServer, write_pool

    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "extract.flow").write_text('version 1\ninput question\nstep extract {\n  model: fast\n  task: "Extract: {question}"\n'
                                        '  returns: city text, celsius number\n}\noutput extract\n')
    with ChatServer(responder=lambda body: Reply(text='{"city": "Paris", "celsius": 18}')) as upstream:
        pool = write_pool(upstream.url, tmp_path / "pool.toml")
        with BatonServer("--flows", str(flows), "--pool", str(pool), home=tmp_path / "home") as served:
            listed = {m["id"]: m["baton"] for m in httpx.get(f"{served.url}/models").json()["data"]}
            answer = httpx.post(f"{served.url}/chat/completions", json={"model": "flow/extract", "messages": [
                {"role": "user", "content": "It is 18 degrees in Paris."}]}, timeout=30).json()
    assert listed["flow/extract"]["output_schema"]["properties"] == {"city": {"type": "string"}, "celsius": {"type": "number"}}
    assert json.loads(answer["choices"][0]["message"]["content"]) == {"city": "Paris", "celsius": 18}
    assert upstream.requests[0]["response_format"]["json_schema"]["name"] == "extract"


SURE = """version 1
input question

step answer {
  model: fast then strong
  task: "Answer, and say how sure you are from 0 to 1: {question}"
  returns: answer text, confidence number, topic one of "billing" "other", human boolean
  expect: confidence at least 0.7, not human true, topic "billing", answer contains "refund"
}

output answer
"""


@pytest.mark.parametrize(("change", "expected"), [
    (("confidence at least 0.7", "confidance at least 0.7"), "E318 step `answer` returns no field `confidance`"),
    (('topic "billing"', 'topic "bills"'), 'E319 `topic` is never "bills"'),
    (("confidence at least 0.7", 'confidence "high"'), 'E324 `confidence` is number, so it is never "high"'),
    (("not human true", "human 1"), "E324 `human` is boolean, so it is never 1"),
    (("answer contains", "human contains"), "E324 `human` is boolean, not text"),
    (("confidence at least 0.7", "topic at least 2"), 'E324 `topic` is one of "billing" "other", so it cannot be at least'),
    (("confidence at least 0.7", "not confidence at least 0.7"), "E208 write `confidence at most ...` rather than `not`"),
    (("confidence at least 0.7", "confidence above 0.7"), "E208 a check on field `confidence` is"),
    (("  returns: answer text, confidence number, topic one of \"billing\" \"other\", human boolean\n", ""),
     "E318 step `answer` returns no field `confidence`"),
])
def test_an_expect_on_a_field_is_held_to_the_declaration(change: tuple[str, str], expected: str) -> None:
    flow, problems = checked(SURE.replace(*change))
    assert flow is None and any(p.startswith(expected) for p in problems), problems


def test_an_expect_on_a_field_tests_the_value_not_the_text() -> None:
    flow, problems = checked(SURE)
    assert flow is not None and not problems
    expect = flow.nodes["answer"].expect  # type: ignore[attr-defined]
    assert [c.describe() for c in expect] == ["confidence at least 0.7", "not human true", 'topic "billing"',
                                              'answer contains "refund"']
    good = {"answer": "We will refund it.", "confidence": 0.9, "topic": "billing", "human": False}
    assert all(c.holds(json.dumps(good)) for c in expect)
    for change in ({"confidence": 0.5}, {"confidence": "0.9"}, {"confidence": True}, {"human": True}, {"topic": "other"},
                   {"answer": "No."}):
        failing = [c.describe() for c in expect if not c.holds(json.dumps({**good, **change}))]
        assert len(failing) == 1, (change, failing)
    assert not any(c.holds("not JSON") or c.holds("[1]") for c in expect)
    equals_one = flow.nodes["answer"].expect[0].model_copy(update={"kind": "equals", "pattern": "1"})  # type: ignore[attr-defined]
    assert equals_one.holds('{"confidence": 1.0}') and not equals_one.holds('{"confidence": true}')  # true is not 1


def test_against_a_real_server_a_reply_that_fails_a_field_check_escalates(home: Path, tmp_path: Path) -> None:
    (tmp_path / "sure.flow").write_text(SURE)
    unsure = {"answer": "Maybe a refund.", "confidence": 0.4, "topic": "billing", "human": False}
    sure = {**unsure, "answer": "We will refund the second charge.", "confidence": 0.95}
    with ChatServer(responder=lambda body: Reply(text=json.dumps(unsure if body["model"] == "fast" else sure))) as server:
        summary = run(tmp_path / "sure.flow", {"question": "I was charged twice"}, loopback_pool(server.url), home)
        asked = [body["model"] for body in server.requests]
    assert asked == ["fast", "strong"]  # a valid reply that fails the check is not retried on its model: it escalates
    assert summary.status == "ok" and json.loads(summary.output)["confidence"] == 0.95
    first, second = summary.steps["answer"].attempts
    assert (first.status, first.cause, second.status) == ("rejected", "expect", "ok")
    assert first.reason == "expect confidence at least 0.7 failed"
