"""What ``agex dev`` runs: which agents (a fleet file, or ``module:attribute`` specs) and which Gemini emulator
scenarios, from its flags, else environment variables, else the current directory.

- agents: ``--fleet FILE`` or ``--agents module:attr[,module:attr]`` (not both); else ``$AGEX_FLEET_FILE`` or
  ``$AGEX_AGENTS`` (the variables the functions read; the fleet file wins, as in the runtime); else
  ``./fleet.yaml``; else ``./examples/fleet.yaml`` (the repository's sample, so ``make dev`` works from its root).
- scenarios: ``--scenarios DIR``; else ``$AGEX_SCENARIOS``; else ``./scenarios``; else ``./examples/scenarios``.

The current directory is the project: its modules are importable by the agents (it comes first on the
functions' ``PYTHONPATH``, before the repository's root).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

FLEET_ENV, AGENTS_ENV, SCENARIOS_ENV = "AGEX_FLEET_FILE", "AGEX_AGENTS", "AGEX_SCENARIOS"
_SPEC = re.compile(r"^[A-Za-z_][\w.]*:\w+$")


class ProjectError(ValueError):
    """The flags, environment and directory do not say what to run; the message says which flag to give."""


@dataclass(frozen=True)
class Project:
    root: Path
    """The user's project (the current directory): importable by its agents, the functions' working directory."""
    fleet_file: Path | None
    """The fleet file, absolute; None when ``agents`` lists the agents."""
    agents: str
    """``module:attribute`` specs, comma-separated, when there is no fleet file."""
    scenarios: Path
    """The Gemini emulator's scenario directory, absolute."""

    def describe(self) -> str:
        what = f"fleet {self.fleet_file}" if self.fleet_file is not None else f"agents {self.agents}"
        return f"{what}; scenarios {self.scenarios}"


def resolve(fleet: str | None = None, agents: str | None = None, scenarios: str | None = None, *,
            cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Project:
    """The project ``agex dev`` runs, from its flags (None when not given), ``env`` (default: this process's)
    and ``cwd`` (default: the current directory)."""
    root = (cwd or Path.cwd()).resolve()
    env = os.environ if env is None else env
    if fleet and agents:
        raise ProjectError("give --fleet FILE or --agents module:attr[,module:attr], not both")
    if not fleet and not agents:
        # as the runtime reads them: a fleet file, when set, is the list of agents
        fleet = env.get(FLEET_ENV) or None
        agents = None if fleet else env.get(AGENTS_ENV) or None
    fleet_file: Path | None = None
    specs = ""
    if fleet:
        fleet_file = _absolute(fleet, root)
        if not fleet_file.is_file():
            raise ProjectError(f"no fleet file {fleet_file}: give --fleet FILE (a fleet file, see docs/tools.md), "
                               "or --agents module:attr[,module:attr]")
    elif agents:
        specs = _specs(agents)
    else:
        fleet_file = next((p for p in (root / "fleet.yaml", root / "examples" / "fleet.yaml") if p.is_file()), None)
        if fleet_file is None:
            raise ProjectError(f"no fleet.yaml in {root}: give --fleet FILE, or --agents module:attr[,module:attr] "
                               "(`agex new NAME` scaffolds an agent with its fleet file)")
    return Project(root=root, fleet_file=fleet_file, agents=specs,
                   scenarios=_scenarios(scenarios or env.get(SCENARIOS_ENV) or None, root))


def _absolute(path: str, root: Path) -> Path:
    p = Path(path).expanduser()
    return (p if p.is_absolute() else root / p).resolve()


def _specs(agents: str) -> str:
    specs = [s.strip() for s in agents.split(",") if s.strip()]
    bad = [s for s in specs if not _SPEC.match(s)]
    if not specs or bad:
        raise ProjectError(f"--agents takes module:attribute specs, comma-separated (like "
                           f"'myagent.agent:agent'), not {', '.join(bad) or repr(agents)}")
    return ",".join(specs)


def _scenarios(given: str | None, root: Path) -> Path:
    if given:
        directory = _absolute(given, root)
        if not directory.is_dir():
            raise ProjectError(f"no scenarios directory {directory}: give --scenarios DIR, a directory of Gemini "
                               "emulator scenarios (agex/dev/emulators/gemini/scenarios/README.md)")
        return directory
    found = next((p for p in (root / "scenarios", root / "examples" / "scenarios") if p.is_dir()), None)
    if found is None:
        raise ProjectError(f"no scenarios directory in {root} (./scenarios): give --scenarios DIR, a directory of "
                           "Gemini emulator scenarios (agex/dev/emulators/gemini/scenarios/README.md)")
    return found.resolve()
