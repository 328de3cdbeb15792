"""checkov over terraform/ (offline): no failed check unless docs/security.md accepts it with a reason.

Severities come from Prisma Cloud's API (a key and the network), so offline every failed check counts: it
must be listed in docs/security.md, section "Accepted scanner findings", as a table row
`| CHECK_ID | resource | reason |` (resources as checkov names them, comma-separated, with or without the
module path, globs allowed: `google_storage_bucket.source`, `google_pubsub_topic.*`, `*`). A HIGH or CRITICAL finding fails even when listed.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import ROOT, TERRAFORM, tool

SECURITY_DOC = ROOT / "docs" / "security.md"
SECTION = "Accepted scanner findings"


def accepted_findings(doc: Path = SECURITY_DOC) -> dict[tuple[str, str], str]:
    """(check id, resource) -> reason, from the table under the "Accepted scanner findings" heading."""
    if not doc.exists():
        return {}
    accepted: dict[tuple[str, str], str] = {}
    in_section = False
    for line in doc.read_text().splitlines():
        heading = re.match(r"^(#+)\s+(.*?)\s*$", line)
        if heading:
            in_section = heading.group(2).strip().lower() == SECTION.lower()
            continue
        if not in_section or not line.lstrip().startswith("|"):
            continue
        cells = [c.strip().strip("`").strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.fullmatch(r"CKV\d*_[A-Z0-9]+_\d+", cells[0]):
            continue  # the header row, the separator row
        check, reason = cells[0], " | ".join(cells[2:]).strip()
        for resource in (r.strip().strip("`").strip() for r in cells[1].split(",")):
            assert reason, f"{doc}: accepted finding {check} on {resource} has no reason"
            accepted[(check, resource)] = reason
    return accepted


def _resource_names(resource: str) -> set[str]:
    """checkov's resource id and its plain form (module.fleet.google_x.y -> google_x.y, for_each keys dropped)."""
    plain = re.sub(r"\[[^\]]*\]", "", resource)
    return {resource, plain, ".".join(plain.split(".")[-2:])}


def is_accepted(check: dict[str, Any], accepted: dict[tuple[str, str], str]) -> bool:
    """Listed for this check, by resource name or a glob of it (`google_pubsub_topic.*`, `*`)."""
    names = _resource_names(check["resource"])
    return any(check_id == check["check_id"] and any(fnmatch.fnmatchcase(n, pattern) for n in names)
               for check_id, pattern in accepted)


@pytest.fixture(scope="module")
def failed_checks(tf_files: dict[Path, Any]) -> list[dict[str, Any]]:
    result = subprocess.run(
        [tool("checkov"), "-d", str(TERRAFORM), "--framework", "terraform", "--quiet", "-o", "json", "--compact",
         "--skip-download"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode in (0, 1), f"checkov failed ({result.returncode}):\n{result.stderr[-4000:]}"
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov's output is not JSON:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    reports = report if isinstance(report, list) else [report]
    if not any(isinstance(r, dict) and r.get("check_type") == "terraform" for r in reports):
        pytest.fail(f"checkov scanned no Terraform ({len(tf_files)} .tf files): {str(report)[:2000]}")
    return [c for r in reports for c in r.get("results", {}).get("failed_checks", [])]


def _describe(c: dict[str, Any]) -> str:
    lines = c.get("file_line_range") or ["?"]
    return f"{c['check_id']} {c['resource']} ({c.get('file_path')}:{lines[0]}): {c.get('check_name')}"


def test_no_high_or_critical_findings(failed_checks: list[dict[str, Any]]) -> None:
    severe = [_describe(c) for c in failed_checks if str(c.get("severity") or "").upper() in ("HIGH", "CRITICAL")]
    assert not severe, "HIGH/CRITICAL checkov findings:\n" + "\n".join(severe)


def test_every_finding_is_accepted_with_a_reason(failed_checks: list[dict[str, Any]]) -> None:
    accepted = accepted_findings()
    unaccepted = sorted({_describe(c) for c in failed_checks if not is_accepted(c, accepted)})
    assert not unaccepted, (f"checkov findings not accepted in {SECURITY_DOC.relative_to(ROOT)} "
                            f"(\"{SECTION}\": | check | resource | reason |):\n" + "\n".join(unaccepted))


def test_accepted_findings_table_is_parsed(tmp_path: Path) -> None:
    doc = tmp_path / "security.md"
    doc.write_text("# Security\n\n## Accepted scanner findings\n\n| Check | Resource | Reason |\n| --- | --- | --- |\n"
                   "| CKV_GCP_62 | `google_storage_bucket.source` | access logs: the bucket holds only code |\n"
                   "\n## Other\n\n| CKV_GCP_1 | x.y | not in the section |\n")
    accepted = accepted_findings(doc)
    assert accepted == {("CKV_GCP_62", "google_storage_bucket.source"): "access logs: the bucket holds only code"}
    check = {"check_id": "CKV_GCP_62", "resource": "module.fleet.google_storage_bucket.source"}
    assert is_accepted(check, accepted)
    assert is_accepted({"check_id": "CKV_GCP_83", "resource": 'module.fleet.google_pubsub_topic.a["x"]'},
                       {("CKV_GCP_83", "google_pubsub_topic.*"): "CMEK"})
    assert not is_accepted({**check, "check_id": "CKV_GCP_1"}, accepted)
