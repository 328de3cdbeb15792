"""Fixtures for the infrastructure checks: the parsed Terraform, the tools venv's binaries."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
TOOLS_BIN = ROOT / ".venv-tools" / "bin"

# Plain Python values: blocks are lists of dicts, labels and string literals without their quotes,
# expressions (and strings with interpolations) as text, e.g. "${google_service_account.step.email}" or
# "serviceAccount:${google_service_account.agent.email}".
HCL_OPTIONS = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True,
                                   preserve_heredocs=False)


def parse_hcl(path: Path) -> dict[str, Any]:
    try:
        return hcl2.loads(path.read_text(), serialization_options=HCL_OPTIONS)
    except Exception as e:  # the parser raises lark's and its own errors
        pytest.fail(f"{path.relative_to(ROOT)} does not parse as HCL: {e}")


def _terraform_paths(pattern: str) -> list[Path]:
    return sorted(p for p in TERRAFORM.rglob(pattern) if ".terraform" not in p.relative_to(TERRAFORM).parts)


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
