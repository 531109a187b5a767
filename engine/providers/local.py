"""The embedded local models (Gemma 3 270M, SmolLM2 135M Instruct; via llama.cpp), in-process, no keys, no network.

Each is loaded once per process on first use and shared by every alias that names it; llama.cpp
contexts are not safe to use concurrently, so calls are serialised by a lock and run
in a worker thread to keep the event loop free. Needs the `local` extra.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from engine.pool import ProviderSpec
from engine.providers.local_models import GEMMA_ID, INSTALL_HINT, MODELS, LocalModel, chat_prompt, local_model
from engine.providers.local_models import available as available
from engine.providers.reply import finish, usage_fields
from engine.run.protocol import ChatRequest, ChatResponse, ProviderFault

_lock = threading.Lock()  # one llama.cpp call at a time, whichever model: they share the CPU anyway
_models: dict[str, Any] = {}


def model_path(model_id: str = GEMMA_ID) -> str:
    """Where a local model's GGUF file is (Gemma's is assembled from its PyPI chunk packages on first use)."""
    return local_model(model_id).path()


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _load(n_ctx: int, threads: int | None, model: LocalModel | None = None) -> Any:
    model = model or MODELS[GEMMA_ID]
    key = f"{model.id}:{n_ctx}:{threads}"
    if key not in _models:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ProviderFault("client_error", INSTALL_HINT) from None
        path = model.path()
        with _quiet_stderr():  # llama.cpp prints context notes from C even with verbose=False
            _models[key] = Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, verbose=False, seed=0,
                                 chat_format="gemma" if model.template == "gemma" else None)
        if len(_models) == 1:
            atexit.register(_close_models)
    return _models[key]


def _close_models() -> None:
    """Free the loaded models at exit, while the interpreter is still whole.

    Left to `Llama.__del__` during interpreter shutdown, freeing runs after llama_cpp's
    module globals are gone and prints "Exception ignored ... TypeError" with a traceback
    at the end of every `baton run` that used the local model.
    """
    with _lock:
        for llm in _models.values():
            llm.close()
        _models.clear()


_grammars: dict[str, Any] = {}


def _schema_grammar(response_format: Any) -> Any:
    """A structured-output request as a grammar for the embedded model: llama.cpp's own JSON-schema-to-GBNF
    converter for a schema, its JSON grammar for `json_object`; None for plain text."""
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    schema = (response_format.get("json_schema") or {}).get("schema") if response_format.get("type") == "json_schema" else None
    if schema is not None:
        return _grammar(json_schema_to_gbnf(json.dumps(schema)))
    return _grammar(JSON_GBNF) if response_format.get("type") in ("json_object", "json_schema") else None


def _grammar(text: str) -> Any:
    if text not in _grammars:
        from llama_cpp.llama_grammar import LlamaGrammar

        _grammars[text] = LlamaGrammar.from_string(text, verbose=False)
    return _grammars[text]


def first_paragraph(text: str) -> str:
    """What a base model's completion answers: its first paragraph, and no framing it copied.

    After its answer a base model runs on into new questions of its own, or copies the
    prompt's framing: a line like `<<<e915c4d404 END step s1>>>` (engine.run.prompt).
    """
    answer = text.strip().split("\n\n", 1)[0]
    return answer.split("\n<<<", 1)[0].strip()


#: A repeated line shorter than this, or with no letter or digit (`}`, `---`), is not a loop: code repeats them.
MIN_REPEATED_LINE = 12


def cut_repeats(text: str, final: bool = True) -> str:
    """The text up to the first line that repeats an earlier one: a small model stuck in a loop.

    `baton ask "What is 12 times 11?"` on Gemma printed `120 = 12 x 11 = 120` eleven times.
    Only lines of at least `MIN_REPEATED_LINE` characters with a letter or digit count. While
    generating (`final=False`) the last line may still grow, so it is not judged yet.
    """
    lines = text.split("\n")
    seen: set[str] = set()
    for i, line in enumerate(lines if final else lines[:-1]):
        key = line.strip()
        if len(key) < MIN_REPEATED_LINE or not any(c.isalnum() for c in key):
            continue
        if key in seen:
            return "\n".join(lines[:i]).rstrip()
        seen.add(key)
    return text


class _StopAtAnswerEnd:
    """A llama.cpp stopping criterion that ends generation once the kept answer is decided.

    What is kept of an unconstrained reply ends at its first repeated line and, for a base
    model's completion, at its first paragraph (after it, the model runs on into new questions
    of its own), so generating past that costs time and nothing else: a flow without
    `max_tokens` used to generate all 1,024 tokens, about a minute here, for a one-line answer.
    The answer kept is the same either way. llama.cpp calls the criterion once per sampled
    token with the tokens so far (the prompt alone at the first call).
    """

    def __init__(self, llm: Any, completion: bool) -> None:
        self.llm = llm
        self.completion = completion
        self.read: int | None = None  # how many tokens of the sequence have been looked at
        self.text = bytearray()

    def __call__(self, input_ids: Any, _logits: Any) -> bool:
        if self.read is None:
            self.read = len(input_ids)
            return False
        new = input_ids[self.read:]
        self.read = len(input_ids)
        self.text += self.llm.detokenize([int(t) for t in new])
        so_far = self.text.decode("utf-8", "ignore")  # a character cut between tokens is not a break or a marker
        if self.completion and first_paragraph(so_far) != so_far.strip():
            return True
        return cut_repeats(so_far, final=False) != so_far


def final_answer(raw: str, completion: bool, constrained: bool) -> str:
    """What is kept of a local model's text: stripped and its first paragraph (completion mode), up to a repeated line."""
    text = raw
    if completion:
        text = text.strip()
        if not constrained:
            text = first_paragraph(text)
    return text if constrained else cut_repeats(text)


def _stopping(llm: Any, abandoned: threading.Event, at_answer_end: bool, completion: bool = True) -> Any:
    """When generation stops early: once its caller has gone and, unconstrained, where the kept answer ends.

    llama.cpp runs in a worker thread, which asyncio cannot cancel: without the first
    criterion, Ctrl-C or a timed-out step left the model generating to `max_tokens` while
    holding the lock, and the process waited for it at exit (20 s for a panel of four).
    """
    from llama_cpp import StoppingCriteriaList

    criteria: list[Any] = [lambda _input_ids, _logits: abandoned.is_set()]
    if at_answer_end:
        criteria.append(_StopAtAnswerEnd(llm, completion))
    return StoppingCriteriaList(criteria)


def _seed(request: ChatRequest) -> int:
    """The request's seed; without one, a fresh one for a sampled call, as any chat API does.

    A fixed default made every sampled call with the same prompt the same sample, so a
    Self-MoA panel (`panel: local x 3`, temperature 0.8) was three copies of one answer.
    At temperature 0 the seed does not matter: 0 keeps those calls reproducible.
    """
    if request.seed is not None:
        return request.seed
    return 0 if request.temperature == 0 else random.randrange(2**31)


def text_messages(request: ChatRequest) -> tuple[dict[str, str], ...]:
    """The request's messages as the embedded models take them: text only. Tools, and the tool calls and results of a
    conversation with tools, are a `client_error`: these models were not trained to call tools."""
    if request.tools is not None or any(not isinstance(m.get("content"), str) or m.get("tool_calls") for m in request.messages):
        raise ProviderFault("client_error", "local model: the embedded models take text messages only, not tools or tool calls")
    return tuple({"role": str(m["role"]), "content": str(m["content"])} for m in request.messages)


def completion_prompt(messages: tuple[dict[str, str], ...], constrained: bool) -> str:
    """Chat messages as a plain-text prompt for a base model: the texts, then an answer cue."""
    text = "\n\n".join(m.get("content", "").strip() for m in messages)
    return text + ("\n\n" if constrained else "\n\nAnswer:")


class _AnswerSoFar:
    """Hands on only text that the kept answer (`final_answer`) will start with; `close` sends the rest.

    Held back until more text shows what it is: trailing whitespace (stripped, or the end of a
    line cut as a repeat), a last line that could still turn into a repeat of an earlier one,
    and in completion mode the last few characters (the start of a paragraph break or of
    copied framing, `\n<<<`). Leading whitespace of a completion is never sent.
    """

    HOLD = 4

    def __init__(self, on_text: Callable[[str], None], completion: bool, constrained: bool) -> None:
        self.on_text = on_text
        self.completion = completion
        self.constrained = constrained
        self.raw = ""
        self.sent = ""

    def settled(self) -> str:
        text = self.raw
        if self.completion:
            text = text.lstrip() if self.constrained else first_paragraph(text)
        if not self.constrained:
            cut = cut_repeats(text, final=False)
            if cut == text:  # no repeat yet: the line being written may still become one
                head, newline, last = text.rpartition("\n")
                if newline and any(line.strip().startswith(last.strip()) for line in head.split("\n")):
                    text = head
            else:
                text = cut
        if self.completion:
            text = text[: max(0, len(text) - self.HOLD)]
        return text.rstrip()

    def __call__(self, piece: str) -> None:
        self.raw += piece
        text = self.settled()
        if len(text) > len(self.sent) and text.startswith(self.sent):
            self._send(text[len(self.sent):])

    def close(self, answer: str) -> None:
        if answer.startswith(self.sent) and len(answer) > len(self.sent):
            self._send(answer[len(self.sent):])

    def _send(self, text: str) -> None:
        self.sent += text
        self.on_text(text)


def _streamed(llm: Any, prompt: str | list[int], stop: list[str], criteria: Any, sampling: dict[str, Any],
              on_piece: Callable[[str], None]) -> dict[str, Any]:
    """`create_completion(stream=True)`, put back together as the one result the unstreamed call returns.

    A streamed completion reports no usage: the prompt's tokens are counted here, and each
    chunk is one sampled token, except the closing chunk that only carries the finish reason
    (counting it made a streamed reply one token dearer than the same reply unstreamed).
    """
    prompt_tokens = len(prompt) if isinstance(prompt, list) else len(llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))
    texts: list[str] = []
    finish_reason = None
    model = ""
    completion_tokens = 0
    for chunk in llm.create_completion(prompt, stop=stop or None, stopping_criteria=criteria, stream=True, **sampling):
        choice = chunk["choices"][0]
        model = str(chunk.get("model", model))
        piece = choice.get("text") or ""
        if piece or choice.get("finish_reason") is None:
            completion_tokens += 1
        if piece:
            texts.append(piece)
            on_piece(piece)
        finish_reason = choice.get("finish_reason") or finish_reason
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
    return {"model": model, "choices": [{"text": "".join(texts), "finish_reason": finish_reason}], "usage": usage}


class LocalProvider:
    """Every embedded model (`engine.providers.local_models`), each loaded on first use; the request's model id picks one."""

    enforces_grammar = True  # llama.cpp samples only what the grammar allows

    def __init__(self, name: str, spec: ProviderSpec) -> None:
        self.name = name
        self.n_ctx = int(spec.options.get("n_ctx", 4096))
        # Gemma is a base model: through a chat template it mostly echoes the prompt, while as plain text completion
        # it answers sensibly; SmolLM2 is a chat model. `options = { mode = "chat" }` (or "completion") overrides both.
        mode = spec.options.get("mode")
        self.mode = str(mode) if mode is not None else None
        threads = spec.options.get("threads")
        self.threads = int(threads) if threads is not None else None

    def _complete(self, request: ChatRequest, abandoned: threading.Event, on_text: Callable[[str], None] | None = None) -> ChatResponse:
        model = local_model(request.model_id)
        messages = text_messages(request)
        with _lock:
            if abandoned.is_set():  # given up on while it waited for the model
                raise ProviderFault("client_error", "local model: the call was abandoned before it started")
            llm = _load(self.n_ctx, self.threads, model)
            # llama-cpp-python keeps the previous prompt's KV cache and reuses the longest common prefix (at
            # least the BOS token); with Gemma 3 (sliding-window attention) what it keeps past that prefix
            # leaks into the next call, so a reply depended on the calls before it, and chat prompts came
            # out as garbage ("Name three colours. mendatang ..."). Every call starts from an empty cache.
            llm.reset()
            grammar = (_grammar(request.grammar) if request.grammar and request.grammar_format == "gbnf"
                       else _schema_grammar(request.response_format) if request.response_format is not None else None)
            sampling = {"max_tokens": request.max_tokens, "temperature": request.temperature, "grammar": grammar,
                        "top_p": request.top_p if request.top_p is not None else 0.95,
                        "seed": _seed(request)}
            completion = (self.mode or model.mode) != "chat"
            constrained = grammar is not None
            prompt: str | list[int]
            stop: list[str]
            if completion:
                prompt, stop = completion_prompt(messages, constrained), []
            else:
                prompt, stop = chat_prompt(llm, model, messages)
            criteria = _stopping(llm, abandoned, at_answer_end=not constrained, completion=completion)
            so_far = _AnswerSoFar(on_text, completion, constrained) if on_text is not None else None
            try:
                if so_far is None:
                    out = llm.create_completion(prompt, stop=stop or None, stopping_criteria=criteria, **sampling)
                else:
                    out = _streamed(llm, prompt, stop, criteria, sampling, so_far)
            except ValueError as err:  # e.g. prompt longer than the context window
                raise ProviderFault("client_error", f"local model: {err}") from None
            text = final_answer(out["choices"][0].get("text") or "", completion, constrained)
            if so_far is not None:
                so_far.close(text)
        choice = out["choices"][0]
        usage = usage_fields(out.get("usage"), model.id)
        return finish(text, str(choice.get("finish_reason") or ""), usage, "local model", str, request.max_tokens)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await self._in_thread(request, None)

    async def stream(self, request: ChatRequest, on_text: Callable[[str], None]) -> ChatResponse:
        """Token by token: each piece of the answer is handed to the event loop as llama.cpp samples it."""
        loop = asyncio.get_running_loop()

        def hand_on(text: str) -> None:
            loop.call_soon_threadsafe(on_text, text)

        return await self._in_thread(request, hand_on)

    async def _in_thread(self, request: ChatRequest, on_text: Callable[[str], None] | None) -> ChatResponse:
        abandoned = threading.Event()
        try:
            return await asyncio.to_thread(self._complete, request, abandoned, on_text)
        except asyncio.CancelledError:
            abandoned.set()  # the thread stops at its next token, or before it starts
            raise

    async def aclose(self) -> None:
        return None
