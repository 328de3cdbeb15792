"""HTTP tools described by an OpenAPI 3.x operation.

``http_tool(spec, "getOrder", auth=BearerSecret("orders-api-token"))`` turns one operation into a
``Tool``: its path, query and header parameters and its JSON body become the arguments model the model
fills in, and a call is one HTTP request whose outcome maps onto the runtime's vocabulary: ``RetryLater``
for 429/503 with Retry-After (no instance sleeps through a rate limit), ``TransientToolError`` for other
5xx and dropped connections (retried in the step), and ``HttpError`` for 4xx, whose message the model
reads to fix its arguments.

The credential is never on the tool: the tool declares the secret id, the runtime reads its value with
the agent's identity and hands it over in ``ToolContext.secrets`` for the one call.

Cold start: ``httpx`` loads on the first call, and ``yaml`` only to read a document given as text or a
file, so defining an agent with HTTP tools costs the API nothing it does not use.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import keyword
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, create_model

from agex.core.errors import ConfigurationError
from agex.core.scrub import scrub
from agex.tools import RetryLater, RetryPolicy, Tool, ToolContext, ToolLimits, TransientToolError

if TYPE_CHECKING:
    import httpx

DEFAULT_RETRY_AFTER_S = 30.0
"""How long a 429 without Retry-After waits: long enough for a typical per-minute quota to refill."""

_EXCERPT_CHARS = 300
_MAX_DEPTH = 4
"""Nested objects modelled (and refs followed) before falling back to ``dict[str, Any]``: deeper
structure helps the model little and recursive schemas must stop somewhere."""

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
# OpenAPI says header parameters with these names SHALL be ignored: they are set by content and auth
_IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})
_SCALARS: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool}
_RESERVED = frozenset(dir(BaseModel))


# --- auth ---------------------------------------------------------------------------------------------


class Auth:
    """How the secret's value goes on the request. ``secret`` is a Secret Manager secret id."""

    secret: str

    def apply(self, value: str, headers: dict[str, str], params: list[tuple[str, Any]]) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class BearerSecret(Auth):
    """``Authorization: Bearer <value>``."""

    secret: str

    def apply(self, value: str, headers: dict[str, str], params: list[tuple[str, Any]]) -> None:
        headers["Authorization"] = f"Bearer {value}"


@dataclass(frozen=True)
class HeaderSecret(Auth):
    """``<header>: <prefix><value>``, e.g. ``HeaderSecret("X-API-Key", "crm-key")``."""

    header: str
    secret: str
    prefix: str = ""

    def apply(self, value: str, headers: dict[str, str], params: list[tuple[str, Any]]) -> None:
        headers[self.header] = f"{self.prefix}{value}"


@dataclass(frozen=True)
class QuerySecret(Auth):
    """``?<param>=<value>``. Error messages name the path template only, so the key never leaks."""

    param: str
    secret: str

    def apply(self, value: str, headers: dict[str, str], params: list[tuple[str, Any]]) -> None:
        params[:] = [(k, v) for k, v in params if k != self.param]  # the model cannot override the key
        params.append((self.param, value))


# --- the tool -----------------------------------------------------------------------------------------


class HttpError(Exception):
    """A 4xx (or other non-2xx, non-retryable) answer. The message carries the status and a short excerpt
    of the body, which usually says what was wrong with the arguments."""

    def __init__(self, status: int, message: str, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(frozen=True)
class _Binding:
    """Where one argument goes on the request."""

    arg: str
    """Its name in the arguments (the model's name for it; the key of ``model_dump(by_alias=True)``)."""
    location: Literal["path", "query", "header", "body_property", "body"]
    wire: str
    """Its name on the wire: the parameter name, or the body property name."""


@dataclass(frozen=True)
class HttpTool(Tool):
    """One OpenAPI operation as a tool. Build it with ``http_tool``."""

    kind: ClassVar[str] = "http"

    method: str = "GET"
    path: str = "/"
    base_url: str = ""
    auth: Auth | None = None
    bindings: tuple[_Binding, ...] = ()
    body_media: Literal["json", "form", ""] = ""

    def invoke(self, args: BaseModel, ctx: ToolContext) -> Any:
        import httpx

        where = f"{self.method} {self.path}"  # never the URL: a query-string key would be in it
        secrets: dict[str, str] = {}
        # only what the model gave goes on the wire: the server applies its own defaults
        values = args.model_dump(mode="json", by_alias=True, exclude_unset=True)
        path = self.path
        params: list[tuple[str, Any]] = []
        headers = {"Idempotency-Key": ctx.idempotency_key, "Accept": "application/json, */*;q=0.5"}
        body: Any = None
        for b in self.bindings:
            if b.arg not in values:
                continue
            value = values[b.arg]
            if b.location == "path":
                path = path.replace("{" + b.wire + "}", quote(_scalar(value), safe=""))
            elif b.location == "query" and value is not None:
                items = value if isinstance(value, list) else [value]  # form style, explode: ?a=1&a=2
                params.extend((b.wire, _scalar(v)) for v in items)
            elif b.location == "header" and value is not None:
                headers[b.wire] = _scalar(value)
            elif b.location == "body_property":
                body = {} if body is None else body
                body[b.wire] = value
            elif b.location == "body":
                body = value
        if self.auth is not None:
            value = ctx.secrets.get(self.auth.secret)
            if not value:
                raise ConfigurationError(f"{self.name}: secret {self.auth.secret!r} was not provided to the "
                                         f"call; declare it on the tool and grant the agent access to it")
            secrets = {self.auth.secret: value}
            self.auth.apply(value, headers, params)
        content: dict[str, Any] = {}
        if body is not None:
            content = {"json": body} if self.body_media == "json" else {"data": body}
        try:
            # a client per call: a shared one would keep cookies across runs and tenants
            with httpx.Client(timeout=self.timeout_s, follow_redirects=True) as client:
                response = client.request(self.method, self.base_url.rstrip("/") + path, params=params,
                                          headers=headers, **content)
        except httpx.TimeoutException as e:
            raise TransientToolError(f"{where} timed out after {self.timeout_s:g} s ({type(e).__name__})") from None
        except httpx.HTTPError as e:
            raise TransientToolError(f"{where} failed: {type(e).__name__}: {scrub(str(e), secrets)}") from None
        return _outcome(response, where, secrets)


def _outcome(response: httpx.Response, where: str, secrets: Mapping[str, str]) -> dict[str, Any]:
    status = response.status_code
    if 200 <= status < 300:
        if not response.content:
            return {"status": status}
        if _is_json(response.headers.get("content-type", "")):
            try:
                data = response.json()
            except ValueError:
                return {"text": response.text}
            return data if isinstance(data, dict) else {"result": data}
        return {"text": response.text}
    # scrubbed before it is cut, so no cut-off start of a secret is left behind
    excerpt = " ".join(scrub(response.text, secrets).split())[:_EXCERPT_CHARS]
    message = f"HTTP {status} {response.reason_phrase} from {where}" + (f": {excerpt}" if excerpt else "")
    if status in (429, 503):
        dates = response.headers.get_list("date")  # several Date headers: trust none, use our clock
        after = _retry_after_s(response.headers.get("retry-after"), dates[0] if len(dates) == 1 else None)
        if after is not None:
            raise RetryLater(after, message)
        if status == 429:
            raise RetryLater(DEFAULT_RETRY_AFTER_S, message)
    if status >= 500:
        raise TransientToolError(message)
    raise HttpError(status, message, excerpt)


def _retry_after_s(value: str | None, date: str | None) -> float | None:
    """Retry-After in seconds, or as an HTTP date, measured against the response's own Date header when
    it has one, so a skewed clock on either side does not stretch or shorten the wait."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
        return max(0.0, seconds) if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    now = time.time()
    if date:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            now = email.utils.parsedate_to_datetime(date).timestamp()
    return max(0.0, when - now)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


# --- building a tool from the document ----------------------------------------------------------------


def http_tool(
    spec: dict[str, Any] | str | Path, operation_id: str, *, base_url: str | None = None, auth: Auth | None = None,
    name: str | None = None, idempotent: bool | None = None, timeout_s: float = 30,
    limits: ToolLimits | None = None, output_model: type[BaseModel] | None = None,
    retry: RetryPolicy | None = None,
) -> HttpTool:
    """The operation ``operation_id`` of an OpenAPI 3.x document as a tool.

    ``spec`` is the document, or the path of a YAML or JSON file holding it. ``base_url`` defaults to the
    first server of the operation (or of its path, or of the document). ``idempotent`` defaults from the
    method: GET, HEAD, PUT, DELETE and OPTIONS are; POST and PATCH are not, so they are not retried.
    """
    doc = load_openapi(spec)
    schemas = _Schemas(doc)
    path, method, item, op = _find_operation(doc, operation_id, schemas)
    tool_name = name or re.sub(r"[^a-zA-Z0-9_]", "_", operation_id)
    summary = " ".join(str(op.get(k, "")).strip() for k in ("summary", "description")).strip()
    fields: dict[str, Any] = {}
    bindings: list[_Binding] = []
    taken: set[str] = set()

    def add(wire: str, location: Any, schema: Any, required: bool, description: str | None,
            prefix: str = "") -> None:
        arg = _unique(prefix + _identifier(wire), taken)
        ident = _python_name(arg, set(fields))
        fields[ident] = _field(schemas, schema, required, description, arg, f"{tool_name}_{arg}")
        bindings.append(_Binding(arg, location, wire))

    for p in _parameters(item, op, schemas):
        where, wire = p.get("in"), str(p.get("name", ""))
        if where == "header" and wire.lower() in _IGNORED_HEADERS:
            continue
        if where == "cookie":
            if p.get("required"):
                raise ConfigurationError(f"{operation_id}: cookie parameter {wire!r} is required; cookie "
                                         f"parameters are not supported")
            continue
        schema = p.get("schema")
        if schema is None:  # a parameter described by ``content`` instead: its value is serialized JSON
            media: Any = next(iter((p.get("content") or {}).values()), None) or {}
            schema = media.get("schema", {})
        add(wire, where, schema, where == "path" or bool(p.get("required")), p.get("description"))

    body_media = ""
    if "requestBody" in op:
        body = schemas.deref(op["requestBody"])
        body_media, schema = _body_schema(body.get("content") or {}, operation_id)
        body_required = bool(body.get("required"))
        shape = schemas.object_shape(schema) if body_media else None
        if shape is not None and shape[0]:
            properties, required = shape
            for prop, prop_schema in properties.items():
                # a property named like a parameter keeps both: the body one is prefixed
                prefix = "body_" if _identifier(prop) in taken else ""
                add(prop, "body_property", prop_schema, body_required and prop in required,
                    None, prefix)
        elif body_media:
            add("body", "body", schema, body_required, schemas.deref(schema).get("description")
                or body.get("description"))

    args_model = create_model(  # type: ignore[call-overload]
        f"{tool_name}_args", __config__=_config("forbid"), **fields)
    return HttpTool(
        name=tool_name, description=summary or f"{method.upper()} {path}", args_model=args_model,
        idempotent=method.upper() in _IDEMPOTENT_METHODS if idempotent is None else idempotent,
        output_model=output_model, timeout_s=timeout_s, retry=retry,
        secrets=(auth.secret,) if auth is not None else (), limits=limits or ToolLimits(),
        method=method.upper(), path=path, base_url=base_url or _server_url(doc, item, op, operation_id),
        auth=auth, bindings=tuple(bindings), body_media=body_media,  # type: ignore[arg-type]
    )


def load_openapi(spec: dict[str, Any] | str | Path) -> dict[str, Any]:
    """The document itself, or read from a YAML/JSON file (YAML is a superset of JSON). A ``str`` that
    looks like a document (several lines, or a JSON object) is parsed as one rather than read as a path."""
    if isinstance(spec, dict):
        doc: Any = spec
    else:
        text = spec if isinstance(spec, str) and ("\n" in spec or spec.lstrip().startswith("{")) else None
        if text is None:
            try:
                text = Path(spec).read_text(encoding="utf-8")
            except OSError as e:
                raise ConfigurationError(f"cannot read the OpenAPI document {str(spec)!r}: {e}") from e
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigurationError(f"the OpenAPI document is not valid YAML or JSON: {e}") from e
    if not isinstance(doc, dict) or not str(doc.get("openapi", "")).startswith("3."):
        raise ConfigurationError("expected an OpenAPI 3.x document (with 'openapi: 3.x'); Swagger 2.0 "
                                 "documents must be converted first")
    return doc


def _find_operation(doc: dict[str, Any], operation_id: str,
                    schemas: _Schemas) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    found: list[str] = []
    for path, item in (doc.get("paths") or {}).items():
        item = schemas.deref(item)
        for method in _METHODS:
            op = item.get(method)
            if isinstance(op, dict) and op.get("operationId"):
                if op["operationId"] == operation_id:
                    return str(path), method, item, op
                found.append(str(op["operationId"]))
    raise ConfigurationError(f"operation {operation_id!r} is not in the OpenAPI document; it has: "
                             f"{', '.join(sorted(found)[:30]) or 'no operationIds'}")


def _parameters(item: dict[str, Any], op: dict[str, Any], schemas: _Schemas) -> list[dict[str, Any]]:
    """Path-level parameters, overridden by operation-level ones with the same name and location."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for raw in [*(item.get("parameters") or []), *(op.get("parameters") or [])]:
        p = schemas.deref(raw)
        merged[(str(p.get("name")), str(p.get("in")))] = p
    return list(merged.values())


def _body_schema(content: Mapping[str, Any], operation_id: str) -> tuple[Literal["json", "form", ""], Any]:
    for media, body in content.items():
        if _is_json(media):
            return "json", (body or {}).get("schema", {})
    for media, body in content.items():
        if media.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
            return "form", (body or {}).get("schema", {})
    if not content:
        return "", {}
    raise ConfigurationError(f"{operation_id}: only JSON and form request bodies are supported, not "
                             f"{', '.join(content)}")


def _server_url(doc: dict[str, Any], item: dict[str, Any], op: dict[str, Any], operation_id: str) -> str:
    # the most specific servers list wins, as OpenAPI says
    servers = op.get("servers") or item.get("servers") or doc.get("servers") or []
    if not servers or not isinstance(servers[0], dict) or not servers[0].get("url"):
        raise ConfigurationError(f"{operation_id}: the OpenAPI document names no server; pass base_url")
    server = servers[0]
    variables = server.get("variables") or {}

    def substitute(m: re.Match[str]) -> str:
        default = (variables.get(m.group(1)) or {}).get("default")
        if default is None:
            raise ConfigurationError(f"{operation_id}: server variable {m.group(1)!r} has no default; pass base_url")
        return str(default)

    url = re.sub(r"\{([^}]+)\}", substitute, str(server["url"]))
    if not re.match(r"^https?://", url):
        raise ConfigurationError(f"{operation_id}: the server URL {url!r} is relative; pass base_url")
    return url


# --- JSON schema -> pydantic --------------------------------------------------------------------------


class _Schemas:
    """Resolves local ``$ref``s and turns JSON schemas into pydantic annotations."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.models: dict[str, Any] = {}
        self.building: set[str] = set()

    def ref_target(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise ConfigurationError(f"only local $refs are supported, not {ref!r}")
        node: Any = self.doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise ConfigurationError(f"$ref {ref!r} points at nothing in the OpenAPI document")
            node = node[part]
        return node

    def deref(self, node: Any) -> dict[str, Any]:
        """Follow a chain of refs (stopping on cycles) to the first node that is not one."""
        seen: set[str] = set()
        while isinstance(node, dict) and "$ref" in node:
            ref = str(node["$ref"])
            if ref in seen:
                return {}
            seen.add(ref)
            node = self.ref_target(ref)
        return node if isinstance(node, dict) else {}

    def object_shape(self, schema: Any, depth: int = 0) -> tuple[dict[str, Any], set[str]] | None:
        """Properties and required names of an object schema (``allOf`` parts merged), or None."""
        s = self.deref(schema)
        if depth > _MAX_DEPTH:
            return None
        if "allOf" in s:
            props: dict[str, Any] = dict(s.get("properties") or {})
            required = set(s.get("required") or [])
            for part in s["allOf"]:
                shape = self.object_shape(part, depth + 1)
                if shape is None:
                    return None
                props.update(shape[0])
                required |= shape[1]
            return props, required
        if s.get("type") == "object" or "properties" in s:
            return dict(s.get("properties") or {}), set(s.get("required") or [])
        return None

    def annotation(self, schema: Any, hint: str, depth: int = 0) -> Any:
        ref = schema.get("$ref") if isinstance(schema, dict) else None
        s = self.deref(schema)
        if depth > _MAX_DEPTH:
            return dict[str, Any] if s.get("type") == "object" else Any
        nullable = bool(s.get("nullable"))
        types = s.get("type")
        if isinstance(types, list):  # OpenAPI 3.1: type: [string, "null"]
            nullable = nullable or "null" in types
            types = [t for t in types if t != "null"]
            types = types[0] if len(types) == 1 else types
        ann: Any
        if "enum" in s:
            values = [v for v in s["enum"] if v is not None]
            nullable = nullable or None in s["enum"]
            hashable = all(isinstance(v, str | int | float | bool) for v in values)
            ann = Literal[tuple(values)] if values and hashable else Any
        elif "const" in s:
            ann = Literal[s["const"]] if isinstance(s["const"], str | int | float | bool) else Any
        elif "anyOf" in s or "oneOf" in s:
            members = []
            for i, m in enumerate(s.get("anyOf") or s.get("oneOf") or []):
                if self.deref(m).get("type") == "null":
                    nullable = True
                else:
                    members.append(self.annotation(m, f"{hint}_{i}", depth + 1))
            ann = Union[tuple(members)] if len(members) > 1 else (members[0] if members else Any)  # noqa: UP007
        elif isinstance(types, list):
            ann = Union[tuple(_SCALARS.get(t, Any) for t in types)]  # noqa: UP007
        elif types in _SCALARS:
            ann = _constrained(_SCALARS[types], s)
        elif types == "array" or "items" in s:
            ann = _constrained(list[self.annotation(s.get("items") or {}, f"{hint}_item", depth + 1)], s)  # type: ignore[misc]
        elif (shape := self.object_shape(s)) is not None and shape[0]:
            ann = self.model(ref, s, shape, hint, depth)
        elif types == "object" or "additionalProperties" in s:
            extra = s.get("additionalProperties")
            value = self.annotation(extra, f"{hint}_value", depth + 1) if isinstance(extra, dict) and extra else Any
            ann = dict[str, value]  # type: ignore[valid-type]
        else:
            ann = Any
        return ann | None if nullable and ann is not Any else ann

    def model(self, ref: str | None, s: dict[str, Any], shape: tuple[dict[str, Any], set[str]], hint: str,
              depth: int) -> Any:
        if ref is not None:
            if ref in self.models:
                return self.models[ref]
            if ref in self.building:  # a recursive schema: stop here
                return dict[str, Any]
            self.building.add(ref)
            hint = re.sub(r"[^a-zA-Z0-9_]", "_", ref.rsplit("/", 1)[-1])
        properties, required = shape
        fields: dict[str, Any] = {}
        for prop, prop_schema in properties.items():
            ident = _python_name(_identifier(prop), set(fields))
            fields[ident] = _field(self, prop_schema, prop in required, None, prop, f"{hint}_{ident}", depth + 1)
        # unknown keys pass through unless the schema forbids them, as the server would accept them
        extra: Literal["forbid", "allow"] = "forbid" if s.get("additionalProperties") is False else "allow"
        model = create_model(hint, __config__=_config(extra), **fields)  # type: ignore[call-overload]
        if ref is not None:
            self.building.discard(ref)
            self.models[ref] = model
        return model


def _field(schemas: _Schemas, schema: Any, required: bool, description: str | None, alias: str, hint: str,
           depth: int = 0) -> tuple[Any, Any]:
    s = schemas.deref(schema)
    ann = schemas.annotation(schema, hint, depth)
    extra: dict[str, Any] = {"description": description or s.get("description") or None, "alias": alias}
    if required:
        return ann, Field(**extra)
    if "default" in s:
        return ann, Field(default=s["default"], **extra)
    return (ann if ann is Any else ann | None), Field(default=None, **extra)


def _constrained(ann: Any, s: dict[str, Any]) -> Any:
    """Bounds the model can get wrong and be told so before any request. ``pattern`` is left to the
    server: JSON schema regexes are not all valid for pydantic's engine."""
    c: dict[str, Any] = {}
    if ann in (int, float):
        for key, arg in (("minimum", "ge"), ("maximum", "le")):
            if isinstance(s.get(key), int | float) and not isinstance(s.get(key), bool):
                # OpenAPI 3.0 spells an exclusive bound as a flag next to it
                c["gt" if arg == "ge" and s.get("exclusiveMinimum") is True else
                  "lt" if arg == "le" and s.get("exclusiveMaximum") is True else arg] = s[key]
        for key, arg in (("exclusiveMinimum", "gt"), ("exclusiveMaximum", "lt")):
            if isinstance(s.get(key), int | float) and not isinstance(s.get(key), bool):
                c[arg] = s[key]
    elif ann is str or getattr(ann, "__origin__", None) is list:
        prefix = "Length" if ann is str else "Items"
        for key, arg in ((f"min{prefix}", "min_length"), (f"max{prefix}", "max_length")):
            if isinstance(s.get(key), int) and not isinstance(s.get(key), bool):
                c[arg] = s[key]
    return Annotated[ann, Field(**c)] if c else ann


def _config(extra: Literal["forbid", "allow"]) -> ConfigDict:
    return ConfigDict(extra=extra, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True,
                      protected_namespaces=())


def _identifier(name: str) -> str:
    """A name the model can use for an argument: ``[a-zA-Z0-9_]``, not starting with a digit."""
    ident = re.sub(r"[^a-zA-Z0-9_]", "_", name) or "arg"
    return f"_{ident}" if ident[0].isdigit() else ident


def _unique(name: str, taken: set[str]) -> str:
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _python_name(name: str, taken: set[str]) -> str:
    """A pydantic field name for an argument (its alias keeps the name the model sees): no leading
    underscore (pydantic would make it private), no keyword, nothing that shadows ``BaseModel``."""
    ident = _identifier(name).lstrip("_") or "arg"
    if ident[0].isdigit():
        ident = f"f{ident}"
    if keyword.iskeyword(ident) or ident in _RESERVED or ident.startswith("model_"):
        ident = f"{ident}_"
    while ident in taken:
        ident += "_"
    return ident
