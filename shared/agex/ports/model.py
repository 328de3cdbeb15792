"""Model port: one required method, like pydantic-ai's ``Model.request``."""

from __future__ import annotations

import abc

from agex.core.messages import ModelRequest, ModelResponse


class Model(abc.ABC):
    """Raises ``TransientError`` for failures worth retrying (429, 5xx, timeouts) and ``ModelError``
    for requests the model will never accept."""

    @abc.abstractmethod
    def request(self, request: ModelRequest) -> ModelResponse: ...
