"""What a request must look like beyond its JSON schema (``agex.app.http.rules``): UTF-8 JSON bodies, text
without control characters, one well-formed ``Idempotency-Key``, page tokens the API returned. For each rule,
the API and the OpenAPI document agree: what the document's schema refuses the API refuses with a 400 (and
writes nothing), and what it allows the API accepts."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from werkzeug.test import TestResponse

from agex.app.http import openapi
from agex.app.http.rules import parse_json
from agex.testing.harness import InMemoryRuntime
from tests.api.conftest import LEAD_TOKEN, ApiClient, OpenApiChecker, seed_approval
from tests.api.test_public_api import error_of

RUNS = "/v1/agents/support/runs"
JSON = "application/json"


def _parameter(operation: str, name: str) -> dict[str, Any]:
    doc = openapi.document()
    for item in doc["paths"].values():
        for op in item.values():
            if op.get("operationId") == operation:
                return next(p for p in op.get("parameters", []) if p["name"] == name)
    raise AssertionError(f"no operation {operation}")


def _param_ok(checker: OpenApiChecker, operation: str, name: str, value: str) -> bool:
    doc = openapi.document()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if op.get("operationId") == operation:
                index = next(i for i, p in enumerate(op["parameters"]) if p["name"] == name)
                pointer = f"/paths/{path.replace('~', '~0').replace('/', '~1')}/{method}/parameters/{index}/schema"
                return bool(checker.validator(pointer).is_valid(value))
    raise AssertionError(f"no operation {operation}")


# --- encodings ------------------------------------------------------------------------------------------

BODY = {"input": "Refund order A-1042, please."}
TEXT = json.dumps(BODY)


@pytest.mark.parametrize("raw", [
    pytest.param(TEXT.encode("utf-16"), id="utf-16-with-bom"),
    pytest.param(TEXT.encode("utf-16-le"), id="utf-16-le"),
    pytest.param(TEXT.encode("utf-16-be"), id="utf-16-be"),
    pytest.param(TEXT.encode("utf-32"), id="utf-32-with-bom"),
    pytest.param(TEXT.encode("utf-32-le"), id="utf-32-le"),
    pytest.param(b"\xef\xbb\xbf" + TEXT.encode(), id="utf-8-with-bom"),
    pytest.param(TEXT.encode("latin-1").replace(b"please", b"\xe9t\xe9"), id="latin-1"),
    pytest.param(b'{"input": "\xed\xa0\x80"}', id="utf-8-encoded-surrogate"),
])
def test_a_body_that_is_not_utf8_json_is_refused(client: ApiClient, unchanged: Callable[[], Any],
                                                  raw: bytes) -> None:
    with unchanged():
        response = client.post(RUNS, data=raw, content_type=JSON)
    status, code, message = error_of(response)
    assert (status, code) == (400, "invalid_json")
    assert "UTF-8" in message or "not valid JSON" in message


def test_utf8_without_escapes_is_accepted(client: ApiClient) -> None:
    response = client.post(RUNS, data=json.dumps({"input": "Rückerstattung für A-1042 ✓ 🥾"}, ensure_ascii=False)
                           .encode(), content_type=JSON)
    assert response.status_code == 202
    assert response.get_json()["input"] == "Rückerstattung für A-1042 ✓ 🥾"


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-16", "application/json; charset=latin-1"])
def test_a_charset_other_than_utf8_is_an_unsupported_media_type(client: ApiClient, content_type: str) -> None:
    response = client.post(RUNS, data=TEXT.encode(), content_type=content_type)
    assert error_of(response)[:2] == (415, "unsupported_media_type")


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/json; charset=UTF8"])
def test_a_utf8_charset_is_fine(client: ApiClient, content_type: str) -> None:
    assert client.post(RUNS, data=TEXT.encode(), content_type=content_type).status_code == 202


@pytest.mark.parametrize(("raw", "fragment"), [
    pytest.param('{"input": "a", "input": "b"}', "duplicate key 'input'", id="duplicate-key"),
    pytest.param('{"input": "a", "metadata": {"k": "1", "k": "2"}}', "duplicate key 'k'", id="duplicate-nested-key"),
    pytest.param('{"input": "a", "metadata": {"n": NaN}}', "NaN", id="nan"),
    pytest.param('{"input": "a", "metadata": {"n": -Infinity}}', "Infinity", id="infinity"),
    pytest.param('{"input": "a", "metadata": {"n": 1e400}}', "out of range", id="number-out-of-range"),
    pytest.param('{"input": "a", "metadata": {"n": ' + "9" * 5000 + "}}", "not valid JSON", id="5000-digits"),
    pytest.param("[" * 30_000 + "]" * 30_000, "nested too deeply", id="deep-nesting"),
])
def test_json_that_python_would_take_but_rfc_8259_does_not_is_refused(
        client: ApiClient, unchanged: Callable[[], Any], raw: str, fragment: str) -> None:
    with unchanged():
        response = client.post(RUNS, data=raw.encode(), content_type=JSON)
    status, code, message = error_of(response)
    assert (status, code) == (400, "invalid_json") and fragment in message


def test_parse_json_returns_the_value() -> None:
    assert parse_json(b'{"a": [1, 2.5, "\\u00e9", null, true]}') == {"a": [1, 2.5, "é", None, True]}


# --- control characters -----------------------------------------------------------------------------------

CONTROL = ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x85", "\x9b"]


@pytest.mark.parametrize("char", CONTROL, ids=[f"U+{ord(c):04X}" for c in CONTROL])
@pytest.mark.parametrize("where", ["input", "metadata-value", "metadata-key"])
def test_control_characters_in_text_are_refused(client: ApiClient, checker: OpenApiChecker,
                                                unchanged: Callable[[], Any], char: str, where: str) -> None:
    body: dict[str, Any] = {
        "input": {"input": f"Refund{char}order A-1042"},
        "metadata-value": {"input": "hi", "metadata": {"ticket": f"T{char}1"}},
        "metadata-key": {"input": "hi", "metadata": {f"tic{char}ket": "T-1"}},
    }[where]
    assert not checker.component("CreateRunRequest").is_valid(body)
    with unchanged():
        response = client.post(RUNS, json=body)
    status, code, message = error_of(response)
    assert (status, code) == (400, "invalid_argument")
    assert f"U+{ord(char):04X}" in message


@pytest.mark.parametrize("char", ["\t", "\n", "\r"], ids=["tab", "lf", "cr"])
def test_tab_line_feed_and_carriage_return_are_text(client: ApiClient, checker: OpenApiChecker, char: str) -> None:
    body = {"input": f"Refund{char}order A-1042", "metadata": {"note": f"a{char}b"}}
    assert checker.component("CreateRunRequest").is_valid(body)
    assert client.post(RUNS, json=body).status_code == 202


@pytest.mark.parametrize("char", ["\t", "\n", "\r"], ids=["tab", "lf", "cr"])
def test_a_metadata_key_has_no_control_characters_at_all(client: ApiClient, checker: OpenApiChecker,
                                                        char: str) -> None:
    body = {"input": "hi", "metadata": {f"a{char}": "b"}}
    assert not checker.component("CreateRunRequest").is_valid(body)
    assert error_of(client.post(RUNS, json=body))[:2] == (400, "invalid_argument")


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "a\\ud83e"], ids=["high", "low", "unpaired-at-end"])
def test_a_lone_surrogate_is_refused(client: ApiClient, unchanged: Callable[[], Any], escape: str) -> None:
    with unchanged():
        response = client.post(RUNS, data=f'{{"input": "{escape}"}}', content_type=JSON)
    status, code, message = error_of(response)
    assert (status, code) == (400, "invalid_argument") and "surrogate" in message


def test_a_surrogate_pair_is_a_character(client: ApiClient) -> None:
    response = client.post(RUNS, data='{"input": "boots \\ud83e\\udd7e"}', content_type=JSON)
    assert response.status_code == 202 and response.get_json()["input"] == "boots 🥾"


@pytest.mark.parametrize("comment", ["no\x00pe", "ok\x1b[31m"], ids=["nul", "escape"])
def test_a_decision_comment_has_no_control_characters(client: ApiClient, rt: InMemoryRuntime,
                                                      checker: OpenApiChecker, unchanged: Callable[[], Any],
                                                      comment: str) -> None:
    approval = seed_approval(rt)
    body = {"decision": "reject", "comment": comment}
    assert not checker.component("DecideRequest").is_valid(body)
    with unchanged():
        response = client.post(f"/v1/approvals/{approval.approval_id}", json=body, token=LEAD_TOKEN)
    assert error_of(response)[:2] == (400, "invalid_argument")


# --- Idempotency-Key -----------------------------------------------------------------------------------------

KEYS = [
    pytest.param("order-A-1042-refund", True, id="plain"),
    pytest.param("a", True, id="one-character"),
    pytest.param("k" * 255, True, id="255-characters"),
    pytest.param("refund for A-1042 #2", True, id="inner-spaces"),
    pytest.param("!\"#$%&'()*+-./:;<=>?@[\\]^_`{|}~", True, id="punctuation"),
    pytest.param("", False, id="empty"),
    pytest.param("k" * 256, False, id="256-characters"),
    pytest.param("a,b", False, id="comma"),
    pytest.param("a\tb", False, id="tab"),
    pytest.param("a\x7fb", False, id="del"),
    pytest.param("clé", False, id="not-ascii"),
    pytest.param(" a", False, id="leading-space"),
    pytest.param("a ", False, id="trailing-space"),
]


@pytest.mark.parametrize(("key", "valid"), KEYS)
def test_idempotency_key_rules_are_the_documents(client: ApiClient, checker: OpenApiChecker,
                                                 key: str, valid: bool) -> None:
    assert _param_ok(checker, "start_run", "Idempotency-Key", key) == valid
    assert _param_ok(checker, "decide_approval", "Idempotency-Key", key) == valid
    response = client.post(RUNS, json=BODY, headers={"Idempotency-Key": key})
    if valid:
        assert response.status_code == 202
    else:
        status, code, message = error_of(response)
        assert (status, code) == (400, "invalid_argument") and "Idempotency-Key" in message


def _twice(client: ApiClient, path: str, body: dict[str, Any], token: str, keys: tuple[str, str]) -> TestResponse:
    """A request with the header sent twice (``ApiClient`` takes one value per header)."""
    headers = [("Authorization", f"Bearer {token}"), *(("Idempotency-Key", k) for k in keys)]
    response = client._client.open(path, method="POST", json=body, headers=headers)
    client.checker.check("POST", path, response.status_code, response.headers.get("Content-Type"),
                         response.get_data())
    return response


@pytest.mark.parametrize("keys", [("a", "b"), ("a", "a"), ("", "a")], ids=["different", "same", "one-empty"])
def test_a_key_sent_twice_is_refused_not_joined(client: ApiClient, unchanged: Callable[[], Any],
                                                keys: tuple[str, str]) -> None:
    # a server hands a header sent twice to the application as one value, joined with a comma
    with unchanged():
        response = _twice(client, RUNS, BODY, "dev-token", keys)
    status, code, message = error_of(response)
    assert (status, code) == (400, "invalid_argument") and "once" in message


def test_a_key_sent_twice_is_refused_on_a_decision(client: ApiClient, rt: InMemoryRuntime,
                                                   unchanged: Callable[[], Any]) -> None:
    approval = seed_approval(rt)
    with unchanged():
        response = _twice(client, f"/v1/approvals/{approval.approval_id}", {"decision": "approve"}, LEAD_TOKEN,
                          ("a", "a"))
    assert error_of(response)[:2] == (400, "invalid_argument")


def test_the_document_states_the_key_rules() -> None:
    schema = _parameter("start_run", "Idempotency-Key")["schema"]
    assert schema["minLength"] == 1 and schema["maxLength"] == 255 and "pattern" in schema
    assert _parameter("decide_approval", "Idempotency-Key")["schema"] == schema


# --- page tokens ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("token", "valid"), [
    ("0", True), ("7", True), ("007", True), ("9" * 18, True),
    ("", False), ("+1", False), ("-1", False), (" 1", False), ("1e3", False), ("٣", False), ("9" * 19, False),
])
def test_an_events_page_token_is_what_the_document_says(client: ApiClient, checker: OpenApiChecker,
                                                         token: str, valid: bool) -> None:
    run = client.post(RUNS, json=BODY).get_json()["run_id"]
    assert _param_ok(checker, "list_events", "page_token", token) == valid
    response = client.get(f"/v1/runs/{run}/events", query_string={"page_token": token})
    assert response.status_code == (200 if valid else 400), response.get_data(as_text=True)


@pytest.mark.parametrize("size", ["+5", " 5", "٣", "5.0", ""])
def test_a_page_size_is_a_plain_integer(client: ApiClient, size: str) -> None:
    assert error_of(client.get("/v1/approvals", query_string={"page_size": size}))[:2] == (400, "invalid_argument")


def test_an_empty_approvals_page_token_is_refused_as_the_document_says(client: ApiClient,
                                                                       checker: OpenApiChecker) -> None:
    assert not _param_ok(checker, "list_approvals", "page_token", "")
    assert error_of(client.get("/v1/approvals?page_token="))[:2] == (400, "invalid_argument")


def test_an_approvals_page_token_the_api_returned_is_in_the_documented_alphabet(
        client: ApiClient, rt: InMemoryRuntime, checker: OpenApiChecker) -> None:
    for _ in range(3):
        seed_approval(rt)
    token = client.get("/v1/approvals?page_size=1").get_json()["next_page_token"]
    assert token and _param_ok(checker, "list_approvals", "page_token", token)
    assert client.get("/v1/approvals", query_string={"page_size": 1, "page_token": token}).status_code == 200


# --- decisions: what the schema can say, and what it cannot ----------------------------------------------------


@pytest.mark.parametrize(("body", "valid"), [
    ({"decision": "approve"}, True),
    ({"decision": "reject", "comment": "over the limit"}, True),
    ({"decision": "reject"}, False),
    ({"decision": "reject", "comment": "  \n"}, False),
    ({"decision": "reject", "comment": "no", "arguments": {"order_id": "A-1042"}}, False),
    ({"decision": "done", "arguments": {}}, False),
])
def test_the_decision_rules_that_do_not_depend_on_the_approval_are_in_the_schema(
        client: ApiClient, rt: InMemoryRuntime, checker: OpenApiChecker, body: dict[str, Any], valid: bool) -> None:
    assert checker.component("DecideRequest").is_valid(body) == valid
    approval = seed_approval(rt)
    response = client.post(f"/v1/approvals/{approval.approval_id}", json=body, token=LEAD_TOKEN)
    assert response.status_code == (202 if valid else 400), response.get_data(as_text=True)


def test_a_decision_for_the_other_kind_is_a_documented_400(client: ApiClient, rt: InMemoryRuntime,
                                                           checker: OpenApiChecker) -> None:
    body = {"decision": "done"}
    assert checker.component("DecideRequest").is_valid(body)  # the schema cannot know the approval's kind
    approval = seed_approval(rt)
    status, code, message = error_of(client.post(f"/v1/approvals/{approval.approval_id}", json=body,
                                                 token=LEAD_TOKEN))
    assert (status, code) == (400, "invalid_argument") and "approve or reject" in message
    operation = openapi.document()["paths"]["/v1/approvals/{approval_id}"]["post"]
    assert "kind" in operation["description"] and "kind" in operation["responses"]["400"]["description"]


# --- links -------------------------------------------------------------------------------------------------------


def test_every_link_names_an_operation_and_its_parameters() -> None:
    doc = openapi.document()
    operations = {op["operationId"]: op for item in doc["paths"].values() for op in item.values()}
    links = [(op["operationId"], name, link) for op in operations.values()
             for response in op["responses"].values() for name, link in response.get("links", {}).items()]
    assert len(links) >= 10
    for source, name, link in links:
        target = operations[link["operationId"]]
        declared = {p["name"] for p in target.get("parameters", [])}
        assert set(link["parameters"]) <= declared, (source, name)
        for expression in link["parameters"].values():
            assert re.fullmatch(r"\$response\.body#(/[a-z_0-9]+)+", expression), (source, name, expression)
