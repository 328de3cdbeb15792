"""Gemini adapter of the embeddings port, through ``google-genai`` like the model adapter (``gemini.py``).

The client is the model adapter's: an API key (``AGEX_GEMINI_API_KEY``, with ``AGEX_GEMINI_BASE_URL`` pointing
it at the local emulator), or Vertex AI (``AGEX_VERTEX=true`` with ``AGEX_PROJECT`` and ``AGEX_LOCATION``, on the
service's own credentials); ``google.genai`` is imported on the first ``embed``; the client retries nothing, so
a failed call fails the step attempt and Cloud Tasks retries it with backoff.

On the wire, the Gemini API takes every batch as ``POST /v1beta/models/{model}:batchEmbedContents`` with
``{"requests": [{"model": "models/{model}", "content": {"parts": [{"text": ...}]}, "taskType":
"RETRIEVAL_DOCUMENT" | "RETRIEVAL_QUERY", "outputDimensionality": n}]}`` and answers ``{"embeddings":
[{"values": [...]}]}``, at most ``MAX_BATCH`` requests a call. On Vertex AI the client sends a Gemini model's
batch to ``:batchEmbedContents`` (one text: ``:embedContent``) and a ``text-embedding-*`` model's to
``:predict``.

Vectors are scaled to norm 1 here: the service normalises only a model's full-size vectors, and a smaller
``outputDimensionality`` (768 by default; gemini-embedding-001 gives 3072 at most) is a truncation of one.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from agex.core.errors import ConfigurationError, ModelError, model_unavailable
from agex.ports.embeddings import Embedder, EmbeddingKind, batches, check_texts, unit

DEFAULT_MODEL = "gemini-embedding-001"
DEFAULT_DIMENSIONS = 768
"""One of the sizes Google recommends for gemini-embedding-001 (768, 1536, 3072): a quarter of the storage of
the full vector for little loss of quality, and the full size of text-embedding-005."""
MAX_BATCH = 100
"""The most texts the Gemini API embeds in one ``batchEmbedContents``."""
_TASK_TYPES: dict[str, str] = {"document": "RETRIEVAL_DOCUMENT", "query": "RETRIEVAL_QUERY"}
_RETRYABLE = {408, 429, 500, 502, 503, 504}


class GeminiEmbedder(Embedder):
    def __init__(self, model: str = DEFAULT_MODEL, *, dimensions: int = DEFAULT_DIMENSIONS, api_key: str = "",
                 base_url: str = "", vertex: bool = False, project: str = "", location: str = "",
                 timeout_seconds: float = 60.0, batch_size: int = MAX_BATCH) -> None:
        if not vertex and not api_key:
            raise ConfigurationError("Gemini embeddings need AGEX_GEMINI_API_KEY, or AGEX_VERTEX=true to use Vertex AI")
        if not model.strip():
            raise ConfigurationError("name the Gemini embedding model (gemini:gemini-embedding-001)")
        if dimensions < 1:
            raise ConfigurationError(f"embedding dimensions must be at least 1, not {dimensions}")
        if not 1 <= batch_size <= MAX_BATCH:
            raise ConfigurationError(f"a Gemini embedding batch holds 1 to {MAX_BATCH} texts, not {batch_size}")
        self.model = model.removeprefix("models/")
        self.name = f"gemini:{self.model}"
        self.dimensions = dimensions
        self.api_key, self.base_url, self.vertex = api_key, base_url, vertex
        self.project, self.location, self.timeout_seconds = project, location, timeout_seconds
        self.batch_size = batch_size
        self._client: Any = None
        self._lock = threading.Lock()

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                from agex.adapters.gcp.gemini import genai_client

                self._client = genai_client(api_key=self.api_key, base_url=self.base_url, vertex=self.vertex,
                                            project=self.project, location=self.location,
                                            timeout_seconds=self.timeout_seconds)
            return self._client

    def embed(self, texts: Sequence[str], *, kind: EmbeddingKind) -> list[list[float]]:
        check_texts(texts)
        if not texts:
            return []
        from google.genai import types

        client = self._get_client()
        config = types.EmbedContentConfig(task_type=_TASK_TYPES[kind], output_dimensionality=self.dimensions)
        vectors: list[list[float]] = []
        for batch in batches(texts, self.batch_size):
            with _translated():
                response = client.models.embed_content(model=self.model, contents=list(batch), config=config)
            vectors.extend(self._vectors(response, len(batch)))
        return vectors

    def _vectors(self, response: Any, expected: int) -> list[list[float]]:
        embeddings = response.embeddings or []
        if len(embeddings) != expected:
            raise ModelError(f"Gemini returned {len(embeddings)} embeddings for {expected} texts")
        vectors = []
        for e in embeddings:
            values = e.values or []
            if len(values) != self.dimensions:
                raise ModelError(f"{self.name} returned a vector of {len(values)} values, not the "
                                 f"{self.dimensions} asked for (outputDimensionality)")
            vectors.append(unit(values))
        return vectors


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """The service's errors as the port's: quota, overload and timeouts ``TransientError``, the rest
    ``ModelError`` (the service's own message kept: it names the field it refused)."""
    from google.genai import errors

    try:
        yield
    except errors.APIError as e:
        if e.code in _RETRYABLE or e.code >= 500:
            raise model_unavailable(e.code, f"Gemini embeddings answered {e.code}: {e.message}") from e
        raise ModelError(f"Gemini refused the embedding request ({e.code}): {e.message}") from e
    except OSError as e:  # connection errors and timeouts of the HTTP client
        raise model_unavailable(0, f"Gemini embeddings could not be reached: {e}") from e
    except Exception as e:
        if type(e).__module__.startswith(("httpx", "httpcore")):
            raise model_unavailable(0, f"Gemini embeddings could not be reached: {e}") from e
        raise
