"""The ``approvals`` function's handler: one Pub/Sub message of the decisions topic, delivered by a push
subscription (``{"message": {"data", "attributes", "messageId"}, "subscription": ...}``).

Two checks of its own, whatever Cloud Run's ingress and invoker settings are (docs/security.md):
1. the request carries the push subscription's OIDC token: Google-signed, for this function's audience,
   minted for the push identity (locally the stack's push relay signs it with the emulator's key);
2. the decision inside is signed by a declared decision source (``agex.core.decision_signing``), checked by
   the applier itself so that no transport can skip it.

The answer is the redelivery protocol with Pub/Sub: 2xx acknowledges; anything else makes Pub/Sub deliver
again with the subscription's backoff, and after its ``max_delivery_attempts`` move the message to the
dead-letter topic. So a message that can never be applied (not JSON, not a decision of a known version,
not signed by a declared source) is refused with a 4xx, and ends in the dead-letter topic as evidence; a
dependency outage is a 503; everything that *was* understood (applied, duplicate, late, refused, unknown
approval) is acknowledged: retrying it could not change the answer.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError
from werkzeug.wrappers import Request, Response

from agex.app.http.responses import error_response, json_response, served
from agex.core.approval import DecisionMessage
from agex.core.errors import (
    AgexError,
    PayloadTooLarge,
    PermissionDenied,
    RequestError,
    TransientError,
    validation_problems,
)
from agex.engine.approvals import Applied, ApprovalApplier, security_event
from agex.obs import logging as log
from agex.obs import tracing

_log = log.get("approvals")
_MAX_PUSH_BYTES = 256 * 1024
"""A decision is at most a few KB (edited arguments included); Pub/Sub's push envelope adds base64."""


class DecisionPush:
    def __init__(self, applier: ApprovalApplier, verify: Callable[[Mapping[str, str]], None]) -> None:
        self.applier, self.verify = applier, verify

    def __call__(self, request: Request) -> Response:
        return served(request, self._serve)

    def _serve(self, request: Request) -> Response:
        try:
            if request.method != "POST":
                raise RequestError("the approvals function takes POST requests from its Pub/Sub push "
                                   "subscription only")
            self._authenticate(request)
            message = _envelope(request)
            message_id = str(message.get("messageId") or message.get("message_id") or "?")
            decision = _decision(message, message_id)
            attributes = message.get("attributes")
            context = tracing.extract(attributes if isinstance(attributes, dict) else {})
            with tracing.tracer().start_as_current_span("approvals.message", context=context):
                outcome = self.applier.apply(decision)
            if outcome.result == Applied.unauthenticated:
                # not acknowledged: Pub/Sub dead-letters it after its attempts, kept for whoever investigates
                raise PermissionDenied(outcome.detail)
            return json_response({"outcome": outcome.result.value, "detail": outcome.detail})
        except TransientError as e:
            _log.warning("decision not applied yet, Pub/Sub will redeliver it: %s", e.message)
            return error_response(e)
        except AgexError as e:
            if e.status >= 500:
                _log.exception("the approvals function failed; Pub/Sub will redeliver the message")
            return error_response(e)
        except Exception:
            _log.exception("the approvals function crashed; Pub/Sub will redeliver the message")
            return error_response(AgexError("the approvals function crashed; the message will be redelivered"))

    def _authenticate(self, request: Request) -> None:
        try:
            self.verify(dict(request.headers))
        except RequestError as e:
            security_event(f"refused a push to the approvals function: {e.message}", event="push_unauthenticated",
                           remote=request.remote_addr or "")
            raise


def _envelope(request: Request) -> dict[str, Any]:
    raw = b"" if (request.content_length or 0) > _MAX_PUSH_BYTES else request.stream.read(_MAX_PUSH_BYTES + 1)
    if (request.content_length or 0) > _MAX_PUSH_BYTES or len(raw) > _MAX_PUSH_BYTES:
        raise PayloadTooLarge(f"a push request is at most {_MAX_PUSH_BYTES} bytes")
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"the push request is not JSON: {e}") from None
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, dict):
        raise RequestError("the push request has no 'message' object: is this a Pub/Sub push subscription?")
    return message


def _decision(message: dict[str, Any], message_id: str) -> DecisionMessage:
    try:
        raw = base64.b64decode(message.get("data") or "", validate=True)
        return DecisionMessage.model_validate(json.loads(raw))
    except (binascii.Error, ValueError, ValidationError) as e:
        why = _brief(e)
        # logged as an error once per delivery; Pub/Sub dead-letters it after the subscription's attempts
        _log.error("refused malformed decision message %s: %s", message_id, why)
        raise RequestError(f"message {message_id} is not an approval.decision v2: {why}") from None


def _brief(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return validation_problems(e, "message")
    return f"{type(e).__name__}: {e}"
