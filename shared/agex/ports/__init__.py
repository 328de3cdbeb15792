"""The small interfaces the engine talks to, and the rules every backend enforces the same way. Each port
has an in-memory implementation (``agex.adapters.inmemory``) and a Google Cloud one
(``agex.adapters.gcp``); ``tests/conformance`` holds both to one suite."""
