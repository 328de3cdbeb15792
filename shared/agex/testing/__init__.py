"""Test doubles that ship with the library, so agent authors can unit-test agents without a model."""

from agex.testing.harness import InMemoryRuntime
from agex.testing.models import FunctionModel, TestModel

__all__ = ["FunctionModel", "InMemoryRuntime", "TestModel"]
