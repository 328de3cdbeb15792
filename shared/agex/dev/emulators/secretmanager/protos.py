"""Protobuf message classes behind the client's proto-plus types.

As in the Cloud Tasks emulator, the raw protobuf classes the client was
generated with are used directly: they keep field presence (``HasField``) and
guarantee the wire format is exactly what the client sends and expects.
IAM messages are plain protobuf in ``google.iam.v1`` already.
"""

from __future__ import annotations

from typing import Any

from google.cloud import secretmanager_v1 as sm
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.protobuf import empty_pb2

Secret = sm.Secret.pb()
SecretVersion = sm.SecretVersion.pb()
SecretPayload = sm.SecretPayload.pb()
ReplicationStatus = sm.ReplicationStatus.pb()

ListSecretsRequest = sm.ListSecretsRequest.pb()
ListSecretsResponse = sm.ListSecretsResponse.pb()
CreateSecretRequest = sm.CreateSecretRequest.pb()
GetSecretRequest = sm.GetSecretRequest.pb()
DeleteSecretRequest = sm.DeleteSecretRequest.pb()
AddSecretVersionRequest = sm.AddSecretVersionRequest.pb()
GetSecretVersionRequest = sm.GetSecretVersionRequest.pb()
ListSecretVersionsRequest = sm.ListSecretVersionsRequest.pb()
ListSecretVersionsResponse = sm.ListSecretVersionsResponse.pb()
AccessSecretVersionRequest = sm.AccessSecretVersionRequest.pb()
AccessSecretVersionResponse = sm.AccessSecretVersionResponse.pb()
EnableSecretVersionRequest = sm.EnableSecretVersionRequest.pb()
DisableSecretVersionRequest = sm.DisableSecretVersionRequest.pb()
DestroySecretVersionRequest = sm.DestroySecretVersionRequest.pb()

Policy = policy_pb2.Policy
GetIamPolicyRequest = iam_policy_pb2.GetIamPolicyRequest
SetIamPolicyRequest = iam_policy_pb2.SetIamPolicyRequest
TestIamPermissionsRequest = iam_policy_pb2.TestIamPermissionsRequest
TestIamPermissionsResponse = iam_policy_pb2.TestIamPermissionsResponse

Empty = empty_pb2.Empty

STATE_ENABLED: int = int(sm.SecretVersion.State.ENABLED)
STATE_DISABLED: int = int(sm.SecretVersion.State.DISABLED)
STATE_DESTROYED: int = int(sm.SecretVersion.State.DESTROYED)


def state_name(value: int) -> str:
    return sm.SecretVersion.State(value).name


def set_timestamp(ts: Any, seconds: float) -> None:
    """Store a wall-clock time, truncated to microseconds like the service."""
    micros = int(seconds * 1_000_000)
    ts.seconds, rem = divmod(micros, 1_000_000)
    ts.nanos = rem * 1000
