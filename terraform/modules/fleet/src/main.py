"""Entry points of the deployed functions: Terraform ships this file as main.py at the root of the source
zip (terraform/modules/fleet/storage.tf), next to agex/, examples/, functions/ and fleet.yaml. Each
function is deployed from the same zip with its own entry point.

``api``, ``step``, ``approvals`` and ``drift`` are loaded from functions/*/main.py, the same files the
local stack runs, so the cloud and ``agex dev`` cannot drift apart. ``drift`` is the drift check Cloud
Scheduler calls on ``drift_schedule`` (terraform/modules/fleet/scheduler.tf): it collects the metrics of
runs that ended, tests each agent version for drift and publishes drift alerts on agex-drift-alerts.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

_ROOT = Path(__file__).resolve().parent

# AGEX_FLEET_FILE=fleet.yaml names the fleet file shipped beside this file, whatever the working directory.
_fleet = os.environ.get("AGEX_FLEET_FILE", "")
if _fleet and not os.path.isabs(_fleet):
    os.environ["AGEX_FLEET_FILE"] = str(_ROOT / _fleet)


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"agex_function_{name}", _ROOT / "functions" / name / "main.py")
    assert spec is not None and spec.loader is not None, f"functions/{name}/main.py is missing from the source"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


api = _load("api").api
step = _load("step").step
approvals = _load("approvals").approvals
drift = _load("drift").drift
