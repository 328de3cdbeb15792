"""Local emulator of the Gemini ``generateContent`` REST API, with its ``cachedContents`` (context caches) and its
embeddings (``embedContent``, ``batchEmbedContents``: the local model's vectors, see ``embeddings``).

It lets the real ``google-genai`` client run offline against scripted, deterministic
scenarios (see ``scenarios/README.md``), with injectable faults for resilience tests.
Run it with ``python -m agex.dev.emulators.gemini --port PORT --scenarios DIR``.
"""

from __future__ import annotations

__all__ = ["DEFAULT_SCENARIOS_DIR"]

from pathlib import Path

# Example scenarios shipped with the emulator; used when --scenarios is not given.
DEFAULT_SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"
