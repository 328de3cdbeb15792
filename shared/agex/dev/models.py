"""Which model ``agex dev`` runs the agents on: the scripted Gemini emulator (default), the real Gemini API
with a key from the environment, or any OpenAI-compatible endpoint (a local Ollama, vLLM or llama.cpp
server). Both backends, the emulator stack and the in-process one, take the same settings from here.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Mapping

from agex.core.pricing import DEFAULT_PRICES

MODELS = ("emulator", "gemini", "openai")
OLLAMA_URL = "http://127.0.0.1:11434/v1"
DEFAULT_LOCAL_MODEL = "llama3.2"


class ModelChoiceError(ValueError):
    """The chosen model cannot be used as configured; the message says what to set."""


def settings_for(kind: str, name: str = "", environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``AGEX_*`` settings that point the runtime at ``kind`` (``emulator`` needs none beyond the stack's
    own). ``name``: the model every agent runs on instead of its own (required in effect for ``openai``)."""
    env = os.environ if environ is None else environ
    if kind == "emulator":
        return {"AGEX_MODEL": name} if name else {}
    if kind == "gemini":
        key = env.get("AGEX_GEMINI_API_KEY") or env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY") or ""
        vertex = env.get("AGEX_VERTEX", "").lower() in ("1", "true", "yes")
        if not key and not vertex:
            raise ModelChoiceError("--model gemini needs a Gemini API key in GEMINI_API_KEY (or AGEX_GEMINI_API_KEY; "
                                   "get one at https://aistudio.google.com/apikey), or AGEX_VERTEX=true with "
                                   "application default credentials and AGEX_PROJECT")
        out = {"AGEX_MODEL_PROVIDER": "gemini", "AGEX_GEMINI_API_KEY": key, "AGEX_GEMINI_BASE_URL": "",
               "AGEX_VERTEX": "true" if vertex else "false"}
        return {**out, **({"AGEX_MODEL": name} if name else {})}
    if kind == "openai":
        base = env.get("AGEX_OPENAI_BASE_URL") or env.get("OPENAI_BASE_URL") or OLLAMA_URL
        model = name or env.get("AGEX_MODEL") or DEFAULT_LOCAL_MODEL
        out = {"AGEX_MODEL_PROVIDER": "openai", "AGEX_OPENAI_BASE_URL": base, "AGEX_MODEL": model,
               "AGEX_OPENAI_API_KEY": env.get("AGEX_OPENAI_API_KEY") or env.get("OPENAI_API_KEY") or ""}
        prices = json.loads(env.get("AGEX_PRICES") or "{}")
        if model not in prices and model not in DEFAULT_PRICES:
            if not _local(base):
                raise ModelChoiceError(f"model {model!r} at {base} has no price: set AGEX_PRICES, for example "
                                       f"'{{\"{model}\": {{\"input_per_mtok\": 0.2, \"output_per_mtok\": 0.6}}}}'")
            # a model served on this machine costs nothing per token: priced at zero, and said so at start
            prices[model] = {"input_per_mtok": 0.0, "output_per_mtok": 0.0}
        out["AGEX_PRICES"] = json.dumps(prices)
        return out
    raise ModelChoiceError(f"unknown model choice {kind!r}: one of {', '.join(MODELS)}")


def describe(kind: str, settings: Mapping[str, str]) -> str:
    if kind == "emulator":
        return "the Gemini emulator (scripted scenarios)"
    if kind == "gemini":
        where = "Vertex AI" if settings.get("AGEX_VERTEX") == "true" else "the Gemini API"
        return f"{settings.get('AGEX_MODEL') or 'each agent’s own model'} on {where}"
    prices = json.loads(settings.get("AGEX_PRICES", "{}"))
    price = prices.get(settings["AGEX_MODEL"], {})
    free = " (priced at $0: local inference)" if price and not any(price.values()) else ""
    return f"{settings['AGEX_MODEL']} at {settings['AGEX_OPENAI_BASE_URL']}{free}"


def _local(url: str) -> bool:
    host = urllib.parse.urlparse(url).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
