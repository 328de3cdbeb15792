"""Local emulator of the OpenAI chat-completions API (``POST /v1/chat/completions``), the protocol Ollama,
vLLM and llama.cpp's server speak too.

It serves the Gemini emulator's scenario files (see ``agex/dev/emulators/gemini/scenarios/README.md``),
so one script drives either provider's adapter, with the same fault injection and admin endpoints.
Run it with ``python -m agex.dev.emulators.openai --port PORT --scenarios DIR`` and point a client at
``http://127.0.0.1:PORT/v1``.
"""

from __future__ import annotations

from agex.dev.emulators.gemini import DEFAULT_SCENARIOS_DIR

__all__ = ["DEFAULT_SCENARIOS_DIR"]
