"""The real client library wired to the emulator as a given identity: ``make_client(host, identity)`` is an
unmodified ``SecretManagerServiceClient`` whose every call carries ``authorization: Bearer <identity>``.

The wiring lives in the adapter (``agex.adapters.gcp.secret_manager``), which the local stack's functions use
too; these names are the emulator's own for its tests and tools.
"""

from __future__ import annotations

from agex.adapters.gcp.secret_manager import emulator_channel as make_channel
from agex.adapters.gcp.secret_manager import emulator_client as make_client

__all__ = ["make_channel", "make_client"]
