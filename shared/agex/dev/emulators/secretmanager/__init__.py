"""Local Secret Manager (API v1) emulator.

The unmodified ``google-cloud-secret-manager`` client talks to it over gRPC.
Secrets, versions and per-secret IAM policies live in memory; the caller's
identity comes from the bearer token, so code that reads secrets as a given
service account can be checked against the grants Terraform would make.

Run it with ``python -m agex.dev.emulators.secretmanager --port 8086``.
"""
