"""Benchmarks of Agent Executor, side by side with LangGraph: ``python -m bench.run`` (docs/performance.md)."""
