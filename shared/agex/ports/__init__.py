"""The small interfaces the engine talks to, and the rules every backend enforces the same way
(``agex.ports.rules``; the limiter's in ``agex.ports.limiter``). Each port has an in-memory implementation
(``agex.adapters.inmemory``) and a Google Cloud one (``agex.adapters.gcp``); ``tests/conformance`` holds
both to one suite."""
