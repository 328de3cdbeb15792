"""Agent Executor: a durable, governed runtime for LLM agents on Google Cloud."""

__version__ = "0.1.0"
