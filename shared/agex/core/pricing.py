"""Cost of model calls, from a price table in USD per million tokens.

Prices are list prices for the standard tier at the time of writing (paid tier, prompts up to 200k
tokens; checked 2026-11); teams with negotiated prices pass their own table to ``Pricing``.

Input tokens served from a context cache (``TokenUsage.cached_input_tokens``, a part of the input) are
billed at the model's cached-input price instead of its input price; docs/models.md, "Context caching".
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from agex.core.errors import ConfigurationError

DEFAULT_CACHED_SHARE = 0.25
"""A cached input token's price as a share of an input token's, for a model whose price gives no
``cached_input_per_mtok``: the share Gemini 2.0 models are billed (2.5 models are billed 10%), so a
saving computed with it is never larger than the real one."""


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = Field(default=None, ge=0)
    """Input tokens served from a context cache; None: ``DEFAULT_CACHED_SHARE`` of ``input_per_mtok``."""

    @property
    def cached_input(self) -> float:
        """USD per million cached input tokens."""
        if self.cached_input_per_mtok is not None:
            return self.cached_input_per_mtok
        return self.input_per_mtok * DEFAULT_CACHED_SHARE


DEFAULT_PRICES: Mapping[str, Price] = {
    "gemini-2.5-pro": Price(input_per_mtok=1.25, output_per_mtok=10.0, cached_input_per_mtok=0.125),
    "gemini-2.5-flash": Price(input_per_mtok=0.30, output_per_mtok=2.50, cached_input_per_mtok=0.03),
    "gemini-2.5-flash-lite": Price(input_per_mtok=0.10, output_per_mtok=0.40, cached_input_per_mtok=0.01),
    "gemini-2.0-flash": Price(input_per_mtok=0.10, output_per_mtok=0.40, cached_input_per_mtok=0.025),
    "gemini-2.0-flash-lite": Price(input_per_mtok=0.075, output_per_mtok=0.30),
}


class Pricing:
    def __init__(self, prices: Mapping[str, Price] = DEFAULT_PRICES) -> None:
        self._prices = dict(prices)

    def check(self, model: str) -> None:
        if model not in self._prices:
            known = ", ".join(sorted(self._prices))
            raise ConfigurationError(
                f"no price for model {model!r}: use one of {known}, or give its price in USD per million tokens "
                f"in the fleet file's prices: or in AGEX_PRICES, as {{\"{model}\": {{\"input_per_mtok\": 0.1, "
                f"\"output_per_mtok\": 0.4}}}} (0 and 0 for a model you run yourself)"
            )

    def cost(self, model: str, input_tokens: int, output_tokens: int, *, cached_input_tokens: int = 0) -> float:
        """``input_tokens`` counts the whole prompt; ``cached_input_tokens`` of them are billed at the cached
        price."""
        self.check(model)
        price = self._prices[model]
        cached = _cached(input_tokens, cached_input_tokens)
        return ((input_tokens - cached) * price.input_per_mtok + cached * price.cached_input
                + output_tokens * price.output_per_mtok) / 1_000_000

    def saving(self, model: str, cached_input_tokens: int) -> float:
        """What the cached input tokens would have cost more at the input price (0 or more). The storage of
        an explicit cache is billed apart, per hour, and is not taken off here."""
        self.check(model)
        price = self._prices[model]
        return max(0, cached_input_tokens) * max(0.0, price.input_per_mtok - price.cached_input) / 1_000_000


def _cached(input_tokens: int, cached_input_tokens: int) -> int:
    # a provider never reports more cached tokens than the prompt had; a count that does is not billed twice
    return min(max(0, cached_input_tokens), max(0, input_tokens))
