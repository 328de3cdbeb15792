"""Secret store port: tool credentials, read with the identity of the agent whose tool needs them
(Secret Manager in the cloud)."""

from __future__ import annotations

import abc


class SecretStore(abc.ABC):
    @abc.abstractmethod
    def access(self, identity: str, secret: str) -> str:
        """The value of the ``latest`` version of ``secret`` (a secret id in the deployment's project),
        read as ``identity`` (an agent's service account email).

        Raise ``SecretAccessDenied`` when ``identity`` holds no grant to read it (Secret Manager answers
        the same for a secret that does not exist and one it may not see), ``SecretUnavailable`` when
        the latest version is disabled or destroyed, ``SecretNotFound`` when the store can tell the
        secret is missing, ``TransientError`` when the store cannot be reached. Each error names the
        secret and the identity, never a value."""
