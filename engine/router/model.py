"""A learned router: per pool model, the probability that it answers a question right, from the question's text.

Features are hashed word unigrams and bigrams with TF-IDF weights and L2 normalisation:
no vocabulary to download or store, and the same text always lands on the same features.
Two learners over them, both pure Python so a router file loads and predicts with the core
install alone:

- `logistic`: one L2-regularised logistic regression per model, trained by SGD;
- `knn`: the share of the k most similar training questions (cosine) the model got right,
  smoothed toward the model's overall accuracy.

A router file (JSON, `.router`) records what it was trained on: the data's hash, the
models (alias -> model id), each model's mean prompt and reply tokens on the training
items (so its cost per question follows the pool's prices at run time), the learner and
its settings, the split, and the date.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine.errors import BatonError
from engine.pool import Pool

FORMAT = "baton-router/1"
DIMENSIONS = 2**12  # a small file; collisions cost little on questions of a few dozen words
WORDS = re.compile(r"[a-z]+|\d+(?:\.\d+)?|[$%/*+=-]")
Learner = Literal["logistic", "knn"]


class RouterError(BatonError):
    """A router file that cannot be read, or a request it cannot answer."""


def _bucket(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=4).digest(), "big") % DIMENSIONS


def tokens(text: str) -> list[str]:
    """Words (numbers as `<num>`), bigrams, and coarse size marks: how long the question is and how many numbers it
    carries, which track how many steps a worded problem takes."""
    words = WORDS.findall(text.lower())
    numbers = sum(w[0].isdigit() for w in words)
    words = ["<num>" if w[0].isdigit() else w for w in words]
    sizes = [f"<words:{int(math.log2(len(words) + 1))}>", f"<numbers:{min(numbers, 8)}>"]
    return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)] + sizes * 3


def counts(text: str) -> Counter[int]:
    return Counter(_bucket(t) for t in tokens(text))


Vector = dict[int, float]
#: Texts to unit vectors, from a pool alias's embeddings endpoint (`engine.providers.embeddings.endpoint_embedder`).
Embedder = Callable[[Sequence[str]], list[Vector]]


def weighted(c: Counter[int], idf: Mapping[int, float]) -> Vector:
    v = {k: (1 + math.log(n)) * idf.get(k, 1.0) for k, n in c.items()}
    norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
    return {k: x / norm for k, x in v.items()}


def _dot(a: Vector, b: Vector) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(x * b.get(k, 0.0) for k, x in a.items())


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


@dataclass
class ModelStats:
    model_id: str
    accuracy: float
    prompt_tokens: float
    output_tokens: float
    #: The mean cost per question as recorded (an evaluation records costs, not tokens); used when no tokens are known.
    mean_cost: float = 0.0


@dataclass
class Router:
    learner: Learner
    models: dict[str, ModelStats]
    idf: dict[int, float]
    weights: dict[str, dict[int, float]] = field(default_factory=dict)  # logistic
    bias: dict[str, float] = field(default_factory=dict)
    examples: list[tuple[Vector, dict[str, int]]] = field(default_factory=list)  # knn
    k: int = 25
    trained_on: dict[str, Any] = field(default_factory=dict)
    #: Set by `baton router calibrate`: the threshold a learned route uses when the flow names none, and how it was found.
    calibration: dict[str, Any] = field(default_factory=dict)
    #: `{"kind": "hashed"}` (word n-grams, the default), or `{"kind": "embeddings", "alias": ...}`: vectors from the
    #: embeddings endpoint of a pool alias (`engine.providers.embeddings`). Never a URL or a key: the pool decides those.
    features: dict[str, Any] = field(default_factory=lambda: {"kind": "hashed"})

    @property
    def embeddings_alias(self) -> str | None:
        """The pool alias whose provider embeds questions, for a router on embeddings."""
        return str(self.features["alias"]) if self.features.get("kind") == "embeddings" else None

    def vector(self, text: str, embedder: Embedder | None = None) -> Vector:
        if self.embeddings_alias is not None:
            if embedder is None:
                raise RouterError(f"this router embeds questions with the pool alias `{self.embeddings_alias}`; no embedder was given")
            return embedder([text])[0]
        return weighted(counts(text), self.idf)

    def predict(self, text: str, embedder: Embedder | None = None) -> dict[str, float]:
        """Each model's probability of answering `text` right (`embedder` for a router on embeddings)."""
        x = self.vector(text, embedder)
        if self.learner == "logistic":
            return {m: _sigmoid(self.bias[m] + _dot(self.weights[m], x)) for m in self.models}
        near = sorted(((_dot(x, v), right) for v, right in self.examples), key=lambda t: -t[0])[: self.k]
        total = sum(max(s, 0.0) for s, _ in near) or 1.0
        prior = 2.0  # pseudo-counts toward the model's overall accuracy
        return {m: (sum(max(s, 0.0) * right[m] for s, right in near) / total * len(near) + prior * st.accuracy) / (len(near) + prior)
                for m, st in self.models.items()}

    def arm_costs(self, aliases: Iterable[str], pool: Pool) -> dict[str, float]:
        """Each alias's expected cost per question at the pool's prices: what a learned route and its report weigh."""
        return {a: self.cost(a, pool.models[a].input_price, pool.models[a].output_price) for a in aliases}

    def cost(self, alias: str, input_price: float | None, output_price: float | None) -> float:
        """A question's expected cost on `alias` at these prices (USD per million tokens)."""
        st = self.models[alias]
        if not st.prompt_tokens and not st.output_tokens:
            return st.mean_cost
        return (st.prompt_tokens * (input_price or 0.0) + st.output_tokens * (output_price or 0.0)) / 1e6

    # -- file -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "learner": self.learner, "k": self.k, "trained_on": self.trained_on, "calibration": self.calibration,
            "features": self.features,
            "models": {a: vars(s) for a, s in self.models.items()},
            "idf": {str(k): round(v, 3) for k, v in self.idf.items()},
            "weights": {m: {str(k): round(v, 3) for k, v in w.items() if abs(v) >= 5e-3} for m, w in self.weights.items()},
            "bias": {m: round(b, 6) for m, b in self.bias.items()},
            "examples": [[{str(k): round(v, 4) for k, v in x.items()}, right] for x, right in self.examples],
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n", encoding="utf-8")


# -- training ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    text: str
    right: dict[str, int]  # alias -> 1 right, 0 wrong
    prompt_tokens: int = 0
    output_tokens: dict[str, int] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)  # alias -> USD, when recorded instead of tokens


def train_router(examples: Sequence[Example], models: Mapping[str, str], learner: Learner = "logistic", *, epochs: int = 8,
                 l2: float = 1e-4, rate: float = 0.5, k: int = 25, seed: int = 0, trained_on: dict[str, Any] | None = None,
                 embeddings: tuple[str, Embedder] | None = None) -> Router:
    """A router over `models` (alias -> model id) from examples that say, per alias, right or wrong.

    `embeddings` (a pool alias, and its embedder) embeds the questions through that alias's endpoint (and so will
    every prediction, through the pool of the run); by default the features are hashed word n-grams."""
    if not examples:
        raise RouterError("no training examples")
    n = len(examples)
    idf: dict[int, float] = {}
    features: dict[str, Any] = {"kind": "hashed"}
    if embeddings is not None:
        features = {"kind": "embeddings", "alias": embeddings[0]}
        xs = embeddings[1]([e.text for e in examples])
    else:
        docs = [counts(e.text) for e in examples]
        df: Counter[int] = Counter(k for d in docs for k in d)
        idf = {key: math.log((1 + n) / (1 + c)) + 1 for key, c in df.items()}
        xs = [weighted(d, idf) for d in docs]
    stats = {a: ModelStats(model_id=mid, accuracy=sum(e.right[a] for e in examples) / n,
                           prompt_tokens=sum(e.prompt_tokens for e in examples) / n,
                           output_tokens=sum(e.output_tokens.get(a, 0) for e in examples) / n,
                           mean_cost=sum(e.cost.get(a, 0.0) for e in examples) / n) for a, mid in models.items()}
    router = Router(learner=learner, models=stats, idf=idf, k=k, trained_on=dict(trained_on or {}),
                    features=features)
    if learner == "knn":
        router.examples = [(x, dict(e.right)) for x, e in zip(xs, examples, strict=True)]
        return router
    rng = random.Random(seed)
    order = list(range(n))
    for alias in models:
        p0 = min(max(stats[alias].accuracy, 1e-3), 1 - 1e-3)
        bias = math.log(p0 / (1 - p0))
        w: dict[int, float] = {}
        step = 0
        for _epoch in range(epochs):
            rng.shuffle(order)
            for i in order:
                step += 1
                eta = rate / (1 + 0.01 * step / n)
                x, y = xs[i], examples[i].right[alias]
                err = _sigmoid(bias + _dot(w, x)) - y
                bias -= eta * err * 0.1
                for key, value in x.items():
                    w[key] = w.get(key, 0.0) * (1 - eta * l2) - eta * err * value
        router.weights[alias], router.bias[alias] = w, bias
    return router


def data_hash(examples: Sequence[Example]) -> str:
    digest = hashlib.sha256()
    for e in examples:
        digest.update(e.text.encode() + json.dumps(e.right, sort_keys=True).encode())
    return digest.hexdigest()[:16]
