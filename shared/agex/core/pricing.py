"""Cost of model calls, from a price table in USD per million tokens.

Prices are list prices for the standard tier at the time of writing (paid tier, prompts up to 200k
tokens); teams with negotiated prices pass their own table to ``Pricing``.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from agex.core.errors import ConfigurationError


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_mtok: float
    output_per_mtok: float


DEFAULT_PRICES: Mapping[str, Price] = {
    "gemini-2.5-pro": Price(input_per_mtok=1.25, output_per_mtok=10.0),
    "gemini-2.5-flash": Price(input_per_mtok=0.30, output_per_mtok=2.50),
    "gemini-2.5-flash-lite": Price(input_per_mtok=0.10, output_per_mtok=0.40),
    "gemini-2.0-flash": Price(input_per_mtok=0.10, output_per_mtok=0.40),
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

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        self.check(model)
        price = self._prices[model]
        return (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1_000_000
