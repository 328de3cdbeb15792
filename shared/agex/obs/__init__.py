"""Observability: Cloud Logging JSON logs and one trace per run."""
