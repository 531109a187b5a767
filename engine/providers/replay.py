"""Replay: a pool alias bound to a recorded model answers dataset questions with that model's recorded answer.

The data is a folder in the ZeroEval layout (`items.jsonl`, `answers.csv`, `correct.csv`,
`output_tokens_o200k.csv`): one row per question, one column per model. A request is
matched to an item when its user message is exactly the item's question (the dataset's
own prompt, as in `task: "{question}"`). Datasets repeat questions (750 of MMLU-Pro's
11,640 items share their text with another): when several items ask it, the one `baton eval`
is running (`DATASET_ITEM`) answers, and the first of them otherwise. The reply is the model's recorded answer as JSON
(`{"answer": "18"}`), with the recorded prompt and output token counts, so costs follow
the real model's prices. Replay reproduces first-hand answers to the dataset's prompt;
it cannot stand for a step that reacts to other steps' outputs (that needs a live model),
and it holds one sample per model, so N samples of one model are N identical answers.
"""

from __future__ import annotations

import csv
import json
from functools import lru_cache
from pathlib import Path

from engine.pool import ProviderSpec
from engine.run.protocol import DATASET_ITEM, ChatRequest, ChatResponse, ProviderFault


class ReplayData:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        #: Question text -> the ids of the items that ask it, in the file's order.
        self.by_question: dict[str, list[str]] = {}
        self.prompt_tokens: dict[str, int] = {}
        with open(folder / "items.jsonl", encoding="utf-8") as fh:
            for line in fh:
                item = json.loads(line)
                self.by_question.setdefault(item["question"].strip(), []).append(item["id"])
                self.prompt_tokens[item["id"]] = int(item.get("prompt_tokens_o200k") or 0)
        self.answers = _grid(folder / "answers.csv")
        self.correct = _grid(folder / "correct.csv")
        self.tokens = _grid(folder / "output_tokens_o200k.csv")

    def models(self) -> list[str]:
        first = next(iter(self.correct.values()), {})
        return sorted(first)


def _grid(path: Path) -> dict[str, dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return {row["id"]: {k: v for k, v in row.items() if k != "id"} for row in csv.DictReader(fh)}


@lru_cache(maxsize=8)
def load(folder: str) -> ReplayData:
    return ReplayData(Path(folder))


class ReplayProvider:
    enforces_grammar = False  # recorded answers are what they were

    def __init__(self, name: str, spec: ProviderSpec) -> None:
        self.name = name
        folder = spec.options.get("dataset")
        if not folder:
            raise ValueError(f"replay provider `{name}` needs options.dataset (a folder of recorded answers)")
        self.data = load(str(folder))

    async def complete(self, request: ChatRequest) -> ChatResponse:
        question = request.messages[-1]["content"].strip()
        items = self.data.by_question.get(question)
        if not items:
            raise ProviderFault("client_error", f"replay `{self.name}`: no recorded answer for this request "
                                "(replay answers only a dataset question sent as-is, e.g. task: \"{question}\")")
        running = DATASET_ITEM.get()
        item = running if running in items else items[0]
        recorded = self.data.correct.get(item, {}).get(request.model_id, "")
        if recorded == "":
            raise ProviderFault("client_error", f"replay `{self.name}`: model `{request.model_id}` has no record for {item}")
        answer = self.data.answers[item].get(request.model_id, "")
        tokens = self.data.tokens[item].get(request.model_id, "") or "0"
        return ChatResponse(text=json.dumps({"answer": answer}), input_tokens=self.data.prompt_tokens.get(item, 0),
                            output_tokens=int(float(tokens)), response_model=request.model_id, finish_reason="stop")

    async def aclose(self) -> None:
        return None
