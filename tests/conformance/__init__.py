"""Conformance suites: each port held to one set of tests across its implementations."""
