"""Per-secret IAM: predefined roles, member matching, policy validation.

Only secret-level policies exist here. Project-level grants (what Terraform's
deploy identity has) are modelled by the ``--admin`` identities, which hold
every permission; everyone else gets exactly what the secret's policy grants.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import invalid_argument

ACCESS = "secretmanager.versions.access"
VERSIONS_ADD = "secretmanager.versions.add"
VERSIONS_GET = "secretmanager.versions.get"
VERSIONS_LIST = "secretmanager.versions.list"
VERSIONS_ENABLE = "secretmanager.versions.enable"
VERSIONS_DISABLE = "secretmanager.versions.disable"
VERSIONS_DESTROY = "secretmanager.versions.destroy"
SECRETS_CREATE = "secretmanager.secrets.create"
SECRETS_GET = "secretmanager.secrets.get"
SECRETS_LIST = "secretmanager.secrets.list"
SECRETS_UPDATE = "secretmanager.secrets.update"
SECRETS_DELETE = "secretmanager.secrets.delete"
GET_IAM_POLICY = "secretmanager.secrets.getIamPolicy"
SET_IAM_POLICY = "secretmanager.secrets.setIamPolicy"

ALL_PERMISSIONS = frozenset(
    {
        ACCESS,
        VERSIONS_ADD,
        VERSIONS_GET,
        VERSIONS_LIST,
        VERSIONS_ENABLE,
        VERSIONS_DISABLE,
        VERSIONS_DESTROY,
        SECRETS_CREATE,
        SECRETS_GET,
        SECRETS_LIST,
        SECRETS_UPDATE,
        SECRETS_DELETE,
        GET_IAM_POLICY,
        SET_IAM_POLICY,
    }
)

_VIEWER = frozenset({SECRETS_GET, SECRETS_LIST, VERSIONS_GET, VERSIONS_LIST})

# The Secret Manager subset of the predefined roles; version manager does not
# include access, exactly as in the real role definitions.
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "roles/secretmanager.secretAccessor": frozenset({ACCESS}),
    "roles/secretmanager.secretVersionAdder": frozenset({VERSIONS_ADD}),
    "roles/secretmanager.viewer": _VIEWER,
    "roles/secretmanager.secretVersionManager": _VIEWER
    | {VERSIONS_ADD, VERSIONS_ENABLE, VERSIONS_DISABLE, VERSIONS_DESTROY},
    "roles/secretmanager.admin": ALL_PERMISSIONS,
    "roles/owner": ALL_PERMISSIONS,
    "roles/editor": ALL_PERMISSIONS - {GET_IAM_POLICY, SET_IAM_POLICY},
    "roles/viewer": _VIEWER,
}

_MEMBER_PREFIXES = ("user:", "serviceAccount:", "group:", "domain:", "principal:", "principalSet:")
_SPECIAL_MEMBERS = ("allUsers", "allAuthenticatedUsers")


def _member_matches(member: str, email: str) -> bool:
    kind, _, value = member.partition(":")
    # Locally a token does not say whether it is a user or a service account,
    # so both member kinds match the email.
    if kind in ("user", "serviceAccount"):
        return value.lower() == email.lower()
    if kind == "domain":
        return email.lower().endswith("@" + value.lower())
    return member in _SPECIAL_MEMBERS  # groups cannot be resolved locally: never match


def permissions_of(policy: Any, email: str) -> set[str]:
    granted: set[str] = set()
    for binding in policy.bindings:
        if any(_member_matches(m, email) for m in binding.members):
            granted |= ROLE_PERMISSIONS.get(binding.role, frozenset())
    return granted


def validate_policy(policy: Any) -> None:
    if policy.version not in (0, 1, 3):
        raise invalid_argument(f"Invalid policy version {policy.version}.")
    for binding in policy.bindings:
        if binding.HasField("condition"):
            # Conditions cannot be evaluated here; refusing beats granting or
            # denying silently differently from production.
            raise invalid_argument("Conditional role bindings are not supported by the emulator.")
        if binding.role not in ROLE_PERMISSIONS:
            raise invalid_argument(f"Role {binding.role} is not supported for this resource.")
        for member in binding.members:
            if member not in _SPECIAL_MEMBERS and not (
                member.startswith(_MEMBER_PREFIXES) and member.partition(":")[2]
            ):
                raise invalid_argument(f"Invalid member {member!r} in binding for {binding.role}.")


def new_etag() -> bytes:
    # Fresh on every write, so an etag read before any change is stale after it,
    # even when the new policy has the same content.
    return os.urandom(8)
