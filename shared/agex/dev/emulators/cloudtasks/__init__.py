"""Local Cloud Tasks (API v2) emulator.

The unmodified ``google-cloud-tasks`` client talks to it over gRPC, and it
pushes due tasks to their HTTP targets with the same headers, retries, rate
limits and OIDC tokens as the managed service, so code that enqueues and
handles tasks can be exercised end to end without Google Cloud.

Run it with ``python -m agex.dev.emulators.cloudtasks --port 8123 --http-port 8124``.
"""
