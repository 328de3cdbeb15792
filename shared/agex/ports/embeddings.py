"""Embeddings port: texts in, unit vectors out, for the long-term memory's stores to compare by dot product.

An embedder's ``name`` and ``dimensions`` say which vector space its vectors live in: vectors are comparable
only between embedders of the same name and dimensions, so a store keeps both beside what it indexed and
refuses to mix spaces. ``kind`` says which side of a search a text is on: a ``"document"`` is what is stored
(a memory), a ``"query"`` what looks for it; models trained for asymmetric retrieval embed them differently,
symmetric ones ignore it.

The rules below are every adapter's, so that a text one refuses the others refuse too.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator, Sequence
from typing import Literal

from agex.core.errors import ModelError

EmbeddingKind = Literal["document", "query"]


class Embedder(abc.ABC):
    """Raises ``TransientError`` for failures worth retrying (quota, unavailable, timeouts) and ``ModelError``
    for input the model will never accept (an empty text, a request the service refuses). Batching is the
    adapter's: ``embed`` takes any number of texts and returns one vector per text, in order."""

    name: str
    """The vector space: the provider and the exact model (``local:all-MiniLM-L6-v2-int8``,
    ``gemini:gemini-embedding-001``)."""
    dimensions: int
    """Length of every vector ``embed`` returns."""

    @abc.abstractmethod
    def embed(self, texts: Sequence[str], *, kind: EmbeddingKind) -> list[list[float]]:
        """One unit vector (Euclidean norm 1) of ``dimensions`` floats per text, in the order given."""


def check_texts(texts: Sequence[str]) -> None:
    """Refuse, before any work, a batch with a text that has nothing to embed (empty or only whitespace): its
    vector would say nothing about it, yet land near unrelated texts in a search. A bare ``str`` is refused
    too: it is a sequence of characters, not of texts."""
    if isinstance(texts, str):
        raise TypeError("embed takes a sequence of texts, not one str: embed([text], kind=...)")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is a {type(text).__name__}, not a str")
        if not text.strip():
            raise ModelError(f"text {i} of {len(texts)} is empty: there is nothing to embed")


def unit(values: Sequence[float]) -> list[float]:
    """``values`` scaled to norm 1. A provider that returns a shortened vector (a smaller output
    dimensionality) leaves it unnormalised; a zero vector is a broken answer, not a direction."""
    norm = math.sqrt(math.fsum(v * v for v in values))
    if not norm or not math.isfinite(norm):
        raise ModelError(f"the model returned a vector of norm {norm}: it has no direction to compare")
    return [v / norm for v in values]


def batches(texts: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    """``texts`` in consecutive slices of at most ``size``."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, not {size}")
    for start in range(0, len(texts), size):
        yield texts[start:start + size]
