"""schemathesis against the API on the local stack, driven by the OpenAPI document the API serves: every
check, positive and negative data, the examples, coverage, fuzzing and stateful phases (the document's
links: start a run, then read, page and cancel it; list approvals, then read and decide one). A fixed
budget (``tests/fuzz/schemathesis.toml``: deterministic generation, a bounded number of examples per
operation) keeps it to about a minute. Passing means no server error and no response the document does not
allow, and no error in the API's log."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from agex.dev.stack import Stack
from tests.fuzz.conftest import FUZZ_TOKEN, REQUESTER_TOKEN, wait_for

CONFIG = Path(__file__).with_name("schemathesis.toml")
ST = Path(sys.executable).with_name("st")
REFUND = "Please refund order A-1042, the sole split."
"""The sample support agent asks a lead to approve this refund: a pending approval for the links to find,
which the fuzzer (a lead) may decide."""


def test_the_api_keeps_to_its_openapi_document_under_fuzzing(fuzz_stack: Stack, tmp_path: Path) -> None:
    with httpx.Client(base_url=fuzz_stack.api_url, headers={"Authorization": f"Bearer {REQUESTER_TOKEN}"},
                      timeout=30) as http:
        run = http.post("/v1/agents/support/runs", json={"input": REFUND}).json()
        wait_for(http, f"/v1/runs/{run['run_id']}", "waiting_approval")

    result = subprocess.run(
        [str(ST), "--config-file", str(CONFIG), "--no-color", "run", f"{fuzz_stack.api_url}/v1/openapi.json",
         "--checks", "all", "--report", "junit", "--report-dir", str(tmp_path)],
        env={**os.environ, "AGEX_FUZZ_TOKEN": FUZZ_TOKEN, "COLUMNS": "120"}, cwd=tmp_path,
        capture_output=True, text=True, timeout=600, check=False)
    report = result.stdout + result.stderr
    print(report[-4000:])  # the summary, in the test's output (pytest -s, or -rA)
    assert result.returncode == 0, report[-30000:]
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅ +{phase}", report), f"the {phase} phase did not run and pass:\n{report[-5000:]}"
    assert re.search(r"API Links: +[1-9]\d* covered", report), report[-5000:]

    errors = [line for line in (fuzz_stack.config.workdir / "logs" / "api.log").read_text(errors="replace")
              .splitlines() if '"severity": "ERROR"' in line or "Traceback" in line]
    assert not errors, "\n".join(errors[:20])
