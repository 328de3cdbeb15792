"""In-memory implementations of the ports: real implementations, held to the same conformance suite
as the Google adapters, for unit tests and for embedding the engine in one process."""
