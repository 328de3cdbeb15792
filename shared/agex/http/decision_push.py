"""The ``approvals`` function's handler: one Pub/Sub message of the decisions topic, delivered by a push
subscription as a CloudEvent (functions-framework turns the push request into one).

The answer is the redelivery protocol with Pub/Sub: returning acknowledges; an exception makes Pub/Sub
deliver again with the subscription's backoff, and after its ``max_delivery_attempts`` move the message
to the dead-letter topic. So a message that can never be applied (not JSON, not a decision of a known
version) is refused with a 400 and no traceback, a dependency outage is a 503, and everything that
*was* understood (applied, duplicate, late, refused, unknown approval) is acknowledged: retrying it
could not change the answer.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from pydantic import ValidationError
from werkzeug.exceptions import BadRequest, ServiceUnavailable

from agex.approval import DecisionMessage
from agex.engine.approvals import ApprovalApplier, Outcome
from agex.errors import TransientError
from agex.obs import logging as log
from agex.obs import tracing

_log = log.get("approvals")


class DecisionPush:
    def __init__(self, applier: ApprovalApplier) -> None:
        self.applier = applier

    def __call__(self, event: Any) -> Outcome:
        data: dict[str, Any] = event.data if isinstance(getattr(event, "data", None), dict) else {}
        message: dict[str, Any] = data["message"] if isinstance(data.get("message"), dict) else {}
        message_id = str(message.get("messageId") or message.get("message_id") or event.get("id") or "?")
        attributes = message.get("attributes") or {}
        decision = self._parse(message, message_id)
        context = tracing.extract(attributes if isinstance(attributes, dict) else {})
        try:
            with tracing.tracer().start_as_current_span("approvals.message", context=context):
                return self.applier.apply(decision)
        except TransientError as e:
            _log.warning("decision %s (message %s) not applied yet, Pub/Sub will redeliver it: %s",
                         decision.decision_id, message_id, e.message)
            raise ServiceUnavailable(e.message) from e

    @staticmethod
    def _parse(message: dict[str, Any], message_id: str) -> DecisionMessage:
        try:
            raw = base64.b64decode(message.get("data") or "", validate=True)
            return DecisionMessage.model_validate(json.loads(raw))
        except (binascii.Error, ValueError, ValidationError) as e:
            why = _brief(e)
            # logged as an error once per delivery; Pub/Sub dead-letters it after the subscription's attempts
            _log.error("refused malformed decision message %s: %s", message_id, why)
            raise BadRequest(f"message {message_id} is not an approval.decision v1: {why}") from None


def _brief(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}" for err in e.errors())
    return f"{type(e).__name__}: {e}"
