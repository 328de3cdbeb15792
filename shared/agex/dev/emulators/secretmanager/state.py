"""In-memory secrets, versions and policies behind one lock.

Authorization is not done here: the service layer asks for a secret's policy
first, then calls the operation. Returned messages are copies so callers can
never mutate stored state.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import google_crc32c

from . import iam, names, protos
from .errors import (
    CONCURRENT_POLICY_CHANGE,
    aborted,
    already_exists,
    invalid_argument,
    secret_has_no_versions,
    secret_not_found,
    unimplemented,
    version_in_state,
    version_not_found,
)

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_PAGE_SIZE = 25000
# Secret fields with behaviour the emulator does not model (expiry, rotation
# notifications, aliases, CMEK): refused rather than stored and ignored.
_UNSUPPORTED_REPEATED_FIELDS = ("topics", "version_aliases")
_UNSUPPORTED_SECRET_FIELDS = (
    "expire_time",
    "ttl",
    "rotation",
    "version_destroy_ttl",
    "customer_managed_encryption",
)


@dataclass
class _Version:
    msg: Any  # SecretVersion
    data: bytes | None  # None once destroyed


@dataclass
class _Secret:
    msg: Any  # Secret
    policy: Any  # Policy
    versions: dict[int, _Version] = field(default_factory=dict)
    next_version: int = 1  # numbers are never reused, even after destroy


@dataclass
class Page:
    items: list[Any]
    next_token: str
    total: int


def _copy(msg: Any) -> Any:
    out = type(msg)()
    out.CopyFrom(msg)
    return out


def _etag() -> str:
    # The service uses quoted, opaque etags on secrets and versions.
    return f'"{time.time_ns():x}"'


def _page_size(size: int) -> int:
    if size < 0:
        raise invalid_argument("page_size must not be negative.")
    return min(size, MAX_PAGE_SIZE) if size else MAX_PAGE_SIZE


def _encode_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise invalid_argument(f"Invalid page token {token!r}.") from None


def _reject_filter(filter_: str) -> None:
    if filter_:
        raise unimplemented("List filters are not supported by the emulator.")


class Store:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, _Secret] = {}

    # -- secrets -----------------------------------------------------------------

    def policy(self, secret_name: str) -> Any | None:
        with self._lock:
            s = self._secrets.get(secret_name)
            return _copy(s.policy) if s else None

    def create_secret(self, parent: str, secret_id: str, secret: Any) -> Any:
        names.parse_project(parent)
        if not names.SECRET_ID.match(secret_id):
            raise invalid_argument(
                "Secret ID must contain only letters, digits, '-' and '_', and be at most 255 characters."
            )
        unsupported = [f for f in _UNSUPPORTED_SECRET_FIELDS if secret.HasField(f)]
        unsupported += [f for f in _UNSUPPORTED_REPEATED_FIELDS if len(getattr(secret, f))]
        if unsupported:
            raise unimplemented(f"Secret.{unsupported[0]} is not supported by the emulator.")
        if not secret.replication.HasField("automatic") and not secret.replication.HasField("user_managed"):
            raise invalid_argument("Secret.replication must be set (automatic or user_managed).")
        if secret.replication.HasField("user_managed") and not secret.replication.user_managed.replicas:
            raise invalid_argument("Secret.replication.user_managed.replicas must not be empty.")
        name = f"{parent}/secrets/{secret_id}"
        msg = protos.Secret(name=name, replication=secret.replication, etag=_etag())
        msg.labels.update(secret.labels)
        msg.annotations.update(secret.annotations)
        protos.set_timestamp(msg.create_time, time.time())
        with self._lock:
            if name in self._secrets:
                raise already_exists(f"Secret [{name}] already exists.")
            self._secrets[name] = _Secret(msg, protos.Policy(version=1, etag=iam.new_etag()))
            return _copy(msg)

    def get_secret(self, name: str) -> Any:
        with self._lock:
            return _copy(self._secret(name).msg)

    def list_secrets(self, parent: str, page_size: int, page_token: str, filter_: str) -> Page:
        names.parse_project(parent)
        _reject_filter(filter_)
        size = _page_size(page_size)
        after = _decode_token(page_token) if page_token else ""
        with self._lock:
            all_names = sorted(n for n in self._secrets if n.startswith(parent + "/secrets/"))
            rest = [n for n in all_names if n > after]
            chosen = rest[:size]
            items = [_copy(self._secrets[n].msg) for n in chosen]
        token = _encode_token(chosen[-1]) if len(rest) > size else ""
        return Page(items, token, len(all_names))

    def delete_secret(self, name: str, etag: str) -> None:
        with self._lock:
            s = self._secret(name)
            if etag and etag != s.msg.etag:
                raise aborted(f"The etag provided for Secret [{name}] does not match the current etag.")
            del self._secrets[name]

    def get_iam_policy(self, name: str) -> Any:
        with self._lock:
            return _copy(self._secret(name).policy)

    def set_iam_policy(self, name: str, policy: Any) -> Any:
        iam.validate_policy(policy)
        with self._lock:
            s = self._secret(name)
            if policy.etag and policy.etag != s.policy.etag:
                raise aborted(CONCURRENT_POLICY_CHANGE)
            stored = _copy(policy)
            stored.version = 1
            stored.etag = iam.new_etag()
            s.policy = stored
            return _copy(stored)

    # -- versions ----------------------------------------------------------------

    def add_version(self, parent: str, payload: Any) -> Any:
        names.parse_secret(parent)
        data = payload.data
        if len(data) > MAX_PAYLOAD_BYTES:
            raise invalid_argument(
                f"Secret payload is {len(data)} bytes; the maximum is {MAX_PAYLOAD_BYTES} bytes."
            )
        checked = payload.HasField("data_crc32c")
        if checked and payload.data_crc32c != google_crc32c.value(data):
            raise invalid_argument("Checksum mismatch: data_crc32c does not match the CRC32C of data.")
        with self._lock:
            s = self._secret(parent)
            number = s.next_version
            s.next_version += 1
            msg = protos.SecretVersion(
                name=f"{parent}/versions/{number}",
                state=protos.STATE_ENABLED,
                etag=_etag(),
                client_specified_payload_checksum=checked,
            )
            protos.set_timestamp(msg.create_time, time.time())
            if s.msg.replication.HasField("automatic"):
                msg.replication_status.automatic.SetInParent()
            else:
                for replica in s.msg.replication.user_managed.replicas:
                    msg.replication_status.user_managed.replicas.add(location=replica.location)
            s.versions[number] = _Version(msg, bytes(data))
            return _copy(msg)

    def get_version(self, name: str) -> Any:
        with self._lock:
            return _copy(self._version(name).msg)

    def access_version(self, name: str) -> tuple[str, bytes]:
        with self._lock:
            v = self._version(name)
            if v.msg.state != protos.STATE_ENABLED or v.data is None:
                raise version_in_state(v.msg.name, protos.state_name(v.msg.state))
            return v.msg.name, v.data

    def list_versions(self, parent: str, page_size: int, page_token: str, filter_: str) -> Page:
        names.parse_secret(parent)
        _reject_filter(filter_)
        size = _page_size(page_size)
        if page_token:
            try:
                below = int(_decode_token(page_token))
            except ValueError:
                raise invalid_argument(f"Invalid page token {page_token!r}.") from None
        else:
            below = None
        with self._lock:
            s = self._secret(parent)
            numbers = sorted(s.versions, reverse=True)  # newest first, as the service lists
            rest = [n for n in numbers if below is None or n < below]
            chosen = rest[:size]
            items = [_copy(s.versions[n].msg) for n in chosen]
        token = _encode_token(str(chosen[-1])) if len(rest) > size else ""
        return Page(items, token, len(numbers))

    def set_version_state(self, name: str, state: int, etag: str) -> Any:
        with self._lock:
            v = self._version(name)
            if etag and etag != v.msg.etag:
                raise aborted(f"The etag provided for Secret Version [{v.msg.name}] does not match.")
            if v.msg.state == protos.STATE_DESTROYED:
                # Destruction is final: nothing brings the payload back.
                raise version_in_state(v.msg.name, "DESTROYED")
            if v.msg.state != state:
                v.msg.state = state
                v.msg.etag = _etag()
                if state == protos.STATE_DESTROYED:
                    v.data = None
                    protos.set_timestamp(v.msg.destroy_time, time.time())
            return _copy(v.msg)

    # -- lookups (lock held) -----------------------------------------------------

    def _secret(self, name: str) -> _Secret:
        names.parse_secret(name)
        s = self._secrets.get(name)
        if s is None:
            raise secret_not_found(name)
        return s

    def _version(self, name: str) -> _Version:
        vn = names.parse_version(name)
        s = self._secrets.get(vn.secret)
        if s is None:
            raise (
                secret_has_no_versions(vn.secret)
                if vn.version == names.LATEST
                else secret_not_found(vn.secret)
            )
        if vn.version == names.LATEST:
            # "latest" is the most recently *created* version whatever its
            # state, as in the service: a disabled newest version makes
            # "latest" fail rather than fall back to an older one.
            if not s.versions:
                raise secret_has_no_versions(vn.secret)
            return s.versions[max(s.versions)]
        if not vn.version.isdigit() or int(vn.version) not in s.versions:
            raise version_not_found(name)
        return s.versions[int(vn.version)]
