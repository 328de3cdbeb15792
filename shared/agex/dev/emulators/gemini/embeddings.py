"""``embedContent`` and ``batchEmbedContents`` of the Gemini API (v1beta), answered with real embeddings: the
vectors of the local model (``agex.adapters.local_embeddings``, 384 dimensions), so that texts alike land near
each other here as they do in production.

The wire format, as the real API takes it (proto JSON: camelCase or snake_case names, an unknown name refused)::

    POST /v1beta/models/{model}:embedContent
      {"model": "models/{model}", "content": {"parts": [{"text": "..."}]},
       "taskType": "RETRIEVAL_DOCUMENT", "title": "...", "outputDimensionality": 768}
    -> {"embedding": {"values": [...]}}

    POST /v1beta/models/{model}:batchEmbedContents
      {"requests": [<an embedContent body, whose model is the path's>, ...]}      (at most 100)
    -> {"embeddings": [{"values": [...]}, ...]}

A vector has ``outputDimensionality`` values (the model's full size without it: 3072 for Gemini embedding
models, 768 for ``text-embedding-*``). Like the real API, only a full-size vector is of norm 1: a shorter one
is the local vector truncated and left unnormalised, and a longer one the local vector padded with zeros
(which changes no similarity). A model whose name does not say ``embedding`` does not embed (404).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agex.ports.embeddings import EmbeddingKind

from .wire import ApiError, _get, invalid

MAX_BATCH = 100
TASK_TYPES = ("TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY",
              "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY")
QUERY_TASKS = ("RETRIEVAL_QUERY", "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY")
_FIELDS = {"model": "model", "content": "content", "taskType": "taskType", "task_type": "taskType",
           "title": "title", "outputDimensionality": "outputDimensionality",
           "output_dimensionality": "outputDimensionality"}
_CONTENT_FIELDS = ("parts", "role")


@dataclass(frozen=True)
class EmbedRequest:
    """One text to embed, validated."""

    text: str
    task_type: str
    dimensions: int

    @property
    def kind(self) -> EmbeddingKind:
        return "query" if self.task_type in QUERY_TASKS else "document"


def load_body(raw: bytes) -> Any:
    if not raw.strip():
        raise invalid("Request body is empty: expected a JSON EmbedContentRequest or BatchEmbedContentsRequest.")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid(f"Invalid JSON payload received. {exc}") from None


def full_size(model: str) -> int:
    """The size of a model's vectors when no ``outputDimensionality`` is asked for; 404 for a model that does
    not embed."""
    if "embedding" not in model:
        raise ApiError(404, f"models/{model} is not found for API version v1beta, or is not supported for "
                            "embedContent. Call ListModels to see the list of available models and their "
                            "supported methods.")
    return 3072 if model.startswith("gemini") else 768


def parse_embed(model: str, data: Any, where: str) -> EmbedRequest:
    """An ``EmbedContentRequest`` (``where`` names it in messages: ``EmbedContentRequest`` or
    ``BatchEmbedContentsRequest.requests[i]``), or INVALID_ARGUMENT as the real API words it."""
    if not isinstance(data, dict):
        raise invalid(f"Invalid JSON payload received. Expected an EmbedContentRequest object at '{where}'.")
    for name in data:
        if name not in _FIELDS:
            raise invalid(f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field.")
    named = data.get("model")
    if named is not None and str(named).removeprefix("models/") != model:
        raise invalid(f"* {where}.model: the model of an embedding request ({named}) must be the model of the "
                      f"URL (models/{model}).")
    task_type = _get(data, "taskType", "task_type") or "TASK_TYPE_UNSPECIFIED"
    if task_type not in TASK_TYPES:
        raise invalid(f"Invalid value at '{where}.task_type' "
                      f"(type.googleapis.com/google.ai.generativelanguage.v1beta.TaskType), \"{task_type}\"")
    title = data.get("title")
    if title is not None and not isinstance(title, str):
        raise invalid(f"Invalid value at '{where}.title' (TYPE_STRING), {title!r}")
    dimensions = _get(data, "outputDimensionality", "output_dimensionality")
    size = full_size(model)
    if dimensions is None:
        dimensions = size
    if isinstance(dimensions, bool) or not isinstance(dimensions, int):
        raise invalid(f"Invalid value at '{where}.output_dimensionality' (TYPE_INT32), {dimensions!r}")
    if not 1 <= dimensions <= size:
        raise invalid(f"* {where}.output_dimensionality: must be between 1 and {size} for models/{model}, "
                      f"got {dimensions}.")
    return EmbedRequest(text=_text(data.get("content"), f"{where}.content"), task_type=task_type,
                        dimensions=dimensions)


def _text(content: Any, where: str) -> str:
    if content is None:
        raise invalid(f"* {where}: content is not specified")
    if not isinstance(content, dict):
        raise invalid(f"Invalid JSON payload received. Expected a Content object at '{where}'.")
    for name in content:
        if name not in _CONTENT_FIELDS:
            raise invalid(f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field.")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise invalid(f"* {where}.parts: contents.parts must not be empty.")
    texts = []
    for j, part in enumerate(parts):
        text = part.get("text") if isinstance(part, dict) else None
        if not isinstance(text, str) or set(part) != {"text"}:
            raise invalid(f"* {where}.parts[{j}]: only text can be embedded by this model.")
        texts.append(text)
    # the model embeds the parts' texts as one
    joined = " ".join(texts)
    if not joined.strip():
        raise invalid("Request contains an invalid argument.")
    return joined


def parse_batch(model: str, data: Any) -> list[EmbedRequest]:
    if not isinstance(data, dict):
        raise invalid("Invalid JSON payload received. Expected a BatchEmbedContentsRequest object.")
    for name in data:
        if name != "requests":
            raise invalid(f"Invalid JSON payload received. Unknown name \"{name}\": Cannot find field.")
    requests = data.get("requests")
    if not isinstance(requests, list) or not requests:
        raise invalid("* BatchEmbedContentsRequest.requests: requests is not specified")
    if len(requests) > MAX_BATCH:
        raise invalid(f"* BatchEmbedContentsRequest.requests: at most {MAX_BATCH} requests can be in one batch")
    return [parse_embed(model, r, f"BatchEmbedContentsRequest.requests[{i}]") for i, r in enumerate(requests)]


def sized(vector: list[float], dimensions: int) -> list[float]:
    """The local vector made ``dimensions`` long: truncated, or padded with zeros."""
    return vector[:dimensions] + [0.0] * max(0, dimensions - len(vector))
