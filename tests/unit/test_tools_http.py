"""HTTP tools from an OpenAPI operation, against a real local HTTP server: arguments, auth from the
call's secrets, and the mapping of statuses onto RetryLater, in-step retries and tool errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from agex.core.errors import ConfigurationError
from agex.tools import NO_RETRY, ToolContext
from agex.tools.http import (
    BearerSecret,
    HeaderSecret,
    HttpTool,
    QuerySecret,
    _retry_after_s,
    http_tool,
)

TOKEN = "tok-s3cret-value"

SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Orders", "version": "1"},
    "servers": [{"url": "http://placeholder.invalid/v1"}],
    "paths": {
        "/orders/{order_id}": {
            "parameters": [{"name": "order_id", "in": "path", "required": True,
                            "schema": {"type": "string"}, "description": "The order's id."}],
            "get": {
                "operationId": "get-order",
                "summary": "Get an order.",
                "description": "Returns the order with its lines.",
                "parameters": [
                    {"name": "verbose", "in": "query", "schema": {"type": "boolean", "default": False}},
                    {"name": "fields", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}},
                    {"name": "X-Trace", "in": "header", "schema": {"type": "string"}},
                ],
            },
        },
        "/orders": {
            "post": {
                "operationId": "createOrder",
                "summary": "Create an order.",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/NewOrder"}}}},
            },
        },
        "/notes": {
            "put": {
                "operationId": "putNote",
                "requestBody": {"content": {"application/json": {"schema": {"type": "string"}}}},
            },
        },
        "/limited": {"get": {"operationId": "limited"}},
        "/limited-date": {"get": {"operationId": "limitedDate"}},
        "/busy": {"get": {"operationId": "busy"}},
        "/flaky": {"get": {"operationId": "flaky"}},
        "/bad": {"get": {"operationId": "bad"}},
        "/slow": {"get": {"operationId": "slow"}},
        "/empty": {"delete": {"operationId": "empty"}},
        "/text": {"get": {"operationId": "text"}},
        "/list": {"get": {"operationId": "list"}},
        "/key": {"get": {"operationId": "key"}},
    },
    "components": {"schemas": {
        "NewOrder": {
            "type": "object",
            "required": ["item", "quantity"],
            "properties": {
                "item": {"type": "string", "description": "What to order."},
                "quantity": {"type": "integer", "minimum": 1},
                "priority": {"type": "string", "enum": ["low", "normal", "high"], "default": "normal"},
                "price": {"type": "number"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "address": {"$ref": "#/components/schemas/Address"},
            },
        },
        "Address": {
            "type": "object",
            "required": ["city"],
            "properties": {"city": {"type": "string"}, "zip": {"type": "string", "nullable": True}},
        },
    }},
}


class Api:
    """The server side: records what it received; some routes answer by script."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.bodies: list[Any] = []
        self.flaky_calls = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, request: Request) -> Response:
        self.requests.append(request)
        raw = request.get_data()
        self.bodies.append(json.loads(raw) if raw else None)
        path = request.path.removeprefix("/v1")
        if path.startswith("/orders") and request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _json({"error": f"bad token {request.headers.get('Authorization')}"}, 401)
        if path.startswith("/orders/"):
            return _json({"raw_path": request.environ["REQUEST_URI"].split("?")[0], "verbose": request.args.get("verbose"),
                          "fields": request.args.getlist("fields"), "trace": request.headers.get("X-Trace"),
                          "idempotency_key": request.headers.get("Idempotency-Key")})
        if path in ("/orders", "/notes"):
            return _json({"received": self.bodies[-1]}, 201)
        if path == "/limited":
            return Response("slow down", 429, headers={"Retry-After": "7"})
        if path == "/limited-date":
            # the server adds its own Date header, the clock the Retry-After date is measured against
            return Response("slow down", 429, headers={"Retry-After": formatdate(time.time() + 30, usegmt=True)})
        if path == "/busy":
            return Response("", 503)
        if path == "/flaky":
            self.flaky_calls += 1
            return Response("boom", 500) if self.flaky_calls == 1 else _json({"ok": True})
        if path == "/bad":
            return _json({"error": "quantity must be positive"}, 400)
        if path == "/slow":
            time.sleep(1.5)
            return _json({"late": True})
        if path == "/empty":
            return Response(status=204)
        if path == "/text":
            return Response("plain words", mimetype="text/plain")
        if path == "/list":
            return _json([1, 2, 3])
        if path == "/key":
            if request.args.get("api_key") != TOKEN:
                return Response(f"unknown key {request.args.get('api_key')}", 403)
            return _json({"key_ok": True, "x_key": request.headers.get("X-Api-Key")})
        return Response("no route", 404)


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status, mimetype="application/json")


@pytest.fixture
def api() -> Iterator[tuple[Api, str]]:
    app = Api()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def ctx(**secrets: str) -> ToolContext:
    return ToolContext(tenant="t1", run_id="run-1", step=3, call_id="call-1", idempotency_key="idem-run-1-3-0",
                       secrets=secrets)


def make(op: str, url: str, **kw: Any) -> HttpTool:
    return http_tool(SPEC, op, base_url=url, **kw)


# --- building -----------------------------------------------------------------------------------------


def test_name_description_idempotency_and_secrets_come_from_the_operation() -> None:
    get = http_tool(SPEC, "get-order", auth=BearerSecret("orders-token"))
    assert get.name == "get_order"
    assert get.description == "Get an order. Returns the order with its lines."
    assert get.idempotent and get.method == "GET" and get.path == "/orders/{order_id}"
    assert get.base_url == "http://placeholder.invalid/v1"  # the document's first server
    assert get.secrets == ("orders-token",)
    post = http_tool(SPEC, "createOrder", name="new_order", idempotent=True)
    assert post.name == "new_order" and post.idempotent and post.secrets == ()
    assert not http_tool(SPEC, "createOrder").idempotent
    assert http_tool(SPEC, "empty").idempotent  # DELETE


def test_the_schema_has_types_required_enums_and_descriptions() -> None:
    params = http_tool(SPEC, "get-order").spec().parameters
    props = params["properties"]
    assert params["required"] == ["order_id"]
    assert props["order_id"]["type"] == "string" and props["order_id"]["description"] == "The order's id."
    assert props["verbose"]["type"] == "boolean" and props["verbose"]["default"] is False
    assert {"type": "array", "items": {"type": "string"}} in props["fields"]["anyOf"]
    assert "X_Trace" in props  # a header name made into an argument name

    params = http_tool(SPEC, "createOrder").spec().parameters
    props = params["properties"]
    assert sorted(params["required"]) == ["item", "quantity"]
    assert props["item"] == {"type": "string", "description": "What to order.", "title": "Item"}
    assert props["quantity"]["type"] == "integer" and props["quantity"]["minimum"] == 1
    assert props["priority"]["enum"] == ["low", "normal", "high"] and props["priority"]["default"] == "normal"
    assert {"type": "number"} in props["price"]["anyOf"]
    address = params["$defs"]["Address"]  # a $ref'd object becomes a nested model
    assert address["required"] == ["city"] and "zip" in address["properties"]
    assert params["additionalProperties"] is False

    params = http_tool(SPEC, "putNote").spec().parameters
    assert {"type": "string"} in params["properties"]["body"]["anyOf"]  # a non-object body


def test_the_document_can_be_a_yaml_file(tmp_path: Any) -> None:
    import yaml

    path = tmp_path / "orders.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    assert http_tool(path, "get-order").name == "get_order"
    assert http_tool(str(path), "createOrder").name == "createOrder"


def test_mistakes_in_the_definition_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="not in the OpenAPI document"):
        http_tool(SPEC, "nope")
    with pytest.raises(ConfigurationError, match="OpenAPI 3"):
        http_tool({"swagger": "2.0", "paths": {}}, "x")
    with pytest.raises(ConfigurationError, match="pass base_url"):
        http_tool({**SPEC, "servers": []}, "limited")
    with pytest.raises(ConfigurationError, match="relative"):
        http_tool({**SPEC, "servers": [{"url": "/v1"}]}, "limited")
    templated = {**SPEC, "servers": [{"url": "https://{region}.example.com", "variables": {"region": {"default": "eu"}}}]}
    assert http_tool(templated, "limited").base_url == "https://eu.example.com"


# --- calls --------------------------------------------------------------------------------------------


def test_get_with_path_query_and_header_params(api: tuple[Api, str]) -> None:
    tool = make("get-order", api[1], auth=BearerSecret("orders-token"))
    out = tool.call({"order_id": "A/17", "verbose": True, "fields": ["id", "total"], "X_Trace": "t-1"},
                    ctx(**{"orders-token": TOKEN}))
    assert out.ok, out.output
    # the path value is escaped, not a new segment
    assert out.output == {"raw_path": "/v1/orders/A%2F17", "verbose": "true", "fields": ["id", "total"],
                          "trace": "t-1", "idempotency_key": "idem-run-1-3-0"}


def test_post_with_a_json_body(api: tuple[Api, str]) -> None:
    server, url = api
    tool = make("createOrder", url, auth=BearerSecret("orders-token"))
    out = tool.call({"item": "lamp", "quantity": 2, "address": {"city": "Lyon"}}, ctx(**{"orders-token": TOKEN}))
    assert out.ok, out.output
    # only what the model gave: defaults are the server's to apply
    assert out.output == {"received": {"item": "lamp", "quantity": 2, "address": {"city": "Lyon"}}}
    assert server.requests[-1].headers["Content-Type"] == "application/json"
    assert server.requests[-1].headers["Idempotency-Key"] == "idem-run-1-3-0"


def test_a_non_object_body_goes_under_body(api: tuple[Api, str]) -> None:
    out = make("putNote", api[1]).call({"body": "remember the milk"}, ctx())
    assert out.ok and out.output == {"received": "remember the milk"}


def test_bearer_auth_is_checked_by_the_server(api: tuple[Api, str]) -> None:
    server, url = api
    tool = make("get-order", url, auth=BearerSecret("orders-token"))
    wrong = tool.call({"order_id": "A1"}, ctx(**{"orders-token": "not-it"}))
    assert not wrong.ok and "HTTP 401" in wrong.output["error"]
    assert "not-it" not in wrong.output["error"]  # the server echoed the credential; it is scrubbed
    assert "[secret:orders-token]" in wrong.output["error"]
    missing = tool.call({"order_id": "A1"}, ctx())
    assert not missing.ok and "orders-token" in missing.output["error"]
    assert len(server.requests) == 1  # no request without the secret


def test_query_and_header_secrets(api: tuple[Api, str]) -> None:
    server, url = api
    ok = make("key", url, auth=QuerySecret("api_key", "k")).call({}, ctx(k=TOKEN))
    assert ok.ok and ok.output["key_ok"] is True
    bad = make("key", url, auth=QuerySecret("api_key", "k")).call({}, ctx(k="wrong-key-123"))
    assert not bad.ok and "HTTP 403" in bad.output["error"] and "wrong-key-123" not in bad.output["error"]
    header = http_tool({**SPEC, "servers": [{"url": url}]}, "key", auth=HeaderSecret("X-Api-Key", "h", "Key "))
    header.call({}, ctx(h="abc"))
    assert server.requests[-1].headers["X-Api-Key"] == "Key abc"


def test_429_with_retry_after_asks_to_be_called_later(api: tuple[Api, str]) -> None:
    out = make("limited", api[1]).call({}, ctx())
    assert not out.ok and out.retry_after_s == 7 and "429" in out.output["error"]
    dated = make("limitedDate", api[1]).call({}, ctx())
    assert dated.retry_after_s is not None and 27 <= dated.retry_after_s <= 31  # an HTTP date


def test_503_without_retry_after_is_retried_in_step(api: tuple[Api, str]) -> None:
    server, url = api
    out = make("busy", url).call({}, ctx())
    assert not out.ok and out.retry_after_s is None and "HTTP 503" in out.output["error"]
    assert "after 3 attempts" in out.output["error"] and len(server.requests) == 3


def test_a_500_is_retried_in_step_and_then_succeeds(api: tuple[Api, str]) -> None:
    server, url = api
    out = make("flaky", url).call({}, ctx())
    assert out.ok and out.output == {"ok": True}
    assert len(server.requests) == 2
    # the same key on both attempts, so an API that dedupes does
    assert {r.headers["Idempotency-Key"] for r in server.requests} == {"idem-run-1-3-0"}


def test_a_400_is_a_tool_error_with_status_and_body(api: tuple[Api, str]) -> None:
    server, url = api
    out = make("bad", url).call({}, ctx())
    assert not out.ok
    assert out.output["error"] == ('HttpError: HTTP 400 BAD REQUEST from GET /bad: '
                                   '{"error": "quantity must be positive"}')
    assert len(server.requests) == 1  # not retried


def test_invalid_arguments_fail_before_any_request(api: tuple[Api, str]) -> None:
    server, url = api
    tool = make("createOrder", url, auth=BearerSecret("orders-token"))
    for args in ({"item": "lamp"}, {"item": "lamp", "quantity": 0}, {"item": "lamp", "quantity": 1, "priority": "asap"},
                 {"item": "lamp", "quantity": 1, "colour": "red"}):
        out = tool.call(args, ctx(**{"orders-token": TOKEN}))
        assert not out.ok and out.output["error"].startswith("invalid arguments for createOrder"), args
    assert server.requests == []


def test_a_timeout_is_reported(api: tuple[Api, str]) -> None:
    started = time.monotonic()
    out = make("slow", api[1], timeout_s=0.3, retry=NO_RETRY).call({}, ctx())
    assert not out.ok and "timed out" in out.output["error"]
    assert time.monotonic() - started < 1.2


def test_other_kinds_of_response(api: tuple[Api, str]) -> None:
    url = api[1]
    assert make("empty", url).call({}, ctx()).output == {"status": 204}
    assert make("text", url).call({}, ctx()).output == {"text": "plain words"}
    assert make("list", url).call({}, ctx()).output == {"result": [1, 2, 3]}


def test_connection_errors_are_transient() -> None:
    out = http_tool(SPEC, "list", base_url="http://127.0.0.1:9", retry=NO_RETRY).call({}, ctx())
    assert not out.ok and out.output["error"].startswith("TransientToolError: GET /list failed")


def test_retry_after_parsing() -> None:
    assert _retry_after_s("12", None) == 12
    assert _retry_after_s("-3", None) == 0
    assert _retry_after_s("soon", None) is None
    assert _retry_after_s("Wed, 21 Oct 2026 07:28:30 GMT", "Wed, 21 Oct 2026 07:28:00 GMT") == 30
