"""`choices:`: a reply that must be one of a few texts; checked for every provider, a grammar for the local model."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import FlowError, VerificationFailed
from engine.loading import check_source
from engine.pool import default_pool
from engine.run.choices import choice_of, choices_grammar
from engine.testing.chat_server import ChatServer, Reply
from tests.conftest import loopback_pool
from tests.helpers import flow_from, run

TRIAGE = '''input q
step kind {
  model: fast then strong
  task: "code, math or other? {q}"
  choices: "code", "math", "other"
}
'''


def test_a_reply_matches_a_choice_up_to_case_quotes_and_a_full_stop() -> None:
    assert choice_of(" Code.\n", ["code", "math"]) == "code"
    assert choice_of('"MATH"', ["code", "math"]) == "math"
    assert choice_of("code, probably", ["code", "math"]) is None
    assert choices_grammar(['say "hi"', "no"]) == 'root ::= "say \\"hi\\"" | "no"\n'


@pytest.mark.parametrize("value, words", [('"a", "a"', 'lists "a" twice'), ("a, b", "quoted strings"), ('""', "quoted strings")])
def test_bad_choices_are_diagnosed(value: str, words: str) -> None:
    result = check_source(f'input q\nstep s {{ model: local  task: "{{q}}"  choices: {value} }}\n', default_pool(), "c.flow")
    assert result.flow is None and any(d.code == "E208" and words in d.message for d in result.diagnostics)


def test_an_http_model_is_checked_not_constrained_and_the_output_is_the_choice_as_written(home: Path) -> None:
    with ChatServer() as server:
        server.script["fast"] = [Reply(text="Math.")]
        pool = loopback_pool(server.url)
        summary = run(flow_from(TRIAGE, pool), {"q": "2+2"}, pool, home)
        assert "grammar" not in server.requests[0] and "guided_grammar" not in server.requests[0]
    assert summary.output == "math"


def test_a_reply_that_is_no_choice_fails_the_check_and_escalates(home: Path) -> None:
    with ChatServer() as server:
        server.script["fast"] = [Reply(text="It is probably about code")]
        server.script["strong"] = [Reply(text="code")]
        pool = loopback_pool(server.url)
        summary = run(flow_from(TRIAGE, pool), {"q": "def f(): pass"}, pool, home)
        attempts = summary.steps["kind"].attempts
        assert [(a.alias, a.status) for a in attempts] == [("fast", "rejected"), ("strong", "ok")]
        assert "not one of the choices" in attempts[0].reason and summary.output == "code"
        server.script["strong"] = [Reply(text="no idea")]
        with pytest.raises(VerificationFailed, match="not one of the choices"):
            run(flow_from(TRIAGE, pool), {"q": "x"}, pool, home)


def test_choices_are_kept_by_the_formatter() -> None:
    from engine.syntax.fmt import format_source

    assert 'choices: "code", "math", "other"' in format_source(TRIAGE)


@pytest.mark.model
@pytest.mark.parametrize("alias", ["local", "smol"])
def test_the_local_models_are_constrained_to_the_choices(alias: str, home: Path) -> None:
    """Unconstrained, neither model reliably replies with the label only (docs/models.md); with `choices:` both do."""
    pytest.importorskip("llama_cpp", reason="needs the `local` extra")
    source = (f'input q\nstep kind {{ model: {alias}  max_tokens: 8  task: "Is this about code, math or other? '
              f'Reply with the label only.\\n\\n{{q}}"  choices: "code", "math", "other" }}\n'
              f'step verdict {{ model: {alias}  sees: kind  max_tokens: 8  task: "Is the label right? Reply ACCEPT or REVISE."  '
              f'choices: "ACCEPT", "REVISE" }}\n')
    pool = default_pool()
    flow = flow_from(source, pool)
    for q in ("Write def total(xs) that sums a list", "What is 12 times 11?", "Who wrote Hamlet?"):
        summary = run(flow, {"q": q}, pool, home, cache=False)
        assert summary.steps["kind"].output in ("code", "math", "other")
        assert summary.steps["verdict"].output in ("ACCEPT", "REVISE")
        assert all(a.status == "ok" for s in summary.steps.values() for a in s.attempts)  # constrained: nothing rejected


def test_flow_error_when_choices_is_on_a_fuse() -> None:
    with pytest.raises(FlowError):
        flow_from('input q\nfuse f { panel: local, local  task: "{q}"  choices: "a", "b" }\n', default_pool())
