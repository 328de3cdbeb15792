"""The platform floor: what one hop of a serverless step costs when the step does nothing else.

A hop is what every Agent Executor step pays at the least: Cloud Tasks delivers it over HTTP to a function,
the function commits its state to Firestore and enqueues the next hop. Here the function does only that:
- the Firestore emulator (the SDK's), reached with the real ``google-cloud-firestore`` client;
- our Cloud Tasks emulator (``agex.dev.emulators.cloudtasks``), reached with the real ``google-cloud-tasks``
  client, with named HTTP tasks and an OIDC token as ``agex.adapters.gcp.cloud_tasks`` creates them (the
  function does not check the token: in the cloud, Cloud Run's front end does);
- the function, ``hop`` below, under functions-framework (gunicorn, one worker, as the local stack serves the
  step function), on 127.0.0.1: on each delivery it commits one small document (one ``set``: one Commit
  RPC) and creates the task of the next hop.

A second chain has the *shape of a step* (``--floor-hops`` hops too): each hop reads one document, makes two
commits (of 2.5 KB each: a model response's and a tool result's size in the bench loop) and enqueues the next
hop with a 37 KB body (the carried window's size at a full window). It is the I/O a step of Agent Executor
does (one read, two commits, one enqueue), with nothing else: the least a step with that protocol can cost on
these emulators, whatever the runtime.

A chain of N hops runs after a warm-up chain. The function stamps each hop (entry, commit done, next task
created) and keeps the stamps in memory; the bench reads them over HTTP after the chain. Per hop: the time
between the entries of consecutive hops, split into the commit and the rest (commit done -> next entry: the
enqueue, the emulator's scheduling, the OIDC token, HTTP into gunicorn). The enqueue's own round trip is
given too; it overlaps the dispatch, which the emulator starts as soon as the task exists, before the
client has its answer.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import firestore_emulator, mean, percentile

REPO = Path(__file__).resolve().parents[1]
HOPS = 200
STEP_TASK_BYTES = 37_000
"""The step-shaped chain's task body: the carried window at a full window of the bench loop."""
SERVICE_ACCOUNT = "agex-step@agex-bench.iam.gserviceaccount.com"

# --- the function (runs in the functions-framework process) --------------------------------------------

_STAMPS: dict[str, list[dict[str, Any]]] = {}
_LOCK = threading.Lock()


@functools.cache
def _clients() -> tuple[Any, Any]:
    from google.cloud import firestore

    from agex.adapters.gcp.cloud_tasks import make_client

    return firestore.Client(project=os.environ["FLOOR_PROJECT"]), make_client(os.environ["FLOOR_TASKS_HOST"])


def _task(queue: str, url: str, chain: str, hop_no: int, hops: int, shape: str = "hop", pad: int = 0) -> Any:
    from google.cloud import tasks_v2

    body = json.dumps({"chain": chain, "hop": hop_no, "hops": hops, "shape": shape, "pad": pad,
                       "window": "w" * pad}).encode()
    return tasks_v2.Task(name=f"{queue}/tasks/{chain}-{hop_no:05d}", http_request=tasks_v2.HttpRequest(
        http_method=tasks_v2.HttpMethod.POST, url=url, body=body, headers={"Content-Type": "application/json"},
        oidc_token=tasks_v2.OidcToken(service_account_email=SERVICE_ACCOUNT, audience=url)))


def hop(request: Any) -> Any:
    """POST (a task): commit one document, enqueue the next hop. GET: ``Ok``, or ``?chain=ID``: its stamps."""
    t_in = time.time()
    if request.method != "POST":
        chain = request.args.get("chain")
        if not chain:
            return "Ok"
        with _LOCK:
            return {"stamps": list(_STAMPS.get(chain, []))}
    body = request.get_json(force=True)
    chain, k, hops = str(body["chain"]), int(body["hop"]), int(body["hops"])
    shape, pad = str(body.get("shape", "hop")), int(body.get("pad", 0))
    db, tasks = _clients()
    docs = db.collection(os.environ["FLOOR_COLLECTION"])
    if shape == "step":  # a step's I/O: read the head, commit the response, commit the result
        docs.document(f"{chain}-head").get()
        docs.document(f"{chain}-{k:05d}-a").set({"chain": chain, "hop": k, "at": t_in, "pad": "r" * 2500})
        docs.document(f"{chain}-{k:05d}-b").set({"chain": chain, "hop": k, "at": t_in, "pad": "t" * 2500})
    else:
        docs.document(f"{chain}-{k:05d}").set({"chain": chain, "hop": k, "at": t_in})
    t_commit = time.time()
    if k < hops:
        queue = os.environ["FLOOR_QUEUE"]
        tasks.create_task(parent=queue, task=_task(queue, os.environ["FLOOR_URL"], chain, k + 1, hops, shape, pad))
    t_enqueued = time.time()
    with _LOCK:
        _STAMPS.setdefault(chain, []).append({"hop": k, "in": t_in, "committed": t_commit, "enqueued": t_enqueued})
    return "", 204


# --- the bench -----------------------------------------------------------------------------------------


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - loopback only
        return json.loads(r.read())


def _chain(tasks: Any, queue: str, url: str, hops: int, timeout: float, shape: str = "hop",
           pad: int = 0) -> dict[str, Any]:
    chain = f"c{uuid.uuid4().hex[:10]}"
    t0 = time.time()
    tasks.create_task(parent=queue, task=_task(queue, url, chain, 1, hops, shape, pad))
    deadline = time.monotonic() + timeout
    stamps: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        time.sleep(0.25)
        stamps = _get_json(f"{url}?chain={chain}")["stamps"]
        if len(stamps) >= hops:
            break
    stamps.sort(key=lambda s: s["hop"])
    return {"chain": chain, "first_enqueued_at": t0, "stamps": stamps, "complete": len(stamps) >= hops}


def _analyse(chain: dict[str, Any], hops: int) -> dict[str, Any]:
    s = chain["stamps"]
    per_hop = []
    for a, b in zip(s, s[1:], strict=False):
        per_hop.append({"hop": b["hop"], "ms": (b["in"] - a["in"]) * 1000,
                        "commit_ms": (a["committed"] - a["in"]) * 1000,
                        "enqueue_ms": (a["enqueued"] - a["committed"]) * 1000,
                        "commit_to_next_ms": (b["in"] - a["committed"]) * 1000})

    def stats(key: str) -> dict[str, float | None]:
        v = [h[key] for h in per_hop]
        return {"median": percentile(v, 50), "p90": percentile(v, 90), "mean": mean(v) if v else None,
                "min": min(v) if v else None, "max": max(v) if v else None}

    return {"hops": hops, "hops_seen": len(s), "complete": chain["complete"], "intervals": len(per_hop),
            "per_hop_ms": stats("ms"), "commit_ms": stats("commit_ms"), "enqueue_ms": stats("enqueue_ms"),
            "commit_to_next_ms": stats("commit_to_next_ms"),
            "first_dispatch_ms": (s[0]["in"] - chain["first_enqueued_at"]) * 1000 if s else None,
            "span_s": (s[-1]["enqueued"] - s[0]["in"]) if s else None, "per_hop": per_hop}


def run(hops: int = HOPS, *, warmup_hops: int = 20, progress: Callable[[str], None] = print) -> dict[str, Any]:
    from agex.adapters.gcp.cloud_tasks import ensure_queue, make_client
    from agex.dev.emulators.gcloud import HOST, free_port, spawn_and_wait, start_python_emulator

    project = "agex-bench"
    t_start = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="agex-bench-floor-"))
    procs: list[Any] = []
    try:
        with firestore_emulator(progress, project=project):
            tasks_emu = start_python_emulator("agex.dev.emulators.cloudtasks",
                                              ["--host", HOST, "--port", "0", "--http-port", "0"],
                                              log_path=str(workdir / "cloudtasks.log"), cwd=str(REPO))
            procs.append(tasks_emu)
            tasks_host = tasks_emu.endpoints["grpc"]
            tasks = make_client(tasks_host)
            queue = tasks.queue_path(project, "us-central1", "floor")
            ensure_queue(tasks, queue)
            port = free_port()
            url = f"http://{HOST}:{port}/"
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), "WORKERS": "1",
                   "FLOOR_PROJECT": project, "FLOOR_TASKS_HOST": tasks_host, "FLOOR_QUEUE": queue, "FLOOR_URL": url,
                   "FLOOR_COLLECTION": f"floor_{uuid.uuid4().hex[:8]}"}
            argv = [sys.executable, "-m", "functions_framework", "--target", "hop", "--source", str(Path(__file__)),
                    "--host", HOST, "--port", str(port)]
            fn = spawn_and_wait("floor-hop", argv, port, str(workdir / "hop.log"), 60, env=env, cwd=str(REPO))
            procs.append(fn)
            progress(f"  Cloud Tasks emulator on {tasks_host}, hop function on {url}")
            progress(f"  warm-up chain ({warmup_hops} hops)")
            warm = _analyse(_chain(tasks, queue, url, warmup_hops, 120), warmup_hops)
            progress(f"  measured chain ({hops} hops)")
            measured = _analyse(_chain(tasks, queue, url, hops, max(120.0, hops * 1.0)), hops)
            if not measured["complete"]:
                tail = fn.log_tail(20)
                raise RuntimeError(f"the chain stopped at hop {measured['hops_seen']} of {hops}; function log:\n{tail}")
            progress(f"  step-shaped chain ({hops} hops: a read, two commits, a {STEP_TASK_BYTES:,}-byte task)")
            _chain(tasks, queue, url, warmup_hops, 120, "step", STEP_TASK_BYTES)
            step_shaped = _analyse(_chain(tasks, queue, url, hops, max(120.0, hops * 1.0), "step", STEP_TASK_BYTES),
                                   hops)
    finally:
        for p in reversed(procs):
            p.stop(grace=3.0)
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "system": "platform floor (emulators)",
        "hop": "Cloud Tasks emulator dispatch (HTTP, OIDC token) -> functions-framework function -> one Firestore "
               "commit (one small document, emulator) -> create the next named task",
        "warmup": {k: warm[k] for k in ("hops", "complete", "per_hop_ms")},
        **measured,
        "step_shaped": {"hop": f"the same, but one read, two commits of 2.5 KB and a {STEP_TASK_BYTES:,}-byte task: "
                               "a step's I/O with nothing else",
                        **{k: step_shaped[k] for k in ("hops", "hops_seen", "complete", "per_hop_ms", "commit_ms",
                                                        "enqueue_ms", "commit_to_next_ms")}},
        "seconds_total": time.perf_counter() - t_start,
    }
