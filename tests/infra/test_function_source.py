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
    # long-term memory's default embedder (AGEX_EMBEDDINGS=local) runs in the functions: its extra, as pinned
    embedder = _pins(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
                     ["local-embeddings"])
    assert {k: deployed.get(k) for k in embedder} == embedder, "deploy the local-embeddings extra as pyproject pins it"
    assert extra <= {"opentelemetry-exporter-gcp-trace", "opentelemetry-exporter-gcp-monitoring", *embedder}, f"unexpected deployed-only dependencies: {extra}"
    for name, version in runtime.items():
        assert locked.get(name) == version, f"{name}: pyproject pins {version}, the lock has {locked.get(name)}"


def test_the_source_zip_layout_loads_every_entry_point(tmp_path: Path) -> None:
    """The layout terraform/modules/fleet/storage.tf zips (main.py at the root next to agex/, examples/,
    functions/ and fleet.yaml) imports, and exposes the four entry points the functions are deployed with."""
    import shutil
    import subprocess
    import sys

    src = REPO / "terraform/modules/fleet/src"
    shutil.copy(src / "main.py", tmp_path / "main.py")
    shutil.copy(REPO / "examples/fleet.yaml", tmp_path / "fleet.yaml")
    shutil.copytree(REPO / "shared/agex", tmp_path / "agex", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("api", "step", "approvals", "drift"):
        (tmp_path / "functions" / name).mkdir(parents=True)
        shutil.copy(REPO / "functions" / name / "main.py", tmp_path / "functions" / name / "main.py")
    probe = ("import main; from agex.app.runtime import runtime; "
             "print(sorted(n for n in ('api', 'step', 'approvals', 'drift') if callable(getattr(main, n, None)))); "
             "print(sorted(a.name for a in runtime().agents.all()))")
    env = {"PATH": "/usr/bin:/bin", "AGEX_FLEET_FILE": "fleet.yaml", "AGEX_PROJECT": "p", "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", probe], cwd="/", env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['api', 'approvals', 'drift', 'step']", "['support', 'ticker']"]
