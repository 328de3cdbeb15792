"""Whether a deploy may drop an agent version: never while a run that has not ended still names it.

A run finishes on the version it started with (docs/versions.md), so the fleet file keeps serving earlier
versions (``previous_versions``) until their runs end. This check compares the versions a fleet file serves
with the unfinished runs of every tenant; the deploy runs it before it applies, and refuses to drop a version
some run still needs, unless a migration rule moves that version's runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from agex.core.agent import AgentRegistry
from agex.ports.checkpoint_store import CheckpointStore


@dataclass(frozen=True)
class Stranded:
    """Runs that have not ended on a version the fleet would no longer serve."""

    agent: str
    version: str
    runs: int

    def describe(self) -> str:
        return (f"agent {self.agent!r} version {self.version!r}: {self.runs} unfinished run(s) would no longer be "
                "served; keep it in previous_versions until they end, or declare a migration rule for it")


def stranded(registry: AgentRegistry, store: CheckpointStore) -> list[Stranded]:
    """The versions ``registry`` would stop serving while unfinished runs (of any tenant) still need them."""
    found = []
    for (agent, version), runs in sorted(store.unfinished_versions().items()):
        served = {a.name for a in registry.all()}
        if agent in served and (registry.version(agent, version) is not None
                                or registry.migration(agent, version) is not None):
            continue
        found.append(Stranded(agent, version, runs))
    return found
