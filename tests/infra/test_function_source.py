"""The deployed functions install from terraform/modules/fleet/src/requirements.txt (Cloud Build reads a
requirements.txt in the source); it must pin exactly the runtime dependencies the tests run against."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_the_function_requirements_pin_the_runtime_dependencies_exactly() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    runtime = _pins(project)
    deployed = _pins((REPO / "terraform/modules/fleet/src/requirements.txt").read_text().splitlines())
    locked = _pins((REPO / "requirements.lock").read_text().splitlines())
    assert {k: deployed.get(k) for k in runtime} == runtime, "keep src/requirements.txt in step with pyproject.toml"
    extra = set(deployed) - set(runtime)
    assert extra <= {"opentelemetry-exporter-gcp-trace"}, f"unexpected deployed-only dependencies: {extra}"
    for name, version in runtime.items():
        assert locked.get(name) == version, f"{name}: pyproject pins {version}, the lock has {locked.get(name)}"
