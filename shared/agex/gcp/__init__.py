"""Google Cloud adapters of the ports: the only package that imports ``google.cloud``.

Names are loaded on first use, so importing one adapter does not pay for the others' SDKs:

- :class:`FirestoreCheckpointStore` (``agex.gcp.firestore_store``)
- :class:`PubSubEventBus`, :func:`ensure_topics`, :func:`ensure_subscription` (``agex.gcp.pubsub_bus``)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FirestoreCheckpointStore": "agex.gcp.firestore_store",
    "DocumentTooLarge": "agex.gcp.firestore_store",
    "PubSubEventBus": "agex.gcp.pubsub_bus",
    "ensure_topics": "agex.gcp.pubsub_bus",
    "ensure_subscription": "agex.gcp.pubsub_bus",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agex.gcp' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
