"""Fixtures for the infrastructure checks: the parsed Terraform, the tools venv's binaries."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from scripts.tf_hcl import HCL_OPTIONS, ROOT, TERRAFORM, HclError, load, terraform_paths

TOOLS_BIN = ROOT / ".venv-tools" / "bin"


def parse_hcl(path: Path) -> dict[str, Any]:
    try:
        return load(path, HCL_OPTIONS)
    except HclError as e:
        pytest.fail(f"{path.relative_to(ROOT)} does not parse as HCL: {e.__cause__}")


def _terraform_paths(pattern: str) -> list[Path]:
    return terraform_paths(pattern, TERRAFORM)


@pytest.fixture(scope="session")
def tf_files() -> dict[Path, dict[str, Any]]:
    """Every .tf file under terraform/ (relative path -> parsed)."""
    paths = _terraform_paths("*.tf")
    if not paths:
        pytest.fail(f"no .tf files under {TERRAFORM}: the Terraform is missing")
    return {p.relative_to(ROOT): parse_hcl(p) for p in paths}


@pytest.fixture(scope="session")
def tfvars_files() -> dict[Path, dict[str, Any]]:
    return {p.relative_to(ROOT): parse_hcl(p) for p in _terraform_paths("*.tfvars")}


def tool(name: str) -> str:
    """A binary of the tools venv (`make tools`), else one on PATH; fail (never skip) when missing."""
    env = os.environ.get(name.upper())
    if env:
        return env
    candidate = TOOLS_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"{name} is not installed: run `make tools` (creates .venv-tools from requirements-tools.txt)")
