"""Model port: one required method, like pydantic-ai's ``Model.request``; ``stream`` where the provider streams."""

from __future__ import annotations

import abc
from collections.abc import Callable

from agex.core.messages import ModelRequest, ModelResponse

TextSink = Callable[[str], None]
"""Receives each new piece of an answer's text, in order, as the provider sends it."""


class Model(abc.ABC):
    """Raises ``TransientError`` for failures worth retrying (429, 5xx, timeouts) and ``ModelError``
    for requests the model will never accept."""

    @abc.abstractmethod
    def request(self, request: ModelRequest) -> ModelResponse: ...

    def stream(self, request: ModelRequest, on_text: TextSink) -> ModelResponse:
        """``request``, telling ``on_text`` each piece of the answer's text as it arrives. The response is the
        one ``request`` gives. A provider that does not stream hands the text over whole, at the end."""
        response = self.request(request)
        if response.message.text:
            on_text(response.message.text)
        return response
