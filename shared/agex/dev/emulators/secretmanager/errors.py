"""API errors carried to the client as gRPC status codes."""

from __future__ import annotations

import grpc

from agex.dev.emulators.grpc_service import ApiError, status

__all__ = ["ApiError"]

invalid_argument = status(grpc.StatusCode.INVALID_ARGUMENT)
not_found = status(grpc.StatusCode.NOT_FOUND)
already_exists = status(grpc.StatusCode.ALREADY_EXISTS)
failed_precondition = status(grpc.StatusCode.FAILED_PRECONDITION)
aborted = status(grpc.StatusCode.ABORTED)
unimplemented = status(grpc.StatusCode.UNIMPLEMENTED)


def unauthenticated(message: str = "") -> ApiError:
    return ApiError(grpc.StatusCode.UNAUTHENTICATED, message or UNAUTHENTICATED)


def permission_denied(permission: str, resource: str) -> ApiError:
    # The service never says whether the resource exists when access is
    # denied, so callers cannot probe for secret names they may not see.
    return ApiError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"Permission '{permission}' denied for resource '{resource}' (or it may not exist).",
    )


# Wording follows what the managed service answers, so log-matching and
# error-handling code written against production behaves the same here.
UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential."
)
CONCURRENT_POLICY_CHANGE = (
    "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff."
)


def secret_not_found(name: str) -> ApiError:
    return not_found(f"Secret [{name}] not found.")


def secret_has_no_versions(name: str) -> ApiError:
    return not_found(f"Secret [{name}] not found or has no versions.")


def version_not_found(name: str) -> ApiError:
    return not_found(f"Secret Version [{name}] not found.")


def version_in_state(name: str, state: str) -> ApiError:
    return failed_precondition(f"Secret Version [{name}] is in {state} state.")
