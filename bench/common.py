"""What the parts of the benchmark share: the payload, the summaries, the Firestore emulator and the
composition of an in-process runtime over it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

STEPS = 500
"""Tool-calling steps of the long run; the model answers at step ``STEPS + 1``."""
PAD = "x" * 1000
"""The 1000-character ``pad`` argument every tick call carries (and the tool echoes back): the same
message sizes on both systems."""
FIRST = range(1, 11)
"""Steps 1-10."""


def last_range(steps: int) -> range:
    """Steps ``steps - 9`` to ``steps`` (491-500 for 500 steps)."""
    return range(steps - 9, steps + 1)


def tick_args(n: int) -> dict[str, Any]:
    return {"n": n, "pad": PAD}


def final_text(steps: int) -> str:
    return f"ticked {steps} times"


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def window_means(per_step: list[dict[str, Any]], keys: Sequence[str], steps: int,
                 baseline: range = FIRST) -> dict[str, Any]:
    """Means of ``keys`` over ``baseline`` (steps 1-10 unless told) and over the last 10 tool steps, and
    the last/first ratios."""
    by_step = {row["step"]: row for row in per_step}
    first = [by_step[s] for s in baseline if s in by_step]
    last = [by_step[s] for s in last_range(steps) if s in by_step]
    out: dict[str, Any] = {"first_steps": [baseline.start, baseline.stop - 1], "last_steps": [steps - 9, steps],
                           "first": {}, "last": {}, "ratio": {}, "first_median": {}, "last_median": {},
                           "ratio_median": {}}
    for k in keys:
        f = mean([r[k] for r in first])
        lst = mean([r[k] for r in last])
        out["first"][k] = f
        out["last"][k] = lst
        out["ratio"][k] = (lst / f) if f else None
        fm = statistics.median([r[k] for r in first]) if first else 0.0
        lm = statistics.median([r[k] for r in last]) if last else 0.0
        out["first_median"][k] = fm
        out["last_median"][k] = lm
        out["ratio_median"][k] = (lm / fm) if fm else None
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return (a / b) if a is not None and b else None


def trend(per_step: list[dict[str, Any]], key: str, bucket: int = 50) -> dict[str, Any]:
    """Medians of ``key`` per ``bucket`` steps, and the least-squares slope over all steps (per 100 steps):
    sturdier than two 10-step windows when the machine is shared and timings are noisy."""
    rows = sorted(per_step, key=lambda r: r["step"])
    buckets = [{"steps": [chunk[0]["step"], chunk[-1]["step"]], "median": statistics.median(r[key] for r in chunk)}
               for chunk in (rows[i:i + bucket] for i in range(0, len(rows), bucket)) if chunk]
    slope = None
    if len(rows) > 1:
        xs = [float(r["step"]) for r in rows]
        ys = [float(r[key]) for r in rows]
        slope = statistics.linear_regression(xs, ys).slope * 100
    return {"key": key, "bucket_medians": buckets, "slope_per_100_steps": slope,
            "overall_median": statistics.median(r[key] for r in rows) if rows else None}


def dist_version(name: str) -> str | None:
    """The installed version of the distribution ``name``, or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def percentile(values: Sequence[float], q: int) -> float | None:
    """The ``q``-th percentile (1-99), by linear interpolation between the closest ranks."""
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@contextlib.contextmanager
def firestore_emulator(progress: Callable[[str], None] = print, project: str = "agex-bench") -> Iterator[Any]:
    """A Firestore emulator on 127.0.0.1 for the duration of the block, ``FIRESTORE_EMULATOR_HOST`` pointing at
    it (restored after), and a ``google.cloud.firestore.Client`` of it."""
    from google.cloud import firestore

    from agex.dev.emulators.gcloud import start_firestore

    emulator = start_firestore()
    saved = os.environ.get("FIRESTORE_EMULATOR_HOST")
    try:
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host_port
        progress(f"  Firestore emulator on {emulator.host_port} (up in {emulator.started_s:.1f}s)")
        yield firestore.Client(project=project)
    finally:
        if saved is None:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = saved
        emulator.stop()


def in_process_runtime(agents: Sequence[Any], model: Any, store: Any, *, clock: Any = None,
                       settings: dict[str, Any] | None = None, **ports: Any) -> Any:
    """The composition root (``agex.app.runtime.Runtime``) on the in-memory backends, with ``store`` and any
    other ``ports`` (``breakers``, ``spend``...) given: the real ``StepRunner`` and ``RunService`` in this
    process. ``settings``: fields of ``Settings`` besides a 120 s step lease."""
    from agex.app.backends import Backends
    from agex.app.runtime import Runtime
    from agex.app.settings import Settings
    from agex.core.agent import AgentRegistry

    memory = Backends.in_memory(lambda agent: model, clock=clock)
    return Runtime(Settings.model_construct(**{"step_lease_seconds": 120.0, **(settings or {})}),
                   dataclasses.replace(memory, store=lambda: store, **ports), agents=AgentRegistry(list(agents)))


class Tally:
    """Calls made through :func:`counting` clients: how many, and the milliseconds spent in them, by
    ``Class.method`` of the Firestore object called (``DocumentReference.get``, ``AggregationQuery.get``...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.ms: defaultdict[str, float] = defaultdict(float)

    def add(self, kind: str, ms: float) -> None:
        with self._lock:
            self.calls[kind] += 1
            self.ms[kind] += ms

    def reset(self) -> tuple[Counter[str], defaultdict[str, float]]:
        """Zero the tally; return its calls and milliseconds before."""
        with self._lock:
            before = self.calls, self.ms
            self.calls, self.ms = Counter(), defaultdict(float)
            return before


_SENT = frozenset({"get", "stream", "create", "update", "set", "delete", "commit"})
"""The methods that send a request to Firestore (the others build references and queries)."""


class _Counted:
    def __init__(self, target: Any, tally: Tally) -> None:
        self._target, self._tally = target, tally

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr
        kind = f"{type(self._target).__name__}.{name}"

        def call(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            out = attr(*args, **kwargs)
            if name in _SENT:
                self._tally.add(kind, (time.perf_counter() - t) * 1000)
            return counting(out, self._tally) if type(out).__name__.endswith(("Reference", "Query")) else out

        return call


def counting(client: Any, tally: Tally) -> Any:
    """``client`` (a Firestore client, reference or query), counting into ``tally`` the requests made through
    it and through the references and queries it makes: to count the operations of an adapter that has no
    counters of its own (the breakers, the spend ledger). Counts only; the calls go through unchanged."""
    return _Counted(client, tally)
