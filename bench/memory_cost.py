"""Part 9: what long-term memory costs a run, per step and per run (docs/memory.md, "Learning and recall").

    python -m bench.memory_cost [--runs 20] [--steps 10] [--warmup-runs 2] [--seeds 50] [--no-save]

The loop of part 1 (the real ``StepRunner`` and ``RunService`` in process over ``FirestoreCheckpointStore`` on a
Firestore emulator, the ``ticker`` agent, a zero-latency scripted model) in two variants, each with a store of its
own (its own collection prefix):

- ``plain``: ``ticker`` as declared, without memory;
- ``memory``: the same agent with ``memory=MemoryPolicy()`` (recall on, learning on, the defaults), its memories in
  ``FirestoreVectorStore`` and ``FirestoreGraphStore`` on the same client and prefix as its run state, embedded by
  ``LocalEmbedder``. Before the measured runs the user's scope with the agent holds ``--seeds`` memories (one
  customer's 50 of ``bench/data/memory_recall.jsonl``), so recall searches a scope of realistic size; each run
  adds what it learns.

Each run is ``--steps`` tool steps and the answer step; its input is one of that customer's questions (the same in
both variants), which recall embeds and searches with. The runs alternate between the variants, one delivery of
each in turn (the order rotating by run), so the load of a shared machine falls on both alike. When a run of the
``memory`` variant ends, the stepper enqueues its memory task, which the loop delivers to ``MemoryService.learn``
as the step function's ``/memory`` endpoint would: the same fake model answers the extraction with 2 facts, one
new (``order_N``: stored) and one that contradicts the fact of the same key stored before (``contact_channel``,
email and phone in turn: the new one stored, the old one superseded).

What is counted:

- the checkpoint store's ``stats`` around each delivery (documents read and written, bytes written by Firestore's
  size formula, commits, queries);
- the memory stores' Firestore requests, counted at the Firestore client's RPC layer (its GAPIC
  ``FirestoreClient``: ``run_query``, ``batch_get_documents``, ``begin_transaction``, ``commit``...), attributed to
  memory by a thin wrapper of the ``VectorStore`` and ``GraphStore`` ports that marks its calls (the checkpoint
  store shares the client; its requests are counted apart): documents returned, documents written, bytes written
  (Firestore's size formula over the written fields, the vector as 8 bytes per dimension plus its map), and an
  estimate of the reads billed (each document returned or looked up, one per query that returned none, and one per
  vector query for the up to 100 index entries it reads: every scope here is under 100 records);
- the wrapper's time in the ports, the embedder's time (``embed`` calls) and the injection detector's time (the
  screen of what is learned).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.agex_firestore import script  # noqa: E402
from bench.common import firestore_emulator, in_process_runtime, mean, percentile  # noqa: E402

RUNS = 20
STEPS = 10
WARMUP_RUNS = 2
SEEDS = 50
CUSTOMER = "c1"
"""The customer of ``bench/data/memory_recall.jsonl`` whose memories are seeded and whose questions are the inputs."""
DATA = Path(__file__).resolve().parent / "data" / "memory_recall.jsonl"
RESULTS = Path(__file__).resolve().parent / "results"
READ_USD_PER_100K = 0.06
WRITE_USD_PER_100K = 0.18
"""Firestore (Standard edition) list prices per 100,000 document reads and writes, multi-region, 2026-11 (as in
``bench.model_layer``)."""
VARIANTS = ("plain", "memory")
TENANT, PRINCIPAL = "bench", "bench@example.com"
MEMORY = "memory"
"""The tag of the Firestore requests the memory ports make."""
STORE_KEYS = ("reads", "writes", "bytes_written", "commits", "queries", "retries")
MEM_KEYS = ("mem_rpcs", "mem_queries", "mem_vector_queries", "mem_docs_read", "mem_commits", "mem_writes",
            "mem_bytes_written", "mem_billed_reads", "mem_port_calls", "mem_port_ms", "embed_calls", "embed_texts",
            "embed_ms", "screen_calls", "screen_ms", "other_rpcs")
KEYS = ("wall_ms", *STORE_KEYS, *MEM_KEYS, "model_calls", "model_input_bytes")


# --- counting -------------------------------------------------------------------------------------------------


class Rpcs:
    """Every request of one Firestore client, counted at its GAPIC layer, by the tag of the thread that made it
    (``memory`` inside a call of a :class:`Tagged` port, ``other`` otherwise)."""

    METHODS = ("commit", "batch_get_documents", "run_query", "run_aggregation_query", "begin_transaction",
               "rollback", "list_documents", "batch_write", "get_document", "update_document", "delete_document")

    def __init__(self, client: Any) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self.counts: dict[str, defaultdict[str, float]] = {}
        """By tag: requests by method, ``rpcs``, ``docs_read``, ``writes``, ``bytes_written``, ``vector_queries``,
        ``empty_queries``, and ``ms_<method>`` (milliseconds)."""
        api = client._firestore_api  # builds the GAPIC client (it is cached on the Firestore client)
        for name in self.METHODS:
            setattr(api, name, self._wrap(name, getattr(api, name)))

    @property
    def tag(self) -> str:
        return getattr(self._local, "tag", "other")

    @contextlib.contextmanager
    def tagged(self, tag: str) -> Iterator[None]:
        before = self.tag
        self._local.tag = tag
        try:
            yield
        finally:
            self._local.tag = before

    def reset(self) -> dict[str, defaultdict[str, float]]:
        with self._lock:
            before, self.counts = self.counts, {}
            return before

    def _add(self, tag: str, **n: float) -> None:
        with self._lock:
            counts = self.counts.setdefault(tag, defaultdict(float))
            for k, x in n.items():
                counts[k] += x

    def _wrap(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            tag = self.tag
            request = kwargs.get("request", args[0] if args else None)
            self._add(tag, rpcs=1, **{name: 1})
            if name == "commit":
                writes = list(_field(request, "writes") or ())
                self._add(tag, writes=len(writes), bytes_written=sum(_write_size(w) for w in writes))
            t = time.perf_counter()
            out = call(*args, **kwargs)
            if name == "batch_get_documents":
                return self._docs(tag, name, t, out, lambda r: 1)  # a document found or missing: one read each
            if name == "run_query":
                query = _raw(_field(request, "structured_query"))
                if query is not None and query.HasField("find_nearest"):
                    self._add(tag, vector_queries=1)
                return self._docs(tag, name, t, out, lambda r: 1 if _raw(r).HasField("document") else 0, query=True)
            self._add(tag, **{f"ms_{name}": (time.perf_counter() - t) * 1000})
            return out

        return counted

    def _docs(self, tag: str, name: str, t: float, responses: Any, docs: Callable[[Any], int],
              query: bool = False) -> Iterator[Any]:
        """The responses of a streamed request as they come, its documents counted; its time runs until the
        last (the caller's decoding between them included)."""
        n = 0
        for r in responses:
            n += docs(r)
            yield r
        self._add(tag, docs_read=n, **{f"ms_{name}": (time.perf_counter() - t) * 1000},
                  **({"empty_queries": 1} if query and n == 0 else {}))


def _field(request: Any, name: str) -> Any:
    if request is None:
        return None
    return request.get(name) if isinstance(request, dict) else getattr(request, name, None)


def _raw(message: Any) -> Any:
    """The protobuf message under a proto-plus one."""
    pb = getattr(type(message), "pb", None)
    return pb(message) if pb is not None and not hasattr(message, "HasField") else message


def _write_size(write: Any) -> int:
    """Firestore's size formula (``agex.ports.rules.document_size``) of what one write sends: the document's
    name and the fields written (the masked ones for an update with a mask)."""
    w = _raw(write)
    if w.WhichOneof("operation") != "update":
        return 0
    doc = w.update
    path = doc.name.split("/documents/", 1)[-1]
    name = sum(len(seg.encode()) + 1 for seg in path.split("/")) + 16
    masked = set(w.update_mask.field_paths) if w.HasField("update_mask") else None
    fields = sum(len(k.encode()) + 1 + _value_size(v) for k, v in doc.fields.items()
                 if masked is None or k in masked)
    return name + fields + 32


def _value_size(v: Any) -> int:
    kind = v.WhichOneof("value_type")
    if kind in ("null_value", "boolean_value"):
        return 1
    if kind in ("integer_value", "double_value", "timestamp_value"):
        return 8
    if kind in ("string_value", "reference_value"):
        return len(getattr(v, kind).encode()) + 1
    if kind == "bytes_value":
        return len(v.bytes_value)
    if kind == "array_value":
        return sum(_value_size(x) for x in v.array_value.values)
    if kind == "map_value":
        return sum(len(k.encode()) + 1 + _value_size(x) for k, x in v.map_value.fields.items())
    return 16


class Tagged:
    """A memory port (``VectorStore``, ``GraphStore``) as given, its calls counted and timed, and the Firestore
    requests made inside them tagged ``memory``. Counts only; the calls go through unchanged."""

    def __init__(self, port: Any, rpcs: Rpcs, tally: Counter[str], times: defaultdict[str, float]) -> None:
        self._port, self._rpcs, self._tally, self._times = port, rpcs, tally, times

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._port, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                with self._rpcs.tagged(MEMORY):
                    return attr(*args, **kwargs)
            finally:
                self._tally[f"{type(self._port).__name__}.{name}"] += 1
                self._times["port_ms"] += (time.perf_counter() - t) * 1000

        return call


class TimedEmbedder:
    """The embedder, its calls, texts and time counted."""

    def __init__(self, embedder: Any, times: defaultdict[str, float]) -> None:
        self._embedder, self._times = embedder, times
        self.name, self.dimensions = embedder.name, embedder.dimensions

    def embed(self, texts: Sequence[str], *, kind: Any) -> list[list[float]]:
        t = time.perf_counter()
        try:
            out: list[list[float]] = self._embedder.embed(texts, kind=kind)
            return out
        finally:
            self._times["embed_ms"] += (time.perf_counter() - t) * 1000
            self._times["embed_calls"] += 1
            self._times["embed_texts"] += len(texts)


# --- the variants ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Variant:
    name: str
    runtime: Any
    store: Any
    model: Any
    port_calls: Counter[str]
    times: defaultdict[str, float]
    steps: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    creates: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    learns: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)
    heads: list[tuple[int, Any]] = dataclasses.field(default_factory=list)
    """Each run's number and head as created."""
    seen: list[int] = dataclasses.field(default_factory=list)
    """The size of each model request's messages (and system instructions), in calls' order."""


def _dataset() -> tuple[list[str], list[str]]:
    """The customer's memories and questions."""
    memories: list[str] = []
    questions: list[str] = []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["user"] == CUSTOMER:
            (memories if row["kind"] == "memory" else questions).append(row["text"])
    return memories, questions


def _facts(n: int) -> str:
    """The extraction's answer for the ``n``-th run: one new fact, one that replaces the last run's."""
    channel = "phone" if n % 2 == 0 else "email"
    return json.dumps({"facts": [
        {"key": "contact_channel", "value": channel, "text": f"Prefers to be contacted by {channel}.",
         "kind": "preference", "confidence": 0.9, "about": "user", "sources": [1]},
        {"key": f"order_{4400 + n}", "value": "delivered late", "text": f"Order {4400 + n} was delivered late.",
         "kind": "fact", "confidence": 0.8, "about": "user", "sources": [1]}]})


def _model_fn(steps: int, n: int, seen: list[int]) -> Callable[[Any], Any]:
    from agex.engine.learning import EXTRACT_SYSTEM

    ticks = script(steps, [])

    def answer(request: Any) -> Any:
        seen.append(len(request.system or "") + len(json.dumps([m.model_dump(mode="json") for m in request.messages])))
        return _facts(n) if request.system == EXTRACT_SYSTEM else ticks(request)

    return answer


def _seed(client: Any, prefix: str, embedder: Any, texts: Sequence[str]) -> int:
    """The user's memories with the agent before the measured runs; the first says how they like to be contacted
    (the fact each run's learning replaces)."""
    from agex.adapters.gcp.firestore_memory import FirestoreVectorStore
    from agex.core.memory import MemoryKind, MemoryRecord, MemorySource, Scope

    scope = Scope(tenant=TENANT, agent="ticker", user=PRINCIPAL)
    now = datetime.now(UTC)
    vectors = embedder.embed(list(texts), kind="document")
    records = [MemoryRecord(id=f"seed_{i:03d}", scope=scope, text=text, vector=v,
                            kind=MemoryKind.preference if i == 0 else MemoryKind.fact, confidence=0.9,
                            source=MemorySource(user=PRINCIPAL, trusted=True), created_at=now, valid_from=now,
                            metadata={"key": "contact_channel", "value": "email"} if i == 0 else {"key": f"seed_{i}"},
                            embedding_model=embedder.name, dimensions=len(v))
               for i, (text, v) in enumerate(zip(texts, vectors, strict=True))]
    FirestoreVectorStore(client, dimensions=embedder.dimensions, embedding_model=embedder.name,
                         prefix=prefix).upsert(records)
    return len(records)


def _variants(client: Any, rpcs: Rpcs, seeds: Sequence[str]) -> list[_Variant]:
    from agex.adapters.gcp.firestore_memory import FirestoreGraphStore, FirestoreVectorStore
    from agex.adapters.gcp.firestore_store import FirestoreCheckpointStore
    from agex.adapters.local_embeddings import LocalEmbedder
    from agex.core.agent import Agent
    from agex.core.clock import SystemClock
    from agex.core.memory import MemoryPolicy
    from agex.testing import FunctionModel
    from examples.ticker_agent import agent as ticker

    clock, local = SystemClock(), LocalEmbedder()
    out = []
    for name in VARIANTS:
        prefix = f"k{uuid.uuid4().hex[:8]}_"
        store = FirestoreCheckpointStore(client, prefix=prefix)
        model = FunctionModel(script(0, []))  # each run sets its own script
        port_calls: Counter[str] = Counter()
        times: defaultdict[str, float] = defaultdict(float)
        ports: dict[str, Any] = {}
        agent = ticker
        if name == MEMORY:
            agent = Agent.model_validate({**dict(ticker), "memory": MemoryPolicy()})
            embedder = TimedEmbedder(local, times)
            vectors = Tagged(FirestoreVectorStore(client, dimensions=local.dimensions, embedding_model=local.name,
                                                  prefix=prefix), rpcs, port_calls, times)
            graph = Tagged(FirestoreGraphStore(client, prefix=prefix), rpcs, port_calls, times)
            ports = {"embedder": lambda e=embedder: e, "vectors": lambda v=vectors: v, "graph": lambda g=graph: g}
            _seed(client, prefix, local, seeds)
        runtime = in_process_runtime([agent], model, store, clock=clock, **ports)
        if runtime.memory is not None:
            runtime.memory.screen = _timed_screen(runtime.memory.screen, times)
        out.append(_Variant(name, runtime, store, model, port_calls, times))
    return out


def _timed_screen(screen: Callable[[str], float], times: defaultdict[str, float]) -> Callable[[str], float]:
    def timed(text: str) -> float:
        t = time.perf_counter()
        try:
            return screen(text)
        finally:
            times["screen_ms"] += (time.perf_counter() - t) * 1000
            times["screen_calls"] += 1

    return timed


# --- the loop ----------------------------------------------------------------------------------------------------


def _begin(v: _Variant, rpcs: Rpcs) -> float:
    v.seen.clear()
    v.store.reset_stats()
    rpcs.reset()
    v.port_calls.clear()
    v.times.clear()
    return time.perf_counter()


def _measure(v: _Variant, rpcs: Rpcs, t: float) -> dict[str, Any]:
    wall = (time.perf_counter() - t) * 1000
    st = v.store.reset_stats()
    counts = rpcs.reset()
    mem, other = counts.get(MEMORY, defaultdict(float)), counts.get("other", defaultdict(float))
    billed = mem["docs_read"] + mem["empty_queries"] + mem["vector_queries"]
    return {"wall_ms": wall, **{k: st[k] for k in STORE_KEYS},
            "mem_rpcs": mem["rpcs"], "mem_queries": mem["run_query"], "mem_vector_queries": mem["vector_queries"],
            "mem_docs_read": mem["docs_read"], "mem_commits": mem["commit"], "mem_writes": mem["writes"],
            "mem_bytes_written": mem["bytes_written"], "mem_billed_reads": billed,
            "mem_port_calls": sum(v.port_calls.values()), "mem_port_ms": v.times["port_ms"],
            "embed_calls": v.times["embed_calls"], "embed_texts": v.times["embed_texts"],
            "embed_ms": v.times["embed_ms"], "screen_calls": v.times["screen_calls"],
            "screen_ms": v.times["screen_ms"], "other_rpcs": other["rpcs"],
            "model_calls": len(v.seen), "model_input_bytes": sum(v.seen),
            "mem_rpc_methods": {k: n for k, n in mem.items() if k in Rpcs.METHODS},
            "mem_rpc_ms": {k[3:]: x for k, x in mem.items() if k.startswith("ms_")},
            "mem_port_methods": dict(v.port_calls)}


def _handler(v: _Variant, rpcs: Rpcs, run: int) -> Callable[[Any, int], bool]:
    from agex.engine.decisions import Delivery
    from agex.ports.task_queue import MemoryTask

    def handle(task: Any, attempt: int) -> bool:
        learning = isinstance(task, MemoryTask)
        t = _begin(v, rpcs)
        try:
            if learning:  # what the step function's /memory endpoint does with the task
                outcome = v.runtime.memory.learn(task.tenant, task.run_id)
            else:
                outcome = v.runtime.runner.run(Delivery.of(task, attempt, "bench")).outcome.value
        except Exception as e:  # a retried delivery would be a different measurement: note it
            v.failures.append(f"run {run} {type(task).__name__} step {getattr(task, 'step', '-')} attempt "
                              f"{attempt}: {type(e).__name__}: {e}")
            return attempt >= 3
        row = {"run": run, "outcome": outcome, **_measure(v, rpcs, t)}
        if learning:
            v.learns.append(row)
        else:
            v.steps.append({"step": task.step, **row})
        return True

    return handle


def _runs(variants: list[_Variant], rpcs: Rpcs, runs: int, steps: int, questions: Sequence[str], first: int,
          label: str, progress: Callable[[str], None]) -> float:
    """``runs`` runs of ``steps`` tool steps (and the answer, and the memory task) in each variant, one delivery
    of each in turn; returns the seconds the loop took."""
    from agex.engine.runs import CreateRunRequest
    from agex.ports.auth import Caller

    caller = Caller(TENANT, PRINCIPAL)
    t0 = time.perf_counter()
    for r in range(runs):
        n = first + r
        question = questions[n % len(questions)]
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        handlers = {}
        for v in order:
            v.model.fn = _model_fn(steps, n, v.seen)
            t = _begin(v, rpcs)
            head = v.runtime.service.start(caller, "ticker", CreateRunRequest(input=question)).run
            v.creates.append({"run": n, **_measure(v, rpcs, t)})
            v.heads.append((n, head))
            handlers[v.name] = _handler(v, rpcs, n)
        turn = 0
        while busy := [v for v in order if v.runtime.queue.pending()]:
            k = turn % len(busy)
            for v in busy[k:] + busy[:k]:
                v.runtime.queue.deliver_due(datetime.now(UTC), handlers[v.name])
            turn += 1
        if (r + 1) % 5 == 0:
            progress(f"  {label}: {r + 1} runs of each, {time.perf_counter() - t0:.1f}s")
    return time.perf_counter() - t0


# --- summaries -----------------------------------------------------------------------------------------------------


def _means(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    return {k: mean([float(r[k]) for r in rows]) for k in KEYS}


def _wall(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    w = [r["wall_ms"] for r in rows]
    return {"p50": percentile(w, 50), "p95": percentile(w, 95), "mean": mean(w), "n": len(w)}


def _sum(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    return {k: float(sum(r[k] for r in rows)) for k in KEYS}


def _summary(v: _Variant, measured: set[int]) -> dict[str, Any]:
    steps = [r for r in v.steps if r["run"] in measured]
    first = [r for r in steps if r["step"] == 1]
    rest = [r for r in steps if r["step"] != 1]
    creates = [r for r in v.creates if r["run"] in measured]
    learns = [r for r in v.learns if r["run"] in measured]
    per_run: list[dict[str, Any]] = []
    for n in sorted(measured):
        mine = [r for r in steps if r["run"] == n]
        task = [r for r in learns if r["run"] == n]
        run_total = _sum([*[r for r in creates if r["run"] == n], *mine])
        with_task = _sum([*[r for r in creates if r["run"] == n], *mine, *task])
        per_run.append({"run": n, "deliveries": len(mine), "steps_and_create": run_total, "with_memory_task": with_task,
                        "memory_task": task[0] if task else None})
    deliveries = mean([float(r["deliveries"]) for r in per_run])
    run_means = {k: mean([r["steps_and_create"][k] for r in per_run]) for k in KEYS}
    task_means = {k: mean([r["with_memory_task"][k] for r in per_run]) for k in KEYS}
    finals = [f for n, h in v.heads if n in measured and (f := v.store.get_run(h.tenant, h.run_id)) is not None]
    statuses = Counter(f.status.value for f in finals)
    return {
        "runs": len(per_run), "deliveries_per_run": deliveries, "statuses": dict(statuses), "failures": v.failures,
        "model_tokens_per_run": {"input": mean([float(f.usage.input_tokens) for f in finals]),
                                 "output": mean([float(f.usage.output_tokens) for f in finals])},
        "recalled_per_run": mean([float(sum(1 for line in (f.recalled or "").splitlines() if line.startswith("- ")))
                                  for f in finals]),
        "per_step": {"all": {**_means(steps), "wall_ms": _wall(steps)},
                     "step_1": {**_means(first), "wall_ms": _wall(first)},
                     "other_steps": {**_means(rest), "wall_ms": _wall(rest)}},
        "per_run": {"steps_and_create": run_means, "with_memory_task": task_means,
                    "create_run": {**_means(creates), "wall_ms": _wall(creates)}},
        "memory_task": ({**_means(learns), "wall_ms": _wall(learns),
                         "outcomes": dict(Counter(r["outcome"] for r in learns)),
                         "rpc_methods": dict(sum((Counter(r["mem_rpc_methods"]) for r in learns), Counter())),
                         "port_methods": dict(sum((Counter(r["mem_port_methods"]) for r in learns), Counter()))}
                        if learns else None),
        "ms_per_vector_query": {"recall": _per_query(first), "learning": _per_query(learns)},
        "recall_step_methods": {
            "rpc": dict(sum((Counter(r["mem_rpc_methods"]) for r in first), Counter())),
            "port": dict(sum((Counter(r["mem_port_methods"]) for r in first), Counter()))},
        "per_run_rows": per_run,
        "step_rows": [{k: x for k, x in r.items() if k not in ("mem_rpc_methods", "mem_port_methods", "mem_rpc_ms")}
                      for r in steps],
    }


def _per_query(rows: Sequence[dict[str, Any]]) -> float | None:
    """Milliseconds per memory query (every one here is a vector query), the stream read to its end."""
    n = sum(r["mem_queries"] for r in rows)
    return sum(r["mem_rpc_ms"].get("run_query", 0.0) for r in rows) / n if n else None


def _scope_after(client: Any, prefix: str) -> dict[str, Any]:
    """The user's scope with the agent at the end: how many records, and in which status."""
    from agex.adapters.gcp.firestore_memory import FirestoreVectorStore
    from agex.adapters.local_embeddings import LocalEmbedder
    from agex.core.memory import Scope

    vs = FirestoreVectorStore(client, dimensions=LocalEmbedder.dimensions, prefix=prefix)
    records, cursor = [], None
    while True:
        page = vs.list_records(Scope(tenant=TENANT, agent="ticker", user=PRINCIPAL), page_size=200, cursor=cursor)
        records += page.records
        if (cursor := page.next_cursor) is None:
            break
    return {"records": len(records), "by_status": dict(Counter(r.status.value for r in records)),
            "current": sum(1 for r in records if r.valid_to is None)}


def _usd_per_1000_steps(reads: float, writes: float) -> float:
    return 1000 * (reads * READ_USD_PER_100K + writes * WRITE_USD_PER_100K) / 100_000


def run(runs: int = RUNS, steps: int = STEPS, *, warmup_runs: int = WARMUP_RUNS, seeds: int = SEEDS,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    t_start = time.perf_counter()
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg_at_start": list(os.getloadavg())}
    memories, questions = _dataset()
    if seeds > len(memories):
        raise ValueError(f"--seeds {seeds}: the data set has {len(memories)} memories of customer {CUSTOMER}")
    with firestore_emulator(progress) as client:
        rpcs = Rpcs(client)
        t = time.perf_counter()
        variants = _variants(client, rpcs, memories[:seeds])
        progress(f"  {seeds} memories seeded, the embedding model loaded ({time.perf_counter() - t:.1f}s)")
        progress(f"  warm-up: {warmup_runs} runs of each variant (gRPC channel, the emulator's JIT, the guards)")
        _runs(variants, rpcs, warmup_runs, steps, questions, 0, "warm-up", progress)
        warm_failures = {v.name: v.failures for v in variants if v.failures}
        for v in variants:
            v.failures = []
        progress(f"  measured: {runs} runs x {steps} tool steps of each variant, interleaved")
        seconds = _runs(variants, rpcs, runs, steps, questions, warmup_runs, "measured", progress)
        measured = set(range(warmup_runs, warmup_runs + runs))
        res = {v.name: _summary(v, measured) for v in variants}
        mem_v = next(v for v in variants if v.name == MEMORY)
        scope = _scope_after(client, mem_v.store.prefix)
    p, m = res["plain"], res[MEMORY]

    def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
        out = {k: a[k] - b[k] for k in KEYS if k != "wall_ms" and k in a}
        if isinstance(a.get("wall_ms"), dict):
            out.update({f"wall_ms_{q}": (a["wall_ms"][q] or 0.0) - (b["wall_ms"][q] or 0.0)
                        for q in ("p50", "p95", "mean")})
        return out

    d = {"per_step": diff(m["per_step"]["all"], p["per_step"]["all"]),
         "step_1": diff(m["per_step"]["step_1"], p["per_step"]["step_1"]),
         "other_steps": diff(m["per_step"]["other_steps"], p["per_step"]["other_steps"]),
         "per_run_steps": diff(m["per_run"]["steps_and_create"], p["per_run"]["steps_and_create"]),
         "per_run_with_task": diff(m["per_run"]["with_memory_task"], p["per_run"]["with_memory_task"])}
    per_run = d["per_run_with_task"]
    n_steps = m["deliveries_per_run"] or 1.0
    extra_reads = (per_run["reads"] + per_run["mem_billed_reads"]) / n_steps
    extra_writes = (per_run["writes"] + per_run["mem_writes"]) / n_steps
    return {
        "store": "FirestoreCheckpointStore, FirestoreVectorStore, FirestoreGraphStore (one client, one prefix per "
                 "variant) on the Firestore emulator (gRPC, 127.0.0.1); zero-latency FunctionModel; LocalEmbedder",
        "agent": "ticker (context_window_steps=10); memory: MemoryPolicy() defaults (recall_k 5, recall_tokens 400, "
                 "min_score 0.1, learn, conflicts newest)",
        "runs": runs, "steps": steps, "warmup_runs": warmup_runs, "seeds": seeds, "customer": CUSTOMER,
        "learned_per_run": "2 facts: order_N (new: stored), contact_channel (alternating: supersedes the last)",
        "definitions": "per step: means over every step delivery of the measured runs (tool steps and the answer); "
                       "step_1: the first delivery of each run (recall happens there); reads/writes/bytes_written/"
                       "commits/queries: the checkpoint store's stats; mem_*: Firestore requests made inside the "
                       "memory ports' calls, counted at the client's GAPIC layer: mem_docs_read documents returned "
                       "or looked up, mem_writes documents in commits, mem_bytes_written Firestore's size formula of "
                       "the fields written, mem_billed_reads = mem_docs_read + 1 per query that returned none + 1 "
                       "per vector query (index entries, each scope < 100 records); other_rpcs: every other request "
                       "(the checkpoint store's); per run: create + every step delivery (+ the memory task)",
        "interleaved_loop_seconds": seconds,
        "warmup_failures": warm_failures,
        "results": res,
        "differences": d,
        "scope_after": scope,
        "amortised_per_step": {"extra_billed_reads": extra_reads, "extra_document_writes": extra_writes,
                               "extra_bytes_written": (per_run["bytes_written"]
                                                       + per_run["mem_bytes_written"]) / n_steps,
                               "usd_per_1000_steps_extra": _usd_per_1000_steps(extra_reads, extra_writes)},
        "prices": {"read_usd_per_100k": READ_USD_PER_100K, "write_usd_per_100k": WRITE_USD_PER_100K,
                   "as_of": "2026-11", "note": "Firestore Standard edition, multi-region list prices"},
        "machine": {**machine, "load_avg_at_end": list(os.getloadavg())},
        "seconds_total": time.perf_counter() - t_start,
    }


def report(res: dict[str, Any]) -> str:
    if "results" not in res:
        return f"\nmemory_cost: FAILED: {res.get('error')}"
    r, d = res["results"], res["differences"]
    lines = [f"\nMemory: {res['runs']} runs x {res['steps']} tool steps (+ the answer) of each variant, interleaved; "
             f"{res['seeds']} memories seeded for the user; recall put {r[MEMORY]['recalled_per_run']:.1f} in each "
             "run's context",
             "  per step delivery (means; wall ms p50/p95). ckpt: checkpoint store; mem: the memory stores' requests",
             f"{'':22}{'p50':>7}{'p95':>7}{'ckpt rd':>9}{'wr':>6}{'commit':>7}{'query':>6}{'bytes':>8}"
             f"{'mem rpc':>9}{'rd':>6}{'wr':>6}{'bytes':>7}"]

    def row(label: str, s: dict[str, Any]) -> str:
        w = s["wall_ms"]
        return (f"{label:22}{_f(w['p50']):>7}{_f(w['p95']):>7}{s['reads']:>9.2f}{s['writes']:>6.2f}"
                f"{s['commits']:>7.2f}{s['queries']:>6.2f}{s['bytes_written']:>8,.0f}{s['mem_rpcs']:>9.2f}"
                f"{s['mem_billed_reads']:>6.2f}{s['mem_writes']:>6.2f}{s['mem_bytes_written']:>7,.0f}")

    for name in VARIANTS:
        for part, label in (("all", "all"), ("step_1", "step 1 (recall)"), ("other_steps", "steps 2+")):
            lines.append(row(f"{name} {label}", r[name]["per_step"][part]))
    x = d["per_step"]
    s1 = r[MEMORY]["per_step"]["step_1"]
    lines.append(f"  memory - plain, per step: p50 {x['wall_ms_p50']:+.1f} ms, p95 {x['wall_ms_p95']:+.1f} ms; "
                 f"{x['reads']:+.2f} ckpt reads, {x['writes']:+.2f} ckpt writes, {x['bytes_written']:+,.0f} ckpt bytes")
    pa, ma = r["plain"]["per_step"]["all"], r[MEMORY]["per_step"]["all"]
    pt, mt_ = r["plain"]["model_tokens_per_run"], r[MEMORY]["model_tokens_per_run"]
    lines.append(f"  the model's input per step: plain {pa['model_input_bytes']:,.0f} bytes, memory "
                 f"{ma['model_input_bytes']:,.0f} ({x['model_input_bytes']:+,.0f}: the recalled note stays in the "
                 f"context); input tokens per run (estimated from sizes): plain {pt['input']:,.0f}, memory "
                 f"{mt_['input']:,.0f} (+{mt_['input'] - pt['input']:,.0f}), the extraction not included")
    y = d["step_1"]
    lines.append(f"  recall (step 1): p50 {y['wall_ms_p50']:+.1f} ms; {s1['embed_ms']:.1f} ms embedding the input, "
                 f"{s1['mem_port_ms']:.1f} ms in the vector store ({s1['mem_vector_queries']:.0f} vector queries, "
                 f"{s1['mem_docs_read']:.1f} documents returned; {_f(r[MEMORY]['ms_per_vector_query']['recall'])} "
                 f"ms per vector query on the emulator); {y['writes']:+.2f} ckpt writes, "
                 f"{y['bytes_written']:+,.0f} ckpt bytes (the recalled memories on the head and in an event)")
    t = r[MEMORY]["memory_task"]
    if t:
        w = t["wall_ms"]
        lines.append(f"  memory task per run: p50 {_f(w['p50'])} ms, p95 {_f(w['p95'])} ms (mean {_f(w['mean'])}): "
                     f"embedding {t['embed_ms']:.1f} ms ({t['embed_texts']:.0f} texts in {t['embed_calls']:.0f} call), "
                     f"screening {t['screen_ms']:.1f} ms ({t['screen_calls']:.0f} texts), memory stores "
                     f"{t['mem_port_ms']:.1f} ms; outcomes {t['outcomes']}")
        methods = ", ".join(f"{k} {n / res['runs']:.1f}" for k, n in sorted(t["rpc_methods"].items()))
        lines.append(f"    ckpt {t['reads']:.1f} reads, {t['writes']:.1f} writes, {t['commits']:.1f} commits, "
                     f"{t['queries']:.1f} queries, {t['bytes_written']:,.0f} bytes; memory {t['mem_rpcs']:.1f} "
                     f"requests ({methods}), {t['mem_billed_reads']:.1f} billed reads, {t['mem_writes']:.1f} writes, "
                     f"{t['mem_bytes_written']:,.0f} bytes; the extraction request {t['model_input_bytes']:,.0f} "
                     "bytes")
    ps, ms, mt = (r["plain"]["per_run"]["steps_and_create"], r[MEMORY]["per_run"]["steps_and_create"],
                  r[MEMORY]["per_run"]["with_memory_task"])
    lines.append(f"  per run ({r[MEMORY]['deliveries_per_run']:.0f} deliveries + create): plain "
                 f"{ps['wall_ms']:.0f} ms, {ps['reads']:.0f} reads, {ps['writes']:.0f} writes, {ps['bytes_written']:,.0f} bytes; memory "
                 f"{ms['wall_ms']:.0f} ms + task {mt['wall_ms'] - ms['wall_ms']:.0f} ms, "
                 f"{mt['reads'] + mt['mem_billed_reads']:.0f} reads, {mt['writes'] + mt['mem_writes']:.0f} writes, "
                 f"{mt['bytes_written'] + mt['mem_bytes_written']:,.0f} bytes (memory stores and task included)")
    a = res["amortised_per_step"]
    lines.append(f"  amortised per step, recall and learning included: {a['extra_billed_reads']:+.2f} billed reads, "
                 f"{a['extra_document_writes']:+.2f} document writes, {a['extra_bytes_written']:+,.0f} bytes; "
                 f"${a['usd_per_1000_steps_extra']:.4f} more per 1,000 steps")
    sc = res["scope_after"]
    lines.append(f"  the user's scope at the end: {sc['records']} records ({sc['by_status']})")
    failed = {k: s["failures"] or s["statuses"] for k, s in r.items()
              if s["failures"] or set(s["statuses"]) != {"succeeded"}}
    if t and set(t["outcomes"]) != {"learned"}:
        failed["memory_task"] = t["outcomes"]
    if failed or res["warmup_failures"]:
        lines.append(f"  FAILURES: {failed} warm-up: {res['warmup_failures']}")
    return "\n".join(lines)


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def ok(part: dict[str, Any]) -> bool:
    """Every run of both variants succeeded without a failed delivery, and every memory task learned."""
    if "results" not in part:
        return False
    r = part["results"]
    task = r[MEMORY]["memory_task"]
    return (all(not s["failures"] and set(s["statuses"]) == {"succeeded"} for s in r.values())
            and task is not None and set(task["outcomes"]) == {"learned"})


def save(part: dict[str, Any]) -> Path:
    """Write the part to ``results/memory_cost.json`` (``bench.run`` puts it in its own results)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / "memory_cost.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(part, indent=1, default=str))
    tmp.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=RUNS, help=f"measured runs of each variant (default {RUNS})")
    ap.add_argument("--steps", type=int, default=STEPS, help=f"tool steps of each run (default {STEPS})")
    ap.add_argument("--warmup-runs", type=int, default=WARMUP_RUNS)
    ap.add_argument("--seeds", type=int, default=SEEDS, help=f"memories seeded for the user (default {SEEDS})")
    ap.add_argument("--no-save", action="store_true", help="print only; write no JSON")
    args = ap.parse_args(argv)
    started = datetime.now(UTC)
    part = {"started_at": started.isoformat(timespec="seconds"),
            **run(args.runs, args.steps, warmup_runs=args.warmup_runs, seeds=args.seeds,
                  progress=lambda m: print(m, flush=True))}
    print(report(part))
    print(f"\ntotal {part['seconds_total']:.0f}s")
    if not args.no_save:
        print(f"wrote {save(part)}")
    return 0 if ok(part) else 1


if __name__ == "__main__":
    sys.exit(main())
