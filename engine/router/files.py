"""Reading a router or scorer file: data a flow names, never authority over where anything is sent.

A flow may come from anyone (a shared repository, a planner), and the router or answer
scorer file beside it with it, so the file is read as untrusted data:

- only a regular file, only under `MAX_ROUTER_BYTES`: a FIFO hung `validate`, the language
  server and `serve` at start-up, and `/dev/zero` was read until memory ran out;
- only from inside the folder tree of the flow that names it (`inside`), symbolic links
  resolved first, so a flow cannot read `~/.ssh/...` as a "router";
- every field is checked for its type and range, and a bad one is named (`RouterError`,
  shown by `validate` as E312) instead of a traceback at validate or at run time;
- it cannot choose an endpoint or a credential: embeddings come from a pool alias the
  operator configured (`features.alias`); a file with `base_url` or `api_key_env` is refused.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from engine.model import Flow, Route
from engine.numbers import finite
from engine.pool import Pool
from engine.router.model import FORMAT, ModelStats, Router, RouterError, Vector
from engine.router.scorer import FORMAT as SCORER_FORMAT
from engine.router.scorer import Scorer

T = TypeVar("T")

#: The largest router file read: the committed GSM8K router is 154 KB; a kNN router over 100k items is ~40 MB.
MAX_ROUTER_BYTES = 64 * 1024 * 1024
#: Keys a router file may not hold: a file a flow names cannot decide where questions and keys are sent.
AUTHORITY_KEYS = ("base_url", "api_key_env", "url", "headers", "api_key")


def read_bounded(path: Path, limit: int | None = None, what: str = "router file") -> bytes:
    """A regular file's bytes, at most `limit` (default `MAX_ROUTER_BYTES`); `RouterError` for anything else (a FIFO is
    never waited on)."""
    limit = MAX_ROUTER_BYTES if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise RouterError(f"no {what} {path}") from None
    except OSError as err:
        raise RouterError(f"{what} {path} cannot be read: {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RouterError(f"{what} {path} is not a regular file (a FIFO, a device or a folder)")
        if info.st_size > limit:
            raise RouterError(f"{what} {path} is {info.st_size} bytes, over the {limit // (1024 * 1024)} MB limit")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)
    except OSError as err:
        raise RouterError(f"{what} {path} cannot be read: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise RouterError(f"{what} {path} grew past the {limit // (1024 * 1024)} MB limit while it was read")
    return data


def inside(path: Path, root: Path) -> bool:
    """Whether `path` (resolved, links followed) lies in the folder tree `root`."""
    return path.resolve().is_relative_to(root.resolve())


def route_calls(flow: Flow, pool: Pool) -> list[str]:
    """What each learned route of a checked flow will call when it decides, in words (`baton validate` prints them)."""
    out = []
    for node in flow.nodes.values():
        if not isinstance(node, Route) or node.router is None:
            continue
        alias = cached_router(node.router).embeddings_alias
        if alias is None:
            out.append(f"route `{node.name}` decides from hashed words of the inputs: no call")
            continue
        spec = pool.with_models(flow.models).models[alias]
        provider = pool.provider(spec.provider)
        key = f", with the key in ${provider.api_key_env}" if provider.api_key_env else ""
        out.append(f"route `{node.name}` embeds the inputs through `{alias}`: POST {(provider.base_url or '').rstrip('/')}/embeddings "
                   f"(model {spec.id}{key})")
    return out


def _stamp(path: str, what: str) -> tuple[int, int]:
    """A regular file's version (modified time, size), checked before any cache: a FIFO is never opened."""
    try:
        info = Path(path).stat()
    except FileNotFoundError:
        raise RouterError(f"no {what} {path}") from None
    except OSError as err:
        raise RouterError(f"{what} {path} cannot be read: {err.strerror or err}") from None
    if not stat.S_ISREG(info.st_mode):
        raise RouterError(f"{what} {path} is not a regular file (a FIFO, a device or a folder)")
    return info.st_mtime_ns, info.st_size


def cached_router(path: str) -> Router:
    """The router at `path`, read once per version of the file (a run routes many items through one)."""
    return _cached(path, *_stamp(path, "router file"))


@lru_cache(maxsize=16)
def _cached(path: str, _stamp: int, _size: int) -> Router:
    return load_router(path)


def cached_scorer(path: str) -> Scorer:
    """The answer scorer at `path`, read once per version of the file."""
    return _cached_scorer(path, *_stamp(path, "scorer file"))


@lru_cache(maxsize=16)
def _cached_scorer(path: str, _stamp: int, _size: int) -> Scorer:
    return load_scorer(path)


def _json_file(path: str | Path, what: str, fmt: str) -> dict[str, Any]:
    raw = read_bounded(Path(path), what=what)
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise RouterError(f"{what} {path} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise RouterError(f"{what} {path} cannot be read: {err}") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise RouterError(f"{path} is not a Baton {what} ({fmt})")
    return data


def load_router(path: str | Path) -> Router:
    """A router file, every field checked; `RouterError` names the first one that is wrong."""
    return _load(path, "router file", FORMAT, _router)


def load_scorer(path: str | Path) -> Scorer:
    """An answer scorer file, every field checked; `RouterError` names the first one that is wrong."""
    return _load(path, "scorer file", SCORER_FORMAT, _scorer)


def _load(path: str | Path, what: str, fmt: str, build: Callable[[dict[str, Any]], T]) -> T:
    data = _json_file(path, what, fmt)
    try:
        return build(data)
    except _Bad as err:
        raise RouterError(f"{what} {path} is malformed: {err}") from None


class _Bad(Exception):
    """A field of the file that is wrong; its message names the field."""


def _no_constant(word: str) -> Any:
    raise ValueError(f"{word} is not a number a router file may hold")


def _number(value: Any, where: str, low: float | None = None, high: float | None = None) -> float:
    try:
        return finite(value, f"`{where}`", low, high)
    except ValueError as err:
        raise _Bad(str(err)) from None


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"`{where}` must be an object, not {type(value).__name__}")
    return value


def _sparse(value: Any, where: str) -> Vector:
    """A sparse vector: an object of bucket number (as text) to a finite number."""
    out: Vector = {}
    for key, x in _object(value, where).items():
        try:
            bucket = int(key)
        except ValueError:
            raise _Bad(f"`{where}` has the key {key!r}, not a whole number") from None
        out[bucket] = _number(x, f"{where}.{key}")
    return out


def _models(value: Any) -> dict[str, ModelStats]:
    models = _object(value, "models")
    if not models:
        raise _Bad("`models` names no model")
    out = {}
    for alias, raw in models.items():
        entry = _object(raw, f"models.{alias}")
        if not isinstance(entry.get("model_id"), str):
            raise _Bad(f"`models.{alias}.model_id` must be text")
        unknown = set(entry) - {"model_id", "accuracy", "prompt_tokens", "output_tokens", "mean_cost"}
        if unknown:
            raise _Bad(f"`models.{alias}` has unknown fields: {', '.join(sorted(unknown))}")
        out[alias] = ModelStats(model_id=entry["model_id"], accuracy=_number(entry.get("accuracy"), f"models.{alias}.accuracy", 0, 1),
                                prompt_tokens=_number(entry.get("prompt_tokens", 0), f"models.{alias}.prompt_tokens", 0),
                                output_tokens=_number(entry.get("output_tokens", 0), f"models.{alias}.output_tokens", 0),
                                mean_cost=_number(entry.get("mean_cost", 0), f"models.{alias}.mean_cost", 0))
    return out


def _features(value: Any) -> dict[str, Any]:
    features = _object(value, "features")
    for key in AUTHORITY_KEYS:
        if key in features:
            raise _Bad(f"`features.{key}`: a router file cannot choose an endpoint or a credential; name a pool alias that "
                       "serves embeddings instead (`features.alias`, set by `baton router train --embeddings ALIAS`)")
    kind = features.get("kind")
    if kind == "hashed":
        return {"kind": "hashed"}
    if kind == "embeddings":
        if not isinstance(features.get("alias"), str) or not features["alias"]:
            raise _Bad("`features.alias` must name the pool alias whose provider serves the embeddings")
        return {"kind": "embeddings", "alias": features["alias"]}
    raise _Bad(f"`features.kind` must be \"hashed\" or \"embeddings\", not {kind!r}")


def _router(data: dict[str, Any]) -> Router:
    learner = data.get("learner")
    if learner not in ("logistic", "knn"):
        raise _Bad(f"`learner` must be \"logistic\" or \"knn\", not {learner!r}")
    models = _models(data.get("models"))
    features = _features(data.get("features", {"kind": "hashed"}))
    calibration = _object(data.get("calibration", {}), "calibration")
    if "threshold" in calibration:
        calibration = {**calibration, "threshold": _number(calibration["threshold"], "calibration.threshold", 0, 1)}
    idf = {k: _number(v, f"idf.{k}", 0) for k, v in _sparse(data.get("idf", {}), "idf").items()}
    weights = {m: _sparse(w, f"weights.{m}") for m, w in _object(data.get("weights", {}), "weights").items()}
    bias = {m: _number(b, f"bias.{m}") for m, b in _object(data.get("bias", {}), "bias").items()}
    if learner == "logistic":
        missing = [m for m in models if m not in weights or m not in bias]
        if missing:
            raise _Bad(f"a logistic router needs `weights` and `bias` for every model; missing for {', '.join(missing)}")
    examples_raw = data.get("examples", [])
    if not isinstance(examples_raw, list):
        raise _Bad("`examples` must be a list")
    examples = []
    for i, item in enumerate(examples_raw):
        if not isinstance(item, list) or len(item) != 2:
            raise _Bad(f"`examples[{i}]` must be [vector, {{model: 0 or 1}}]")
        right = _object(item[1], f"examples[{i}][1]")
        marks = {m: int(_number(r, f"examples[{i}][1].{m}", 0, 1)) for m, r in right.items()}
        if set(marks) != set(models):
            raise _Bad(f"`examples[{i}][1]` must mark every model right or wrong")
        examples.append((_sparse(item[0], f"examples[{i}][0]"), marks))
    if learner == "knn" and not examples:
        raise _Bad("a knn router needs `examples`")
    k = _number(data.get("k", 25), "k", 1, 100_000)
    if not k.is_integer():
        raise _Bad(f"`k` must be a whole number, got {data.get('k')!r}")
    trained_on = _object(data.get("trained_on", {}), "trained_on")
    return Router(learner=learner, models=models, idf=idf, weights=weights, bias=bias, examples=examples, k=int(k),
                  trained_on=dict(trained_on), calibration=dict(calibration), features=features)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _Bad(f"`{where}` must be text")
    return value


def _scorer(data: dict[str, Any]) -> Scorer:
    panel = data.get("panel")
    if not isinstance(panel, list) or not panel or len(panel) > 16:
        raise _Bad("`panel` must list the 1 to 16 aliases the scorer was trained for")
    panel = [_text(a, f"panel[{i}]") for i, a in enumerate(panel)]
    if len(set(panel)) != len(panel):
        raise _Bad("`panel` names an alias twice: a scorer tells members apart by alias")
    models = {a: _text(m, f"models.{a}") for a, m in _object(data.get("models", {}), "models").items()}
    escalate = data.get("escalate")
    if escalate is not None:
        escalate = _text(escalate, "escalate")
    weights = {_text(k, "weights"): _number(v, f"weights.{k}") for k, v in _object(data.get("weights"), "weights").items()}
    return Scorer(panel=panel, models=models, weights=weights, threshold=_number(data.get("threshold", 0.5), "threshold", 0, 1),
                  escalate=escalate, calibration=dict(_object(data.get("calibration", {}), "calibration")),
                  trained_on=dict(_object(data.get("trained_on", {}), "trained_on")))
