"""The Gemini embeddings adapter over HTTP, against the Gemini emulator's ``embedContent`` and
``batchEmbedContents`` (which answer with the local model's vectors); and those endpoints' wire format, as
the real API takes and answers it.

One emulator process serves the module; each test starts from a reset emulator (faults, request log).
"""

from __future__ import annotations

import math
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from agex.adapters.gcp.gemini_embeddings import GeminiEmbedder
from agex.adapters.local_embeddings import LocalEmbedder
from agex.core.errors import ConfigurationError, ModelError, ModelUnavailable, TransientError
from tests.emulator_process import python_emulator

MODEL = "gemini-embedding-001"
KEY = {"x-goog-api-key": "local-key"}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with python_emulator("agex.dev.emulators.gemini", "--host", "127.0.0.1", "--port", "0", "--keep-bodies") as ready:
        m = re.search(r"http=(127\.0\.0\.1:\d+)", ready)
        assert m, f"unexpected READY line: {ready!r}"
        yield f"http://{m.group(1)}"


@pytest.fixture(autouse=True)
def _reset(base_url: str) -> None:
    requests.post(f"{base_url}/_emulator/reset", timeout=5).raise_for_status()


def embedder(base_url: str, **kw: Any) -> GeminiEmbedder:
    return GeminiEmbedder(MODEL, api_key="local-key", base_url=base_url, **kw)


def logged(base_url: str) -> list[dict[str, Any]]:
    resp = requests.get(f"{base_url}/_emulator/requests", timeout=5)
    resp.raise_for_status()
    return [e for e in resp.json()["requests"] if e.get("method")]


def inject(base_url: str, **fault: Any) -> None:
    requests.post(f"{base_url}/_emulator/faults", json=fault, timeout=5).raise_for_status()


def post(base_url: str, rpc: str, body: Any, model: str = MODEL, headers: dict[str, str] | None = None,
         version: str = "v1beta") -> requests.Response:
    return requests.post(f"{base_url}/{version}/models/{model}:{rpc}", json=body,
                         headers=KEY if headers is None else headers, timeout=30)


def cos(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


def norm(v: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in v))


# --- the adapter ---------------------------------------------------------------------------------------------


def test_vectors_are_the_local_models_in_the_size_asked_for(base_url: str) -> None:
    texts = ["The customer prefers email.", "How should we contact her?", "The kettle arrived broken."]
    gemini = embedder(base_url)
    assert (gemini.name, gemini.dimensions) == ("gemini:gemini-embedding-001", 768)
    vectors = gemini.embed(texts, kind="document")
    local = LocalEmbedder().embed(texts, kind="document")
    for g, v in zip(vectors, local, strict=True):
        assert len(g) == 768 and abs(norm(g) - 1) < 1e-9
        assert cos(g[:384], v) > 0.99999 and not any(g[384:])
    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])


def test_the_task_type_and_the_dimensionality_go_on_the_wire(base_url: str) -> None:
    embedder(base_url).embed(["a memory"], kind="document")
    embedder(base_url).embed(["a question"], kind="query")
    first, second = logged(base_url)
    assert first["method"] == second["method"] == "batchEmbedContents"
    assert (first["task_types"], second["task_types"]) == (["RETRIEVAL_DOCUMENT"], ["RETRIEVAL_QUERY"])
    assert first["output_dimensionality"] == [768]
    assert '"taskType": "RETRIEVAL_DOCUMENT"' in first["body"] and '"model": "models/gemini-embedding-001"' in first["body"]


def test_shortened_vectors_are_normalised_by_the_adapter(base_url: str) -> None:
    text = "Deliveries go to 14 Harbour Street."
    raw = post(base_url, "embedContent", {"content": {"parts": [{"text": text}]}, "outputDimensionality": 64})
    assert raw.status_code == 200
    values = raw.json()["embedding"]["values"]
    assert len(values) == 64 and norm(values) < 0.99  # the service leaves a truncated vector as it is
    (vector,) = embedder(base_url, dimensions=64).embed([text], kind="document")
    assert len(vector) == 64 and abs(norm(vector) - 1) < 1e-9
    assert cos(vector, values) == pytest.approx(norm(values))


def test_a_large_batch_is_sent_in_batches_of_at_most_100(base_url: str) -> None:
    texts = [f"memory number {i} about order A-{i}" for i in range(230)]
    vectors = embedder(base_url).embed(texts, kind="document")
    assert len(vectors) == 230
    assert [e["texts"] for e in logged(base_url)] == [100, 100, 30]
    assert cos(vectors[229], embedder(base_url).embed([texts[229]], kind="document")[0]) > 0.99999
    small = embedder(base_url, batch_size=7)
    small.embed(texts[:15], kind="query")
    assert [e["texts"] for e in logged(base_url)][-3:] == [7, 7, 1]


def test_an_empty_text_is_refused_without_a_request(base_url: str) -> None:
    with pytest.raises(ModelError, match="empty"):
        embedder(base_url).embed(["fine", ""], kind="document")
    assert logged(base_url) == []
    assert embedder(base_url).embed([], kind="document") == []


@pytest.mark.parametrize(("status", "reason"), [(429, "quota"), (500, "server"), (503, "server"), (504, "timeout")])
def test_quota_and_server_errors_are_transient(base_url: str, status: int, reason: str) -> None:
    inject(base_url, status=status, method="batchEmbedContents")
    with pytest.raises(TransientError, match=f"answered {status}") as e:
        embedder(base_url).embed(["a memory"], kind="document")
    assert isinstance(e.value, ModelUnavailable) and e.value.reason == reason
    assert embedder(base_url).embed(["a memory"], kind="document")  # the fault was used up: it recovers


def test_a_refused_request_is_a_model_error(base_url: str) -> None:
    inject(base_url, status=400, method="batchEmbedContents")
    with pytest.raises(ModelError, match=r"refused the embedding request \(400\)"):
        embedder(base_url).embed(["a memory"], kind="document")
    # a size the model does not have: the service's own refusal, with its message
    with pytest.raises(ModelError, match="output_dimensionality: must be between 1 and 3072"):
        embedder(base_url, dimensions=4096).embed(["a memory"], kind="document")
    with pytest.raises(ModelError, match="not supported for embedContent"):
        GeminiEmbedder("gemini-2.5-flash", api_key="k", base_url=base_url).embed(["a memory"], kind="query")


def test_an_unreachable_service_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    with pytest.raises(TransientError, match="could not be reached"):
        GeminiEmbedder(api_key="k", base_url=f"http://127.0.0.1:{port}", timeout_seconds=5).embed(["x"], kind="query")


def test_a_slow_answer_times_out_as_transient(base_url: str) -> None:
    inject(base_url, delay_ms=3000, method="batchEmbedContents")
    with pytest.raises(TransientError):
        embedder(base_url, timeout_seconds=1).embed(["slow"], kind="query")


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="AGEX_GEMINI_API_KEY"):
        GeminiEmbedder()
    with pytest.raises(ConfigurationError, match="batch"):
        GeminiEmbedder(api_key="k", batch_size=101)
    with pytest.raises(ConfigurationError, match="dimensions"):
        GeminiEmbedder(api_key="k", dimensions=0)
    assert GeminiEmbedder("models/text-embedding-005", api_key="k").name == "gemini:text-embedding-005"


# --- the emulator's wire format --------------------------------------------------------------------------------


def test_embed_content_answers_one_embedding(base_url: str) -> None:
    body = {"model": f"models/{MODEL}", "content": {"role": "user", "parts": [{"text": "hello"}, {"text": "world"}]},
            "task_type": "SEMANTIC_SIMILARITY", "title": "ignored but allowed"}
    resp = post(base_url, "embedContent", body, version="v1")
    assert resp.status_code == 200, resp.text
    values = resp.json()["embedding"]["values"]
    assert len(values) == 3072 and abs(norm(values) - 1) < 1e-6  # full size: normalised, like the service's
    assert cos(values[:384], LocalEmbedder().embed(["hello world"], kind="document")[0]) > 0.99999
    (entry,) = logged(base_url)
    assert (entry["method"], entry["texts"], entry["task_types"]) == ("embedContent", 1, ["SEMANTIC_SIMILARITY"])
    text_model = post(base_url, "embedContent", {"content": {"parts": [{"text": "hi"}]}}, model="text-embedding-004")
    assert len(text_model.json()["embedding"]["values"]) == 768


def test_batch_embed_contents_answers_in_order(base_url: str) -> None:
    texts = ["first text", "second text about refunds", "third"]
    body = {"requests": [{"model": f"models/{MODEL}", "content": {"parts": [{"text": t}]}, "taskType": "RETRIEVAL_QUERY",
                          "outputDimensionality": 384} for t in texts]}
    resp = post(base_url, "batchEmbedContents", body)
    assert resp.status_code == 200, resp.text
    got = [e["values"] for e in resp.json()["embeddings"]]
    for g, v in zip(got, LocalEmbedder().embed(texts, kind="query"), strict=True):
        assert cos(g, v) > 0.99999


@pytest.mark.parametrize(("rpc", "body", "needle"), [
    ("embedContent", {}, "content is not specified"),
    ("embedContent", {"content": {"parts": []}}, "parts must not be empty"),
    ("embedContent", {"content": {"parts": [{"text": "  "}]}}, "invalid argument"),
    ("embedContent", {"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": ""}}]}}, "only text"),
    ("embedContent", {"content": {"parts": [{"text": "x"}]}, "taskType": "RETRIEVAL"}, "TaskType), \"RETRIEVAL\""),
    ("embedContent", {"content": {"parts": [{"text": "x"}]}, "outputDimensionality": 0}, "between 1 and 3072"),
    ("embedContent", {"content": {"parts": [{"text": "x"}]}, "outputDimensionality": "64"}, "TYPE_INT32"),
    ("embedContent", {"content": {"parts": [{"text": "x"}]}, "task": "RETRIEVAL_QUERY"}, "Unknown name \"task\""),
    ("embedContent", {"content": {"text": "x"}}, "Unknown name \"text\""),
    ("embedContent", {"model": "models/other-embedding", "content": {"parts": [{"text": "x"}]}}, "must be the model"),
    ("embedContent", [], "Expected an EmbedContentRequest"),
    ("batchEmbedContents", {"requests": []}, "requests is not specified"),
    ("batchEmbedContents", {"requests": [{"content": {"parts": [{"text": "x"}]}}] * 101}, "at most 100 requests"),
    ("batchEmbedContents", {"requests": [{"content": {"parts": [{"text": "x"}]}}, {}]}, "requests[1].content"),
    ("batchEmbedContents", {"content": {"parts": [{"text": "x"}]}}, "Unknown name \"content\""),
])
def test_what_the_api_refuses(base_url: str, rpc: str, body: Any, needle: str) -> None:
    resp = post(base_url, rpc, body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and needle in error["message"], error["message"]


def test_keys_models_and_methods(base_url: str) -> None:
    body = {"content": {"parts": [{"text": "x"}]}}
    assert post(base_url, "embedContent", body, headers={}).status_code == 403
    missing = post(base_url, "embedContent", body, model="gemini-2.5-flash")
    assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"
    get = requests.get(f"{base_url}/v1beta/models/{MODEL}:embedContent", headers=KEY, timeout=5)
    assert get.status_code == 405
    empty = requests.post(f"{base_url}/v1beta/models/{MODEL}:batchEmbedContents", headers=KEY, data=b"", timeout=5)
    assert empty.status_code == 400 and "body is empty" in empty.json()["error"]["message"]
    statuses = [e["status"] for e in logged(base_url)]
    assert statuses == [403, 404, 400]  # the GET never reached the method
