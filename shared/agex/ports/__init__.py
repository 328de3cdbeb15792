"""The small interfaces the engine talks to. Each has an in-memory implementation in ``agex.memory``
and a Google Cloud adapter in ``agex.gcp``; ``tests/conformance`` holds each port to one suite."""
