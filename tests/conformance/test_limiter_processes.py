"""The shared limiters hold their limits across processes, not only across threads: two separate Python
processes (as two step-function instances would be) contend for one tool's single slot, in Firestore and
in Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

_WORKER = textwrap.dedent("""
    import json, sys, time
    from datetime import UTC, datetime
    from agex.ports.limiter import Permit
    from agex.tools import ToolLimits

    backend, where, prefix, me, calls = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    if backend == "redis":
        from agex.adapters.redis.limiter import RedisLimiter
        limiter = RedisLimiter.from_url(where, prefix=prefix)
    else:
        from agex.adapters.gcp.firestore_limiter import FirestoreLimiter
        limiter = FirestoreLimiter(project="agex-test", prefix=prefix)
    limits = ToolLimits(max_concurrent=1)
    held, waits = [], 0
    while len(held) < calls:
        permit = limiter.acquire("single", limits, f"{me}-{len(held)}", datetime.now(UTC), lease_s=30)
        if not isinstance(permit, Permit):
            waits += 1
            time.sleep(0.01)
            continue
        start = time.time()
        time.sleep(0.05)
        held.append((start, time.time()))
        limiter.release(permit)
    print(json.dumps({"held": held, "waits": waits}))
""")


@pytest.mark.parametrize("backend", ["firestore", "redis"])
def test_one_slot_is_never_held_by_two_processes_at_once(backend: str, request: pytest.FixtureRequest) -> None:
    where = request.getfixturevalue("redis_url" if backend == "redis" else "firestore_emulator")
    prefix = f"p{uuid.uuid4().hex[:8]}_"
    env = {**os.environ, "FIRESTORE_EMULATOR_HOST": where} if backend == "firestore" else None
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, backend, where, prefix, name, "8"], env=env,
                                stdout=subprocess.PIPE, text=True) for name in ("a", "b")]
    results = []
    for worker in workers:
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0
        results.append(json.loads(out))
    intervals = sorted(interval for r in results for interval in r["held"])
    assert len(intervals) == 16
    for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
        assert start >= end - 0.005, "two processes held the one slot at the same time"
    assert sum(r["waits"] for r in results) > 0, "the processes did contend"
