"""The embeddings port's rules, and the local embedder: all-MiniLM-L6-v2 (int8) on ONNX Runtime, offline.

The Gemini adapter is tested through HTTP against the Gemini emulator (tests/emulators/test_gemini_embeddings.py).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from agex.adapters import local_embeddings
from agex.adapters.local_embeddings import MAX_TOKENS, LocalEmbedder
from agex.core.errors import ConfigurationError, ModelError
from agex.ports.embeddings import Embedder, batches, check_texts, unit

REPO = Path(__file__).resolve().parents[2]


def cos(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def local() -> LocalEmbedder:
    return LocalEmbedder()


# --- the port's rules -------------------------------------------------------------------------------------


def test_empty_and_blank_texts_are_refused_before_any_work() -> None:
    with pytest.raises(ModelError, match="text 1 of 3 is empty"):
        check_texts(["a", "", "b"])
    with pytest.raises(ModelError, match="text 0 of 1 is empty"):
        check_texts([" \n\t"])
    with pytest.raises(TypeError, match="not one str"):
        check_texts("a text")
    with pytest.raises(TypeError, match="text 0 is a bytes"):
        check_texts([b"bytes"])  # type: ignore[list-item]
    check_texts([])


def test_unit_scales_to_norm_one_and_refuses_a_zero_vector() -> None:
    assert unit([3.0, 4.0]) == [0.6, 0.8]
    with pytest.raises(ModelError, match="norm 0"):
        unit([0.0, 0.0])
    with pytest.raises(ModelError, match="norm nan"):
        unit([math.nan, 1.0])


def test_batches_are_consecutive_slices() -> None:
    assert [list(b) for b in batches(["a", "b", "c", "d", "e"], 2)] == [["a", "b"], ["c", "d"], ["e"]]
    assert list(batches([], 3)) == []
    with pytest.raises(ValueError):
        list(batches(["a"], 0))


# --- the local embedder ------------------------------------------------------------------------------------


def test_name_dimensions_and_unit_vectors(local: LocalEmbedder) -> None:
    assert isinstance(local, Embedder)
    assert (local.name, local.dimensions) == ("local:all-MiniLM-L6-v2-int8", 384)
    vectors = local.embed(["Ship it to my office.", "x", "Ünïcödé façade — 東京 🚀"], kind="document")
    assert [len(v) for v in vectors] == [384, 384, 384]
    for v in vectors:
        assert abs(math.sqrt(math.fsum(x * x for x in v)) - 1.0) < 1e-5
    assert local.embed([], kind="query") == []


def test_it_is_the_published_model(local: LocalEmbedder) -> None:
    """The similarities sentence-transformers publishes for all-MiniLM-L6-v2 (its README: 0.6660, 0.1046,
    0.1411), within what int8 weights change: a hash or a bag of words would not come close."""
    a, b, c = local.embed(["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."],
                          kind="document")
    assert cos(a, b) == pytest.approx(0.6660, abs=0.01)
    assert cos(a, c) == pytest.approx(0.1046, abs=0.01)
    assert cos(b, c) == pytest.approx(0.1411, abs=0.01)


def test_paraphrases_are_closer_than_unrelated_texts(local: LocalEmbedder) -> None:
    pairs = [
        ("The customer wants to be contacted by email, never by phone.",
         "How does this user prefer we reach them?",
         "The parcel was left with the neighbour at number 12."),
        ("Her order of two standing desks arrived with a cracked leg.",
         "Which purchase came damaged?",
         "He prefers aisle seats on long flights."),
        ("Deliveries go to 14 Harbour Street, Leith, Edinburgh.",
         "Where should we ship packages for him?",
         "The premium plan renews every March."),
    ]
    for memory, paraphrase, unrelated in pairs:
        m, p, u = local.embed([memory, paraphrase, unrelated], kind="document")
        assert cos(m, p) > cos(m, u) + 0.1, (memory, cos(m, p), cos(m, u))


def test_deterministic_and_independent_of_batching(local: LocalEmbedder) -> None:
    texts = [f"Note {i}: " + "the customer asked about invoice numbers and delivery slots " * (i % 7 + 1)
             for i in range(70)]
    whole = local.embed(texts, kind="document")
    assert local.embed(texts, kind="document") == whole
    small = LocalEmbedder(batch_size=8).embed(texts, kind="document")
    one_by_one = [local.embed([t], kind="document")[0] for t in texts[:10]]
    for a, b in zip(whole, small, strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-5
    for a, b in zip(whole, one_by_one, strict=False):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-5
    # order kept: each vector is its own text's, though batches are formed by length
    assert cos(whole[3], local.embed([texts[3]], kind="query")[0]) > 0.9999


def test_a_batch_holds_at_most_its_size_and_its_token_budget() -> None:
    lengths = [256] * 9 + [12] * 70 + [100, 3, 40]
    batches_ = local_embeddings._batches([[1] * n for n in lengths], 32)
    assert sorted(i for b in batches_ for i in b) == list(range(len(lengths)))
    for b in batches_:
        assert len(b) <= 32 and len(b) * max(lengths[i] for i in b) <= local_embeddings.BATCH_TOKENS
    assert max(len(b) for b in batches_) == 32  # short texts still go 32 at a time


def test_the_model_is_symmetric(local: LocalEmbedder) -> None:
    text = ["Which address do we ship to?"]
    assert local.embed(text, kind="query") == local.embed(text, kind="document")


def test_empty_text_is_refused(local: LocalEmbedder) -> None:
    with pytest.raises(ModelError, match="empty"):
        local.embed(["fine", "   "], kind="document")


def test_a_long_text_is_read_up_to_max_tokens(local: LocalEmbedder) -> None:
    head = " ".join(f"word{i}" for i in range(400))  # far more than MAX_TOKENS word pieces
    tokens = len(local_embeddings.loaded().tokenizer.encode(head).ids)
    assert tokens == MAX_TOKENS
    long, longer, tail = local.embed([head, head + " and a tail about refunds for broken kettles",
                                      "refunds for broken kettles"], kind="document")
    assert max(abs(x - y) for x, y in zip(long, longer, strict=True)) < 1e-5
    assert cos(longer, tail) < 0.5


def test_the_batch_size_is_checked() -> None:
    with pytest.raises(ConfigurationError):
        LocalEmbedder(batch_size=0)


def test_the_model_is_loaded_once_per_process(local: LocalEmbedder) -> None:
    local.embed(["warm"], kind="query")
    first = local_embeddings.loaded()
    LocalEmbedder(batch_size=4).embed(["another instance"], kind="query")
    assert local_embeddings.loaded() is first


def test_the_model_file_is_the_pinned_one() -> None:
    import hashlib

    assert hashlib.sha256(local_embeddings.model_file().read_bytes()).hexdigest() == local_embeddings.MODEL_SHA256


def test_nothing_heavy_is_imported_until_the_first_embed() -> None:
    probe = (
        "import json, sys\n"
        "from agex.adapters.local_embeddings import LocalEmbedder\n"
        "e = LocalEmbedder()\n"
        "heavy = ('onnxruntime', 'tokenizers', 'numpy')\n"
        "before = sorted(m for m in heavy if m in sys.modules)\n"
        "e.embed(['hello'], kind='query')\n"
        "print(json.dumps([before, sorted(m for m in heavy if m in sys.modules)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert before == []
    assert after == ["numpy", "onnxruntime", "tokenizers"]
