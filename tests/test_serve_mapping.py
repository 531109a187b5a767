"""From a chat request to a flow's inputs and parameters (docs/serve.md, "From a chat request to flow inputs")."""

from __future__ import annotations

import pytest

from engine.pool import default_pool
from engine.serve.mapping import RequestError, chat_messages, flow_inputs, request_params, with_request_params
from tests.helpers import flow_from

POOL = default_pool()
ONE = flow_from('input question\nstep a { model: local  task: "{question}" }', POOL)
CHAT = flow_from('input question\ninput history\nstep a { model: local  sees: history  task: "{question}" }', POOL)
TWO = flow_from('input question\ninput context\nstep a { model: local  sees: context  task: "{question}" }', POOL)
OWN = flow_from('input q\nstep a { model: local  task: "{q}"  temperature: 0.2  system: "Be exact." }\n'
                'step b { model: local  sees: a  task: "again" }', POOL)

TURNS = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
         {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]}]


def test_a_flow_with_one_input_gets_the_last_user_message() -> None:
    assert flow_inputs(ONE, chat_messages({"messages": TURNS}), None) == {"question": "What is 2+2?"}


def test_a_flow_with_history_gets_the_earlier_turns_as_a_transcript() -> None:
    assert flow_inputs(CHAT, chat_messages({"messages": TURNS}), None) == {"question": "What is 2+2?",
                                                                            "history": "user: Hi\n\nassistant: Hello!"}


def test_named_inputs_fill_a_flow_with_several_and_without_them_it_is_a_400_that_says_how() -> None:
    messages = chat_messages({"messages": TURNS})
    assert flow_inputs(TWO, messages, {"context": "maths"}) == {"context": "maths", "question": "What is 2+2?"}
    with pytest.raises(RequestError, match=r"has inputs `question`, `context`: name them in extra_body"):
        flow_inputs(TWO, messages, None)
    with pytest.raises(RequestError, match="must be text"):
        flow_inputs(TWO, messages, {"context": 3})


def test_request_parameters_apply_only_where_a_step_does_not_set_them() -> None:
    flow = with_request_params(OWN, request_params({"temperature": 0.9, "seed": 5, "max_tokens": 64}), "You are {terse}.")
    a, b = flow.nodes["a"].params, flow.nodes["b"].params  # type: ignore[union-attr]
    assert (a.temperature, a.system, a.seed, a.max_tokens) == (0.2, "Be exact.", 5, 64)
    assert (b.temperature, b.system, b.seed, b.max_tokens) == (0.9, "You are {{terse}}.", 5, 64)  # braces kept literal


@pytest.mark.parametrize("body, words", [
    ({"temperature": 5}, "temperature"), ({"max_tokens": 0}, "max_tokens"), ({"seed": "x"}, "seed"), ({"n": 3}, "n` must be 1"),
])
def test_bad_parameters_are_a_400_naming_the_parameter(body: dict[str, object], words: str) -> None:
    with pytest.raises(RequestError, match=words):
        request_params(body)


def test_messages_that_are_not_text_are_refused_clearly() -> None:
    with pytest.raises(RequestError, match="only text content parts"):
        chat_messages({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
    with pytest.raises(RequestError, match="non-empty list"):
        chat_messages({"messages": []})
