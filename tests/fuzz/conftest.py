"""The fuzz tests' own local stack (every emulator and function, as in the e2e tests, with the sample fleet):
schemathesis creates runs by the dozen, and they must not share a stack, or a tenant, with the tests that
count what a stack did."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from agex.dev.emulators.gcloud import free_port
from agex.dev.stack import Stack, StackConfig

FUZZ_TOKEN = "fuzz-token"
"""The fuzzer's: a support lead (an approver of the sample support agent's refunds) of tenant ``fuzz``, where
everything the fuzzer creates is."""
REQUESTER_TOKEN = "requester-token"
"""Who starts the run whose approval the fuzzer finds (four eyes: not the lead)."""
TOKENS = f"{FUZZ_TOKEN}=fuzz:lead@leads.example.com,{REQUESTER_TOKEN}=fuzz:requester@example.com"


@pytest.fixture(scope="session")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # a followed or awaited run answers within seconds, whatever the fuzzer asks
    env = {"AGEX_REQUEST_TIMEOUT_SECONDS": "5", "AGEX_STREAM_MAX_SECONDS": "3", "AGEX_MAX_WAIT_SECONDS": "2"}
    config = StackConfig(api_port=free_port(), workdir=tmp_path_factory.mktemp("fuzz-stack"), dev_tokens=TOKENS,
                         sweep_every_seconds=5.0, extra_env=env)
    with Stack(config) as stack:
        yield stack


def wait_for(http: httpx.Client, path: str, done: str, timeout: float = 60.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        body = http.get(path).json()
        if body.get("status") == done:
            return body  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"{path} is {body.get('status')}, not {done}, after {timeout} s"
        time.sleep(0.3)
